"""The worker's side of packages: make a query's packages importable, run their setup hooks.

Called on the worker's query thread before the selector is imported, so a
worker (also one started after the packages were enabled) has them before
its first packet. A package version that replaced another, or was disabled,
takes its modules with it: they are dropped from `sys.modules`, and the next
import runs the new files. Each version's setup hook (`pyproof_setup.py`,
`setup(ctx)`) runs once per worker process, bounded in time.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import threading
import traceback
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.packages.errors import PackageError
from pyproof.query.spec import QuerySpec
from pyproof.selector import forget_loaded

SETUP_TIMEOUT = float(os.environ.get("PYPROOF_SETUP_TIMEOUT") or 60.0)

_LOCK = threading.Lock()
_ACTIVE: dict[str, tuple[str, str]] = {}  # name -> (version, path on sys.path)
_SET_UP: set[tuple[str, str]] = set()     # (name, version) whose hook ran in this process


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupContext:
    """What a setup hook gets: which package and version, where it is, which worker."""

    package: str
    version: str
    path: str
    worker: str
    session: str


def activate(packages: list[dict[str, Any]], *, worker: str = "", session: str = "") -> None:
    """Make exactly `packages` (dependencies first) importable; run new setup hooks."""
    with _LOCK:
        wanted = {p["name"]: (p["version"], p["path"]) for p in packages}
        changed = False
        for name, (version, path) in list(_ACTIVE.items()):
            if wanted.get(name) != (version, path):
                _deactivate(name, path)
                changed = True
        for package in packages:
            if package.get("error"):  # this host could not get it (packages/remote.py)
                raise PackageError(package["error"])
            name, version, path = package["name"], package["version"], package["path"]
            if _ACTIVE.get(name) == (version, path):
                continue
            if not os.path.isdir(path):
                raise PackageError(f"package {name!r} version {version[:12]} is not in this "
                                   f"host's cache ({path}); upload it again")
            sys.path.insert(0, path)
            _ACTIVE[name] = (version, path)
            changed = True
        if changed:
            importlib.invalidate_caches()
            forget_loaded()  # a selector from a package is imported afresh
        for package in packages:
            key = (package["name"], package["version"])
            if package.get("setup") and key not in _SET_UP:
                _run_setup(package, worker, session)
                _SET_UP.add(key)


def _deactivate(name: str, path: str) -> None:
    while path in sys.path:
        sys.path.remove(path)
    prefix = path.rstrip(os.sep) + os.sep
    for module_name, module in list(sys.modules.items()):
        try:  # modules can be odd (lazy loaders, shims): only real paths count
            file = module.__dict__.get("__file__") or ""
            paths = [p for p in module.__dict__.get("__path__") or [] if isinstance(p, str)]
        except Exception:
            continue
        if isinstance(file, str) and file.startswith(prefix) or any(
                p.startswith(prefix) for p in paths):
            del sys.modules[module_name]
    del _ACTIVE[name]


def _run_setup(package: dict[str, Any], worker: str, session: str) -> None:
    name, version, file = package["name"], package["version"], package["setup"]
    where = f"package {name!r} setup hook {file}"
    module_name = f"pyproof_setup_{name}_{version[:12]}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise PackageError(f"{where}, line {exc.lineno}: syntax error ({exc.msg})") from None
    except Exception as exc:
        raise PackageError(f"{where} failed to import{_line(exc, file)}: {exc!r}") from exc
    setup = getattr(module, "setup", None)
    if setup is None:
        return  # only `requires`
    ctx = SetupContext(package=name, version=version, path=package["path"], worker=worker,
                       session=session)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            setup(ctx)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"setup-{name}", daemon=True)
    thread.start()
    thread.join(SETUP_TIMEOUT)
    if thread.is_alive():
        raise PackageError(f"{where}: setup(ctx) did not return within {SETUP_TIMEOUT:g} s "
                           "($PYPROOF_SETUP_TIMEOUT); make it faster or do the work lazily")
    if outcome and outcome[0] is not None:
        exc = outcome[0]
        raise PackageError(f"{where}: setup(ctx) raised{_line(exc, file)}: {exc!r}") from exc


def _line(exc: BaseException, file: str) -> str:
    """", line N" of the deepest frame of `exc` inside `file`, if any."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == file:
            line = frame.lineno
    return f" at line {line}" if line else ""


def active() -> dict[str, str]:
    """name -> version of the packages importable in this process (for tests, status)."""
    with _LOCK:
        return {name: version for name, (version, _) in _ACTIVE.items()}


def adopt_selector_attributes(spec: QuerySpec, cls: type) -> QuerySpec:
    """The spec with the selector's `branches` when the client could not import it (a
    selector from a package): those are read. Its `concatenate` decides how the master
    merges, so a selector that lists one the client did not send is refused, not merged
    wrongly."""
    if spec.branches is None and getattr(cls, "branches", None) is not None:
        spec = dataclasses.replace(spec, branches=tuple(cls.branches))
    missing = [n for n in getattr(cls, "concatenate", ()) if n not in spec.concatenate]
    if missing:
        raise PackageError(
            f"selector {spec.selector!r} concatenates {', '.join(missing)}, but the "
            "client could not import it to tell the master how to merge them; make its "
            "package importable where the client runs (its parent directory on sys.path)")
    return spec
