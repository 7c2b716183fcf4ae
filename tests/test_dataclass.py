"""pyproof.dataclass behaves as dataclasses.dataclass: the same class body, decorated by each
with the same options, gives instances that compare, hash, print, pickle, copy and refuse
assignment alike."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import field
from typing import Any, ClassVar

import pytest

from pyproof import dataclass as fast


def _classes(options: dict[str, Any]) -> tuple[type, type]:
    """The class `Point` (module-level for pickle) made by each decorator with `options`."""
    made = []
    for name, decorate in (("Std", dataclasses.dataclass), ("Fast", fast.dataclass)):
        namespace = {
            "__module__": __name__, "__qualname__": f"{name}Point",
            "__annotations__": {"x": "int", "y": "Any", "hidden": "int", "loose": "list",
                                "kind": "ClassVar[str]"},
            "y": None, "hidden": field(default=0, repr=False, compare=False),
            "loose": field(default_factory=list, hash=False), "kind": "point",
        }
        cls = decorate(type(f"{name}Point", (), namespace), **options)
        globals()[f"{name}Point"] = cls
        made.append(cls)
    return made[0], made[1]


OPTIONS = [
    {}, {"frozen": True}, {"frozen": True, "slots": True, "kw_only": True},
    {"slots": True}, {"unsafe_hash": True}, {"kw_only": True}, {"eq": False},
    {"repr": False}, {"order": True}, {"frozen": True, "eq": False},
]


def _outcome(call) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:  # the type and message are part of the behaviour
        return (type(exc).__name__, str(exc).replace("Std", "").replace("Fast", ""))


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_the_same_class_body_behaves_the_same_with_either_decorator(options) -> None:
    std, ours = _classes(options)
    assert type(std.__dict__.get("__hash__")) is type(ours.__dict__.get("__hash__"))
    for attr in ("init", "repr", "eq", "order", "unsafe_hash", "frozen"):
        assert getattr(std.__dataclass_params__, attr) == getattr(ours.__dataclass_params__,
                                                                  attr), attr
    assert [f.name for f in dataclasses.fields(std)] == [f.name for f in dataclasses.fields(ours)]
    assert std.__match_args__ == ours.__match_args__ if hasattr(std, "__match_args__") else True
    assert hasattr(std, "__slots__") == hasattr(ours, "__slots__")
    cases = [dict(x=1, y="a"), dict(x=1, y="a", hidden=5), dict(x=1, y="b"),
             dict(x=1, y=float("nan")), dict(x=2, y=(1, [2])), dict(x=1, y="a", loose=[1])]
    pairs = []
    for kwargs in cases:
        pairs.append((std(**kwargs), ours(**kwargs)))
    for kwargs, (s1, o1) in zip(cases, pairs, strict=True):
        if options.get("repr", True):
            assert repr(s1).replace("Std", "") == repr(o1).replace("Fast", "")
        assert _outcome(lambda s1=s1: hash(s1))[0] == _outcome(lambda o1=o1: hash(o1))[0]
        if _outcome(lambda s1=s1: hash(s1))[0] == "ok" and std.__hash__ is not object.__hash__:
            assert hash(s1) == hash(o1)
        for (s2, o2) in pairs:
            assert (s1 == s2) == (o1 == o2)
            assert (s1 != s2) == (o1 != o2)
        assert (s1 == 1) == (o1 == 1)
        back = pickle.loads(pickle.dumps(o1))
        assert type(back) is ours and repr(dataclasses.astuple(back)) == repr(
            dataclasses.astuple(o1))
        assert repr(dataclasses.asdict(copy.deepcopy(o1))) == repr(dataclasses.asdict(o1))
        assert dataclasses.replace(o1, x=7).x == 7
        # assignment and deletion, on instances of their own (these may change them)
        for change in (lambda obj: setattr(obj, "x", 9), lambda obj: delattr(obj, "y"),
                       lambda obj: setattr(obj, "other", 1)):
            assert _outcome(lambda change=change, kw=kwargs: change(std(**kw))) == \
                _outcome(lambda change=change, kw=kwargs: change(ours(**kw)))


def test_a_recursive_repr_shows_dots_and_a_subclass_compares_apart() -> None:
    std, ours = _classes({})
    s, o = std(x=1), ours(x=1)
    s.y, o.y = s, o
    assert repr(s).replace("Std", "") == repr(o).replace("Fast", "") == \
        "Point(x=1, y=..., loose=[])"

    @fast.dataclass(frozen=True)
    class Base:
        a: int

    @fast.dataclass(frozen=True)
    class Child(Base):
        b: int = 0

    assert Base(a=1) != Child(a=1) and Child(a=1, b=2) == Child(a=1, b=2)
    assert repr(Child(a=1)).endswith("Child(a=1, b=0)") and hash(Child(a=1)) == hash((1, 0))
    assert Child.__eq__.__qualname__.endswith("Child.__eq__")


def test_a_class_with_its_own_eq_repr_or_hash_keeps_it() -> None:
    @fast.dataclass(frozen=True)
    class Own:
        a: int
        ClassVar  # noqa: B018 (keeps the import used)

        def __repr__(self) -> str:
            return "own"

    assert repr(Own(a=1)) == "own" and Own(a=1) == Own(a=1) and hash(Own(a=1)) == hash((1,))


@pytest.fixture
def compiled(monkeypatch) -> list[str]:
    """The names of the methods dataclasses compiles (exec), in order, from now on."""
    names: list[str] = []
    create = dataclasses._create_fn

    def recording(name, *args, **kwargs):
        names.append(name)
        return create(name, *args, **kwargs)

    monkeypatch.setattr(dataclasses, "_create_fn", recording)
    return names


def test_a_frozen_class_compiles_only_its_init_and_that_on_first_use(compiled) -> None:
    # each method the standard decorator writes is compiled (exec): a quarter of the
    # daemon's imports went into ~150 classes (pyproof/dataclass.py); ours compiles __init__

    @fast.dataclass(frozen=True, slots=True, kw_only=True)
    class Message:
        corr: str
        size: int = 0

    assert compiled == []  # __init__ too is compiled on first use (see below)
    message = Message(corr="c")
    assert compiled == ["__init__"]
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"^cannot assign to field 'size'$"):
        message.size = 1
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"^cannot delete field 'corr'$"):
        del message.corr
    assert Message.__setattr__.__qualname__.endswith("Message.__setattr__")
    assert dataclasses._frozen_get_del_attr is not fast._frozen_closures  # put back


def test_init_is_compiled_on_first_use_then_is_the_standard_one(compiled) -> None:
    # most classes are never instantiated in a given process: their __init__ is not
    # compiled there (the imports a lite session waits for define some 200)

    @fast.dataclass(frozen=True, slots=True, kw_only=True)
    class Lazy:
        """Documented: the standard decorator would read the signature for a docstring."""
        corr: str
        items: list = field(default_factory=list)

    class Plain(Lazy):  # no dataclass: inherits the lazy __init__
        __slots__ = ()

    assert compiled == []
    one = Plain(corr="x")  # the first use, through a subclass, compiles it once
    assert compiled == ["__init__"]
    assert type(Lazy.__dict__["__init__"]).__name__ == "function"
    assert Lazy.__init__.__qualname__.endswith("Lazy.__init__")
    assert one.items == [] and one.corr == "x"
    assert Lazy(corr="y", items=[1]).items == [1]
    assert compiled == ["__init__"]
    with pytest.raises(TypeError, match=r"missing 1 required keyword-only argument: 'corr'"):
        Lazy()


def test_a_lazy_init_has_the_standard_signature_and_serves_super() -> None:
    import inspect

    def body(decorate):
        @decorate
        class Point:
            """A point."""
            x: int
            y: int = 2

        return Point

    std, ours = body(dataclasses.dataclass), body(fast.dataclass)
    assert inspect.signature(ours) == inspect.signature(std)
    assert str(inspect.signature(ours)) == "(x: 'int', y: 'int' = 2) -> None"

    class Scaled(body(fast.dataclass)):
        def __init__(self, x: int) -> None:
            super().__init__(x * 10)  # the parent's __init__, compiled on this first use

    assert (Scaled(1).x, Scaled(1).y) == (10, 2)


def test_a_field_without_default_after_one_with_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"^non-default argument 'y' follows default argument$"):
        @fast.dataclass
        class Bad:
            x: int = 0
            y: int


@pytest.mark.parametrize("options", [{}, {"frozen": True, "slots": True, "kw_only": True}],
                         ids=str)
def test_an_undocumented_class_gets_the_standard_docstring_on_first_read(
        options, compiled) -> None:

    def body(decorate):
        @decorate(**options)
        class Undocumented:
            x: int
            y: str = "y"

        return Undocumented

    ours = body(fast.dataclass)
    assert compiled == []  # the docstring needs the signature: made when read, not now
    std = body(dataclasses.dataclass)
    assert ours.__doc__ == std.__doc__
    assert ours.__doc__.startswith("Undocumented(")
    assert ours(x=1, y="z").__doc__ == ours.__doc__


def test_a_library_loaded_while_ours_stands_in_makes_its_classes_with_ours() -> None:
    # the actors' preload imports structlog so (actors/warmup.py): its 8 classes were
    # the dearest part of its import
    standard = dataclasses.dataclass
    with fast.standing_in():
        from dataclasses import dataclass as libraries_decorator  # what a library reads

        @libraries_decorator(frozen=True)
        class Row:
            x: int
            y: str = "y"

    assert dataclasses.dataclass is standard
    assert libraries_decorator is fast.dataclass
    assert isinstance(Row.__dict__["__init__"], fast._LazyInit)
    assert Row(1) == Row(x=1) and hash(Row(1)) == hash(Row(1)) and Row(1) != Row(2)
    assert repr(Row(1)) == f"{Row.__qualname__}(x=1, y='y')"
    with pytest.raises(RuntimeError, match=r"^inside$"), fast.standing_in():
        raise RuntimeError("inside")
    assert dataclasses.dataclass is standard
