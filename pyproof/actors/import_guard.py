"""While the warm-up imports run, an import on another thread that would load a module
the warm-up may load waits for it first; any other import goes on at once.

Why: two threads loading the same package tree at once are not safe (actors/warmup.py:
Python's per-module locks break a cross-thread import cycle, such as awkward's, by handing
one thread a partially initialized module). Waiting for the whole warm-up before anything
that might import (a selector's load, a look-up, a merge) made every query wait, a
`cycles=` one too, though it needs none of the data modules. The guard makes the wait
as narrow as the hazard: only an import that would load (or join the loading of) a
module of the warm-up's reach waits, and only until the warm-up ends.

How: `install` replaces `builtins.__import__` (which every `import` statement, `from x
import y`, `__import__()`, pickle's look-up of a class's module and C code's
`PyImport_Import` / `PyImport_ImportModule` call) and `importlib.import_module` (which the
selector loader and our lazy names call) with a check, made before the real import:

- Everything the import names is loaded and initialized (the module, each parent
  package, each name of a `from` list found in its package or as a loaded submodule): no
  module is loaded, nothing waits. That is nearly every import of a running process.
- Something would be loaded (missing from `sys.modules`, or there but still initializing
  on another thread): if its top-level package is within the warm-up's reach, the call
  waits for the warm-up (at most until its deadline, one for the whole warm-up:
  actors/warmup.py `wait_warmup`), then imports. Within reach is anything
  found in the interpreter's library or site-packages directories (or built in), in
  a directory holding one of the warm-up's own packages (PYTHONPATH's: an LCG view, where
  their dependencies are too), and the warm-up's own packages wherever they are:
  whatever the warm-up may import (the standard library too: some of its packages
  import each other in cycles, and which of them the data packages import is not known
  beforehand). Beyond it are pyproof itself (no data package imports it) and the user's
  own modules (a selector's, sent or on its `sys_path`, a package's): they load at
  once, and an import of a data module inside them waits there, at its own `import`
  line.
- The warm-up thread itself never waits; once it ends, `uninstall` puts the originals
  back, and imports cost nothing more than before.

Every thread but the warm-up's is guarded alike: a query's, the master's look-up and
merge threads, nng's callbacks, the actor's own. What reads `sys.modules` without
importing (is this output a numpy array?) takes a module still initializing for absent
(`pyproof.lazy.loaded`); a fork waits for the warm-up (actors/warmup.py).

Why before importlib, not in a `sys.meta_path` finder: a finder's `find_spec` runs inside
`_find_and_load`, which has already taken the module's lock. A finder that waited there
for the warm-up would hold that lock while waiting; if the warm-up then needs the same
module (the very case that waits), it blocks on the lock, and importlib's deadlock check
cannot see the cycle (the finder waits on an event, not on a module lock): both would
stand still until the bound ran out, and then import side by side after all. Waiting in
`__import__` happens before any lock of the module is taken. A wait nested in another
import (a user's module that imports awkward) does hold the outer module's lock, but
that module is beyond the warm-up's reach (or it would have waited itself), so the
warm-up never asks for it.

Not while the global import lock is held: importlib runs each `sys.meta_path` finder under
it, and a finder may import (setuptools' DistutilsMetaFinder, put there by
distutils-precedence.pth, imports setuptools when something imports distutils). A wait
there would stop the warm-up at its next import (which takes that lock) until the bound,
so an import nested in a finder goes on at once (`_holds_import_lock`), and the guard
itself judges a name by importlib's path finder alone (`_find_within_reach`), never by
running the meta-path finders.

Relative imports are resolved against the importer's package first; an import the
check cannot make sense of waits (never wrong, at worst slower). Not covered: C code
calling `PyImport_ImportModuleLevelObject` directly (Cython's generated imports) after
its module has loaded, and `importlib.import_module` bound by name before `install`:
none of these runs on a query's path while a warm-up is on. A thread that the warm-up's
imports start (none of the data packages does) is guarded like any other.

An actor thread that waits here is not taken for hung by its supervisor's watchdog: the
warm-up thread uses CPU meanwhile, so the process counts as busy (supervision/watchdog.py);
the master's watched data threads are excused while a warm-up runs, until its deadline
(thread_beats.py).
"""

from __future__ import annotations

import _imp
import builtins
import importlib
import importlib.machinery
import importlib.util
import os
import site
import sys
import threading
from collections.abc import Callable
from typing import Any

# the functions the guard stands in for (kept after `uninstall`: see there)
_original_import: Callable[..., Any] = builtins.__import__
_original_import_module: Callable[..., Any] = importlib.import_module
_exempt: int | None = None  # the id of the thread whose imports never wait
_import_chained = False  # ours is in the chain that builtins.__import__ calls
_import_module_chained = False  # ours is in the chain that importlib.import_module calls


def _no_wait() -> None:
    pass


