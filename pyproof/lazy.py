"""Package attributes imported on first use (PEP 562), the same way in every package.

A package's `__init__` names what it offers; the module behind a name is imported
only when the name is first read. Importing one light submodule (the daemon and
the actors boot on a few; a lite client imports `process_tree` to reap its
cluster) then does not pay for the rest (numpy, the codec, SQLite), which keeps a
lite session's start-up short (see pyproof/bench/startup.py).
"""

from __future__ import annotations

import importlib
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
