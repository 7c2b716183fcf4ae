"""`dataclass`: the standard decorator, made cheaper to apply; the classes behave the same.

Python 3.11's `dataclasses.dataclass` writes each method it adds as source
text and compiles it (`exec`): about half a millisecond per class, and the
daemon creates some 160 (messages, events, specs) before it forks every
actor, a quarter of its start (see pyproof/bench/startup.py). This decorator
lets the standard one write `__init__` and the frozen `__setattr__` /
`__delattr__` (as before), and adds `__eq__`, `__hash__` and `__repr__` as
closures over the class's field names instead: no compiling. They do what the
generated ones do: `__eq__` compares the tuples of the compared fields of two
instances of exactly the same class (else NotImplemented); `__hash__` hashes
the tuple of the hashed fields (only where the standard one would add it:
eq and frozen, or unsafe_hash; eq without frozen makes the class unhashable);
`__repr__` is `QualName(field=value!r, ...)` with `...` for a recursive
reference. `__dataclass_params__` says what was asked for.

A frozen class's `__setattr__` and `__delattr__` (two of the three methods the
standard decorator compiles for it, 40% of its cost) are closures too, made by
`_frozen_closures` in place of the standard `dataclasses._frozen_get_del_attr`
while our decorator runs (Python 3.11 and 3.12, whose private function has
that signature; otherwise the standard one): the same test, the same errors.

`__init__`, the one method left compiled (half of what is left of the cost), is
compiled on first use instead (`_LazyInit`, in place of the standard
`dataclasses._init_fn` while our decorator runs, on the same versions), and so
is the docstring the standard decorator writes for a class without one (its
signature: `_LazyDoc`, made on first read; reading it compiles `__init__`): most
classes are never instantiated in a given process (each actor uses a few of the
messages, the daemon none of the supervision events), and the chain of imports
every lite session waits for (daemon, Thespian's admin) defines some 200. The
first access to `__init__` (an instance made, `inspect.signature`, `super()`)
compiles the standard one and puts it in the class, so from then on the class
is exactly what the standard decorator makes. The one check the standard
function makes at class creation (no field without a default after one with)
is made at once, with its message.

Anything else (order=True, a method of those names in the class body, eq or
repr turned off) goes to the standard decorator unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import operator
import reprlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, dataclass_transform

__all__ = ["dataclass"]

T = TypeVar("T")

_OURS = ("__eq__", "__hash__", "__repr__")


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def dataclass(cls: type[T] | None = None, /, **options: Any) -> Any:
    """`dataclasses.dataclass(cls, **options)`, cheaper (see the module docstring)."""

    def wrap(cls: type[T]) -> type[T]:
        return _process(cls, options)

    return wrap if cls is None else wrap(cls)


def _frozen_closures(cls: type, fields: list[dataclasses.Field], globals: dict) -> tuple:
    """What `dataclasses._frozen_get_del_attr` returns (Python 3.11, 3.12), without
    compiling: `__setattr__` and `__delattr__` that refuse a field (or anything, on an
    instance of exactly `cls`) and otherwise defer to the next class in the MRO."""
    names = tuple(f.name for f in fields)
    frozen_error = dataclasses.FrozenInstanceError

    def __setattr__(self, name, value):  # noqa: N807
        if type(self) is cls or name in names:
            raise frozen_error(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self, name):  # noqa: N807
        if type(self) is cls or name in names:
            raise frozen_error(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__


_STANDARD_FROZEN = getattr(dataclasses, "_frozen_get_del_attr", None)
_CLOSURES_FIT = (sys.version_info[:2] in ((3, 11), (3, 12)) and _STANDARD_FROZEN is not None
                 and getattr(dataclasses, "_init_fn", None) is not None)


_STANDARD_INIT = getattr(dataclasses, "_init_fn", None)
_STANDARD_DECORATOR = dataclasses.dataclass
"""The standard decorator as imported: ours may stand in for it at `dataclasses.dataclass`
while a library that uses it loads (`standing_in`)."""


class _LazyInit:
    """A dataclass's `__init__` until first used: then the standard one, compiled from the
    arguments `dataclasses._init_fn` was given, replaces it in the class that holds it."""

    __slots__ = ("_args", "_real")

    def __init__(self, args: tuple) -> None:
        self._args = args
        self._real: Callable | None = None

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        real = self._real
        if real is None:
            real = self._real = _STANDARD_INIT(*self._args)  # type: ignore[misc]
            holder = type(instance) if owner is None else owner
            for klass in holder.__mro__:  # the class defined with us (inherited, maybe)
                if klass.__dict__.get("__init__") is self:
                    real.__qualname__ = f"{klass.__qualname__}.__init__"
                    klass.__init__ = real  # type: ignore[misc]
                    break
        return real if instance is None else real.__get__(instance, owner)


def _lazy_init_fn(fields: list, std_fields: list, *args: Any) -> _LazyInit:
    """What `dataclasses._init_fn` returns, compiled on first use (see the module docstring);
    its one check on the fields is made now."""
    seen_default = False
    for f in std_fields:
        if f.init:
            if not (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
    return _LazyInit((fields, std_fields, *args))


class _LazyDoc:
    """The docstring the standard decorator gives a class without one (its name and
    signature), made on first read: reading the signature compiles `__init__`."""

    __slots__ = ()

    def __get__(self, instance: Any, owner: type | None = None) -> str:
        cls = type(instance) if owner is None else owner
        try:
            text = str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):  # as the standard decorator does
            text = ""
        doc = cls.__name__ + text
        cls.__doc__ = doc
        return doc


_NO_DOC_YET = "(a dataclass: its signature comes on first read)"


def _standard(cls: type[T], options: dict[str, Any]) -> type[T]:
    """The standard decorator, with frozen classes' attribute guards made as closures and
    `__init__` (and a missing docstring, made from its signature) made on first use."""
    if not _CLOSURES_FIT:
        return _STANDARD_DECORATOR(cls, **options)
    frozen = options.get("frozen", False)
    undocumented = not getattr(cls, "__doc__", None)
    if undocumented:
        cls.__doc__ = _NO_DOC_YET  # the standard decorator leaves a docstring alone
    dataclasses._init_fn = _lazy_init_fn  # type: ignore[attr-defined]
    if frozen:
        dataclasses._frozen_get_del_attr = _frozen_closures  # type: ignore[attr-defined]
    try:
        new = _STANDARD_DECORATOR(cls, **options)
    finally:
        dataclasses._init_fn = _STANDARD_INIT  # type: ignore[attr-defined]
        if frozen:
            dataclasses._frozen_get_del_attr = _STANDARD_FROZEN  # type: ignore[attr-defined]
    if undocumented:
        new.__doc__ = _LazyDoc()  # type: ignore[assignment]
        if new is not cls:  # slots: the class given is left as the standard one leaves it
            cls.__doc__ = _LazyDoc()  # type: ignore[assignment]
    return new


def _process(cls: type[T], options: dict[str, Any]) -> type[T]:
    if (not options.get("eq", True) or not options.get("repr", True)
            or options.get("order", False)
            or any(name in cls.__dict__ for name in _OURS)):
        return _standard(cls, options)
    new = _standard(cls, {**options, "eq": False, "repr": False})
    fields = dataclasses.fields(new)
    compared = _getter(tuple(f.name for f in fields if f.compare))
    hashed = _getter(tuple(f.name for f in fields
                           if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self, other):  # noqa: N807
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self):  # noqa: N807
        return hash(hashed(self))

    @reprlib.recursive_repr("...")
    def __repr__(self):  # noqa: N807
        return (self.__class__.__qualname__ + "("
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in shown) + ")")

    for method in (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{new.__qualname__}.{method.__name__}"
    new.__eq__ = __eq__
    new.__repr__ = __repr__
    if options.get("frozen", False) or options.get("unsafe_hash", False):
        new.__hash__ = __hash__
    else:
        new.__hash__ = None  # eq without frozen: unhashable, as the standard decorator does
    params = new.__dataclass_params__
    params.eq = True
    params.repr = True
    return new


@contextlib.contextmanager
def standing_in() -> Iterator[None]:
    """Within this block, `dataclasses.dataclass` is ours: a library imported meanwhile (one
    that reads it as it loads, `from dataclasses import dataclass`) makes its classes with
    ours, as cheaply. The threads of this process that make a dataclass meanwhile get ours
    too (the same classes, made the same way). Not reentrant across threads: one at a time."""
    dataclasses.dataclass = dataclass  # type: ignore[assignment]
    try:
        yield
    finally:
        dataclasses.dataclass = _STANDARD_DECORATOR  # type: ignore[assignment]


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    """A function returning the tuple of those attributes (a tuple also for one or none)."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()