_wait: Callable[[], None] = _no_wait  # what a guarded import that may load calls first
_lock = threading.Lock()
_reach: dict[str, bool] = {}  # top-level name -> within the warm-up's reach
_library_dirs: tuple[str, ...] | None = None
_warmup_dirs: list[str] = []  # the directories holding the warm-up's modules (`_libraries`)
_MISSING = object()
_local = threading.local()  # .classifying: this thread is in `_find_within_reach`


def install(wait: Callable[[], None], exempt: int | None = None,
            within: tuple[str, ...] = ()) -> None:
    """Guard this process's imports: an import that may load a module within the
    warm-up's reach calls `wait()` first, on every thread but `exempt` (a thread id: the
    warm-up's, `exempt_this_thread`). `within`: top-level names within reach wherever
    they are found (the warm-up's own modules: installed for development, say, outside
    site-packages), and so is everything in the directories holding them (on PYTHONPATH,
    say, with their dependencies: `_libraries`).

    Our functions go in only where they are not in the chain already: one that someone
    wrapped over ours (a debugger's import hook) survives `uninstall`, and calls ours;
    taking that wrapper for the original would make ours call it, and it ours, forever.
    A second install then only sets the state."""
    global _original_import, _original_import_module, _wait, _exempt, _library_dirs
    global _import_chained, _import_module_chained
    with _lock:
        _wait, _exempt = wait, exempt
        dirs = [d for name in within for d in _holding_dirs(name.partition(".")[0])]
        if set(dirs) - set(_warmup_dirs):
            _warmup_dirs.extend(d for d in dict.fromkeys(dirs) if d not in _warmup_dirs)
            _library_dirs = None
            for name in [name for name, known in _reach.items() if not known]:
                del _reach[name]  # (judged without these)
        _reach.update(dict.fromkeys(within, True))
        if builtins.__import__ is _guarded_import:
            _import_chained = True
        elif not _import_chained:
            _original_import = builtins.__import__
            builtins.__import__ = _guarded_import
            _import_chained = True
        if importlib.import_module is _guarded_import_module:
            _import_module_chained = True
        elif not _import_module_chained:
            _original_import_module = importlib.import_module
            importlib.import_module = _guarded_import_module  # type: ignore[assignment]
            _import_module_chained = True


def exempt_this_thread() -> None:
    """The calling thread's imports never wait (the warm-up's own: it is what others wait
    for). Call it before the thread imports anything."""
    global _exempt
    _exempt = threading.get_ident()


def uninstall() -> None:
    """Put the original import functions back. (One that someone wrapped over ours stays:
    ours then only passes the calls on, as it does for whoever bound it meanwhile, and is
    known to be in the chain still, for the next `install`.)"""
    global _wait, _import_chained, _import_module_chained
    with _lock:
        _wait = _no_wait
        if builtins.__import__ is _guarded_import:
            builtins.__import__ = _original_import
            _import_chained = False
        if importlib.import_module is _guarded_import_module:
            importlib.import_module = _original_import_module  # type: ignore[assignment]
            _import_module_chained = False


def installed() -> bool:
    """The guard is on (its `wait` is called), `builtins.__import__` being ours or one
    wrapped over ours."""
    return _wait is not _no_wait and _import_chained


def _guarded_import(name: str, globals: Any = None, locals: Any = None,
                    fromlist: Any = (), level: int = 0) -> Any:
    wait = _wait
    if wait is not _no_wait and threading.get_ident() != _exempt:
        try:
            loads = _would_load(_absolute(name, globals, level), fromlist)
        except Exception:  # noqa: BLE001 (not understood: wait, to be safe)
            loads = True
        if loads and not _holds_import_lock():
            wait()
    return _original_import(name, globals, locals, fromlist, level)


def _guarded_import_module(name: str, package: str | None = None) -> Any:
    wait = _wait
    if wait is not _no_wait and threading.get_ident() != _exempt:
        try:
            loads = _would_load(importlib.util.resolve_name(name, package)
                                if name.startswith(".") else name, ())
        except Exception:  # noqa: BLE001 (not understood: wait, to be safe)
            loads = True
        if loads and not _holds_import_lock():
            wait()
    return _original_import_module(name, package)


_FIND_SPEC_CODE = getattr(getattr(importlib, "_bootstrap", None), "_find_spec", None)
_FIND_SPEC_CODE = getattr(_FIND_SPEC_CODE, "__code__", None)


def _holds_import_lock() -> bool:
    """This thread holds the interpreter's global import lock: it is inside a
    `sys.meta_path` finder's `find_spec` (importlib's `_find_spec` holds the lock around
    each call; setuptools' DistutilsMetaFinder imports setuptools there). Waiting then
    would stop the warm-up at its next import (`_get_module_lock` takes that lock) until
    the bound: such a nested import goes on at once instead. (`_imp.lock_held` says only
    that some thread holds it; this thread's own frames say whether it is this one.)"""
    if _FIND_SPEC_CODE is None or not _imp.lock_held():
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _FIND_SPEC_CODE:
            return True
        frame = frame.f_back
    return False


