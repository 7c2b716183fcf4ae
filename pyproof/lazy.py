"""Package attributes imported on first use (PEP 562), the same way in every package.

A package's `__init__` names what it offers; the module behind a name is imported
only when the name is first read. Importing one light submodule (the daemon and
the actors boot on a few; a lite client imports `process_tree` to reap its
cluster) then does not pay for the rest (numpy, the codec, SQLite), which keeps a
lite session's start-up short (see pyproof/bench/startup.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], where: Callable[[str], str | None],
    listed: Iterable[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `(__getattr__, __dir__)` pair of `package`.

    `where(name)`: the module that defines `name` (None: the package has no such
    name). A value read once is kept in `namespace` (the package's globals), so
    later look-ups no longer call `__getattr__`. `__dir__` lists `listed` too.
    """
    listed = frozenset(listed)

    def __getattr__(name: str) -> Any:
        module = where(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *listed})

    return __getattr__, __dir__


def loaded(name: str) -> Any:
    """Module `name` if this process has imported it (None if not, or not yet whole).

    For the checks that need a module only if a value of its types may exist
    (is this output a numpy array, an awkward array?): no value exists before
    its module is loaded. A module that another thread is still importing (a
    process's warm-up, actors/warmup.py) counts as not loaded: it is in
    `sys.modules` half made ("partially initialized module 'numpy' has no
    attribute 'ndarray'"), and no value of its types exists yet either.
    """
    module = sys.modules.get(name)
    # (its own __dict__: a module's __getattr__ is not asked; an object that some
    # package put in sys.modules may have none)
    spec = getattr(module, "__dict__", {}).get("__spec__")
    if module is None or getattr(spec, "_initializing", False):
        return None
    return module
