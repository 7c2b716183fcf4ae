"""pyproof.lazy: every package's names imported on first use, one way (PEP 562)."""

from __future__ import annotations

import sys

import pytest

import pyproof
import pyproof.datasets
import pyproof.supervision
import pyproof.transport
from pyproof.lazy import lazy_attributes


def test_a_name_is_imported_on_first_read_and_kept_in_the_namespace() -> None:
    namespace: dict = {"here": 1}
    getattr_, dir_ = lazy_attributes("pkg", namespace, {"dumps": "json"}.get, ["dumps"])
    import json

    assert getattr_("dumps") is json.dumps
    assert namespace["dumps"] is json.dumps  # the next look-up finds it without getattr_
    assert dir_() == ["dumps", "here"]
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        getattr_("loads")


@pytest.mark.parametrize("package", [pyproof, pyproof.datasets, pyproof.supervision,
                                     pyproof.transport], ids=lambda p: p.__name__)
def test_every_listed_name_of_the_packages_resolves(package) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package)
    with pytest.raises(AttributeError, match=f"module '{package.__name__}' has no attribute"):
        package.no_such_name  # noqa: B018
    assert sys.modules[package.__name__] is package


def test_loaded_takes_an_object_without_a_dict_in_sys_modules_for_loaded(monkeypatch) -> None:
    # some packages put an object of their own in sys.modules; one with __slots__ has no
    # __dict__ (and no spec): it is there, whole
    from pyproof.lazy import loaded

    class Slotted:
        __slots__ = ("x",)

    stand_in = Slotted()
    monkeypatch.setitem(sys.modules, "pyproof_test_slotted", stand_in)
    assert loaded("pyproof_test_slotted") is stand_in
    assert loaded("pyproof_test_not_there") is None