def ready(name: str) -> bool:
    """`name` is in `sys.modules` and initialized (not being imported on some thread);
    a None there (an import that fails at once) loads nothing either."""
    module = sys.modules.get(name, _MISSING)
    if module is _MISSING:
        return False
    if module is None:
        return True
    spec = vars(module).get("__spec__") if hasattr(module, "__dict__") else None
    return not getattr(spec, "_initializing", False)


def _absolute(name: str, globals: Any, level: int) -> str:
    if level == 0:
        return name
    package = (globals or {}).get("__package__")
    if package is None:
        spec = (globals or {}).get("__spec__")
        if spec is not None:
            package = spec.parent
        else:
            package = globals["__name__"]
            if "__path__" not in globals:
                package = package.rpartition(".")[0]
    return importlib.util.resolve_name("." * level + name, package)


def _would_load(name: str, fromlist: Any) -> bool:
    """Whether importing `name` (with `fromlist`) may load a module within the warm-up's
    reach (see the module docstring)."""
    parts = name.split(".")
    if all(ready(".".join(parts[:i + 1])) for i in range(len(parts))):
        if not fromlist:
            return False
        module = sys.modules[name]
        if module is None or "__path__" not in vars(module):
            return False  # not a package: a from list only reads attributes
        names = list(fromlist)
        if "*" in names:
            names.remove("*")
            names.extend(vars(module).get("__all__", ()))
        missing = [x for x in names
                   if x not in vars(module) and not ready(f"{name}.{x}")]
        # a package's own __getattr__ (PEP 562) may supply it: its imports are guarded
        if all(hasattr(module, x) for x in missing):
            return False
    return _within_reach(parts[0])


def _within_reach(top: str) -> bool:
    known = _reach.get(top)
    if known is None:
        if getattr(_local, "classifying", False):
            return False  # (a path hook's import while we look: no wait, no recursion)
        known = _find_within_reach(top)
        if known or top in sys.modules or top == "pyproof":
            _reach[top] = known  # (one not found yet may be found later: asked again)
    return known


def _find_within_reach(top: str) -> bool:
    """Where `top` would be found, without `sys.meta_path`'s finders: importlib runs them
    under the global import lock, and one may import (setuptools' DistutilsMetaFinder
    imports setuptools): a wait there would stop the warm-up (see `_holds_import_lock`).
    A name only a custom finder finds is taken for the user's (beyond reach)."""
    if top == "pyproof":
        return False  # no data package imports pyproof
    if top in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(top):
        return True  # the interpreter's own
    spec = _spec(top)
    if spec is None:
        return False  # not found: the import fails, loading nothing
    places = _places(spec)
    if not places:
        return True  # nowhere to judge it by: within reach, to be safe
    dirs = _libraries()
    return any(os.path.realpath(place).startswith(dirs) for place in places)


def _spec(top: str) -> Any:
    """Top-level `top`'s spec: its module's, if in `sys.modules` (one being imported,
    say), else importlib's path finder's (nothing imported, no meta-path finder run)."""
    spec = getattr(sys.modules.get(top), "__dict__", {}).get("__spec__")
    if spec is None:
        _local.classifying = True  # a path hook that imports (first look at a directory)
        try:
            spec = importlib.machinery.PathFinder.find_spec(top)  # (top-level: no parent)
        finally:
            _local.classifying = False
    return spec


def _places(spec: Any) -> list[str]:
    places = [spec.origin] if spec.has_location and spec.origin else []
    return places + list(spec.submodule_search_locations or ())


def _holding_dirs(name: str) -> list[str]:
    """The directories holding top-level `name` (the parent of a package's directory, the
    directory of a module's file), found without importing it."""
    spec = _spec(name)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [os.path.dirname(os.path.realpath(p)) for p in spec.submodule_search_locations]
    return [os.path.dirname(os.path.realpath(p)) for p in _places(spec)]


def _libraries() -> tuple[str, ...]:
    """The interpreter's library and site-packages directories (with a trailing
    separator), where whatever the data packages import comes from; and the directories
    holding the warm-up's own packages (`install`'s `within`): PYTHONPATH's (an LCG view
    on CVMFS, `pip install --target`), where their dependencies are installed beside
    them (hist's boost_histogram, awkward's awkward_cpp, uproot's fsspec)."""
    global _library_dirs
    if _library_dirs is None:
        dirs = [os.path.dirname(os.__file__)]  # the standard library (lib-dynload below)
        dirs += site.getsitepackages() if hasattr(site, "getsitepackages") else []
        if site.ENABLE_USER_SITE:
            dirs.append(site.getusersitepackages())
        dirs += _warmup_dirs
        _library_dirs = tuple(os.path.join(os.path.realpath(d), "") for d in dirs)
    return _library_dirs
