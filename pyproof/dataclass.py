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

Anything else (order=True, a method of those names in the class body, eq or
repr turned off) goes to the standard decorator unchanged.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
import sys
from collections.abc import Callable
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
_CLOSURES_FIT = sys.version_info[:2] in ((3, 11), (3, 12)) and _STANDARD_FROZEN is not None


def _standard(cls: type[T], options: dict[str, Any]) -> type[T]:
    """The standard decorator, with frozen classes' attribute guards made as closures."""
    if not (_CLOSURES_FIT and options.get("frozen", False)):
        return dataclasses.dataclass(cls, **options)
    dataclasses._frozen_get_del_attr = _frozen_closures  # type: ignore[attr-defined]
    try:
        return dataclasses.dataclass(cls, **options)
    finally:
        dataclasses._frozen_get_del_attr = _STANDARD_FROZEN  # type: ignore[attr-defined]


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


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    """A function returning the tuple of those attributes (a tuple also for one or none)."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()
