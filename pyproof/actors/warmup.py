"""Import the data path's heavy modules in the background, once a process is up.

A session's master and workers start without uproot, awkward and hist (about
a third of a second of CPU each, more than the rest of a start-up), so that a
session is ready at once. Each then imports them on a daemon thread, started
once its supervisor heard it started (`m.WarmUp`: a thread started as the actor
sent `Started` held the GIL while it imported, and the send waited for it; a
query that came first loads them itself, no warm-up beside it): by the time the
user's first query arrives they are usually loaded.

Two threads importing the same package tree at once are NOT safe: Python's
per-module locks break a cross-thread cycle (awkward's submodules import each
other) by handing one thread a partially initialized module ("partially
initialized module 'awkward' has no attribute 'Array'"). So while the warm-up
runs, an import guard (actors/import_guard.py) makes any other thread's import
that would load a module of the data packages' reach (the standard library and
site-packages) wait for the warm-up to end first; an import of a module already
loaded, of pyproof's own or of the user's (a selector's module) goes on at once.
A query that needs none of them (a `cycles=` one) thus waits for nothing; one
that does waits at its first such import (a worker's data query before its
first packet: `load_data_modules`). The guard is removed when the warm-up ends.
(A waiter that took over the rest of the imports at its own priority was
measured slower, and left out.)

proofd, a long-lived daemon, has its Thespian admin load them before the
first actor (`preload_data_modules`, with --preload-data): every session's
master and workers are forked with them and start no warm-up.

Only leaf actors (master, workers) warm up: they never fork, so no fork can
catch the thread holding an import lock. A supervisor never starts the thread.
The actors' own modules (light: no numpy, uproot, awkward, hist) are imported
once, by Thespian's admin process before it creates the first actor
(`preload_actor_modules`, run there by the daemon: see actors/daemon.py): every
actor is forked from it, so none imports them again. numpy comes first
in the warm-up: the codec and merging import it on first use, and a query's
first array then finds it loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
import types
from typing import Any

from pyproof.actors import fork_gate, import_guard

DATA_MODULES = ("numpy", "uproot", "awkward", "hist")  # numpy: the codec and merging need it
WARMUP_NICE = 10  # added to the thread's niceness


ACTOR_MODULES = ("pyproof.actors.root", "pyproof.actors.sessions", "pyproof.actors.gateway",
                 "pyproof.actors.master", "pyproof.actors.worker")


START_CLASSES = (
    # what every supervisor makes as it starts its children
    "pyproof.supervision.spec:SupFlags", "pyproof.supervision.spec:ChildSpec",
    "pyproof.supervision.spec:SupervisorSpec", "pyproof.supervision.spec:Shutdown",
    "pyproof.supervision.core:_Child", "pyproof.supervision.watchdog:Watchdog",
    "pyproof.supervision.watchdog:_Watch", "pyproof.supervision.events:Init",
    "pyproof.supervision.events:StartChild", "pyproof.supervision.events:ChildStarted",
    "pyproof.supervision.events:Log", "pyproof.supervision.events:AddChild",
    "pyproof.supervision.events:Reply", "pyproof.supervision.adoption:Reconciliation",
    "pyproof.supervision.adoption:Proc", "pyproof.supervision.adoption:Entry",
    # the messages of a session's start: root, sessions, session, master, workers
    "pyproof.actors.messages:ActorStart", "pyproof.actors.messages:GatewayStart",
    "pyproof.actors.messages:SessionsStart", "pyproof.actors.messages:Booted",
    "pyproof.actors.messages:Started", "pyproof.actors.messages:Resend",
    "pyproof.actors.messages:SessionReady", "pyproof.actors.messages:MasterStart",
    "pyproof.actors.messages:WorkerStart", "pyproof.actors.messages:WorkerJoined",
    "pyproof.actors.messages:WarmUp",
)
"""Dataclasses whose `__init__` the preload compiles (pyproof.dataclass compiles it on
first use): each process of a session's start made these, one after the other (root,
sessions, session, master), each compiling them again (a quarter of a millisecond each,
more in a process just forked); compiled once in the admin, every actor has them."""


LOADED_ON_USE = ("asyncio",)
"""Imported by the actors' modules (pynng, structlog) for their async APIs, which no actor
uses: a quarter of the preload (asyncio brings ssl and concurrent.futures along). While
the preload runs they are stand-ins (`_OnUse`) that import the real module on first use."""


class _OnUse(types.ModuleType):
    """Stands for a module while the actors' modules load; whoever bound it then gets the
    real module's attributes from it, the real module being imported on first access.
    Out of `sys.modules` once the preload is done: a later `import` gets the real one."""

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:  # (still in the preload)
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, name)


def preload_actor_modules() -> None:
    """Import every actor's module (light: no numpy, uproot, awkward, hist): Thespian's
    admin does, before it creates the first actor, so that every actor forked from it
    has them (`LOADED_ON_USE` only on first use), with `START_CLASSES` compiled."""
    stand_ins = {}
    for name in LOADED_ON_USE:
        if name not in sys.modules:
            stand_in = stand_ins[name] = _OnUse(name)
            stand_in.__spec__ = None  # (what `import` reads of a module already loaded)
            sys.modules[name] = stand_in
    try:
        _import_structlog_without_rich()
        for name in ACTOR_MODULES:
            importlib.import_module(name)
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    for path in START_CLASSES:
        module, _, name = path.partition(":")
        with contextlib.suppress(Exception):  # (a name gone stale: compiled on use, as before)
            getattr(importlib.import_module(module), name).__init__  # noqa: B018


def preload_data_modules(modules: tuple[str, ...] = DATA_MODULES) -> None:
    """Import the data modules now, on this thread (none with PYPROOF_WARMUP=0).

    proofd's admin runs this before it creates the first actor (actors/daemon.py,
    `--preload-data`): synchronously, so no thread is importing when it forks,
    and every session's master and workers, forked from it, have them and start
    no warm-up (`start_warmup` skips modules loaded). Not lite: a lite session
    is ready at once and loads them after. An import that fails is left to the
    actor that needs it (it fails there, with its traceback).
    """
    if os.environ.get("PYPROOF_WARMUP", "1") == "0":
        return
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (the real import, later, reports it)
            return


def _import_structlog_without_rich() -> None:
    """Import structlog as if rich were not installed (a sixth of a lite start-up), its
    dataclasses made by pyproof.dataclass (the same classes: 8 of them, 3 ms less).

    structlog's console renderer imports rich (and better_exceptions) when it can;
    the actors log JSON and never use it. The modules stay importable afterwards:
    only structlog's own optional use of them is off, in this process tree.
    """
    from pyproof.dataclass import standing_in

    optional = [name for name in ("rich", "better_exceptions") if name not in sys.modules]
    for name in optional:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        with standing_in():
            import structlog  # noqa: F401
    finally:
        for name in optional:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


WARMUP_WAIT = 120.0
"""Seconds from a warm-up's start after which nothing waits for it any more: one that takes
longer is stuck; go on and let an import fail (`wait_warmup`)."""
DELAY_ENV = "PYPROOF_TEST_WARMUP_DELAY"
"""Tests only (with PYPROOF_TEST_HOOKS=1): seconds the warm-up thread sleeps before each
module it imports, a warm-up slowed at will, to show what waits for it and what not."""

_warmup: threading.Thread | None = None
_done = threading.Event()  # set while no warm-up runs in this process
_done.set()
_warmup_ident: int | None = None  # the warm-up thread's id (its imports never wait)
_ended_at = 0.0  # when the last warm-up ended (monotonic)
_deadline = 0.0  # when nothing waits for the running warm-up any more (monotonic)
_gave_up = False  # the running warm-up is past its deadline: its guard is off
_modules: tuple[str, ...] = ()  # what the running warm-up imports
_importing: str | None = None  # the module it is importing now
_state_lock = threading.Lock()


def warming_up() -> bool:
    """True while this process's warm-up imports run."""
    return not _done.is_set()


def silence_excused_until() -> float:
    """Monotonic time before which a data thread's silence is not held against it
    (thread_beats): now while the warm-up runs (a thread may be waiting for it at an
    import, see actors/import_guard.py: not stuck), else when it ended; never past its
    deadline (`wait_warmup`: no import waits longer), so a thread silent beyond it is
    found stuck though the warm-up never ends."""
    return min(time.monotonic(), _deadline) if not _done.is_set() else _ended_at


def started_warmup() -> bool:
    """True if this process started a warm-up (none where the modules were preloaded)."""
    return _warmup is not None


def wait_warmup() -> None:
    """Return once this process's warm-up imports are done (at once if none runs, and on
    the warm-up thread itself), or once its deadline has passed. The import guard calls
    it; so do `load_data_modules` and a fork.

    One deadline for the whole warm-up (`WARMUP_WAIT` after it started), not a bound per
    wait: a warm-up that is stuck would otherwise make every later import that loads
    anything wait the full bound again, each nested one too. Once it has passed, nothing
    waits any more: the guard is removed, and a warning names what is still importing
    (`_give_up`)."""
    if _done.is_set() or threading.get_ident() == _warmup_ident:
        return
    left = _deadline - time.monotonic()
    if left > 0 and _done.wait(left):
        return
    _give_up()


def _give_up() -> None:
    """The warm-up is past its deadline (stuck, or a machine far too loaded): remove the
    guard, so that no import waits for it any more, and say so, once."""
    global _gave_up
    with _state_lock:
        if _gave_up or _done.is_set():
            return
        _gave_up = True
    import_guard.uninstall()
    fields = {"waited": WARMUP_WAIT, "importing": _importing,
              "not_loaded": [name for name in _modules if not import_guard.ready(name)],
              "consequence": "imports no longer wait for the warm-up"}
    # no import here: the stuck warm-up holds module locks (an actor has its log loaded)
    logs = sys.modules.get("pyproof.logs")
    if logs is not None and hasattr(logs, "get_logger"):
        logs.get_logger().warning("warmup_overdue", **fields)
    else:
        print(f"pyproof: warmup_overdue {fields}", file=sys.stderr)


def _forget_warmup() -> None:
    """In a child forked from this process: no warm-up thread came along, so neither do
    its guard nor its wait.

    The child keeps `sys.modules` as it is. After the fork waited for the warm-up
    (`_hook_forks`) nothing is half made in it, unless the warm-up was past its deadline
    (stuck): its modules still initializing are then in the child too, their module locks
    held by a thread it has not got, and an import of them there hangs. Dropping them
    from `sys.modules` would not help, and is not safe: a new import of one takes the same
    lock (importlib keeps it by name); modules that bound the half-made one keep it, beside
    a second copy; and an extension module (numpy's) cannot be initialized twice in a
    process. A stuck warm-up is reported in the parent (`_give_up`)."""
    global _warmup
    _warmup = None
    import_guard.uninstall()
    _done.set()


def _hook_forks() -> None:
    """A fork (a selector's multiprocessing, say) during the warm-up waits for it first:
    the child would otherwise inherit the module locks the warm-up thread holds, never
    released there (an import of those modules would hang), and a guard waiting for a
    thread it has not got.

    Registered as each warm-up starts, not as this module is imported: `os.fork` runs the
    `before` hooks latest registered first, and one registered after ours may take a lock
    the warm-up needs (logging's module lock, taken by `logging.getLogger`, which many
    modules call at import) and hold it while ours waits: the warm-up then stands still
    until its deadline, and the fork happens in the middle of it after all. Hooks that
    the warm-up's own imports register (logging's, if it was not loaded) still run first:
    such a fork waits until the deadline at worst. (Each start adds a hook: a process
    starts one warm-up, another only if one failed; a hook with none running returns at
    once.)"""
    fork_gate.gate(wait_warmup)  # multiprocessing's forks wait before any hook runs
    os.register_at_fork(after_in_child=_forget_warmup)


def load_data_modules(modules: tuple[str, ...] = DATA_MODULES) -> None:
    """Import `modules` now (at once if the warm-up is done; else after it).

    A worker calls this before its first data packet, so that no packet's clock
    (`packet_timeout`, the packetizer's rates) counts the import.
    """
    wait_warmup()
    for name in modules:
        importlib.import_module(name)


def start_warmup(modules: tuple[str, ...] = DATA_MODULES) -> threading.Thread | None:
    """Start importing `modules` on a daemon thread, with the import guard on until it
    ends (nothing with PYPROOF_WARMUP=0, when all of them are loaded already, or while
    one runs). Any thread may call it: one warm-up at a time (`_state_lock`)."""
    global _warmup, _modules, _gave_up, _deadline
    if os.environ.get("PYPROOF_WARMUP", "1") == "0":
        return None
    delay = float(os.environ.get(DELAY_ENV) or 0) \
        if os.environ.get("PYPROOF_TEST_HOOKS") == "1" else 0.0

    def run() -> None:
        global _warmup_ident, _ended_at, _importing
        _warmup_ident = threading.get_ident()  # first: before this thread imports anything
        import_guard.exempt_this_thread()
        try:
            # a lower priority for this thread alone (Linux schedules threads): a query
            # that arrives meanwhile, or a sibling's start, goes first
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARMUP_NICE)
            for name in modules:
                _importing = name
                if delay:
                    time.sleep(delay)
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 (the real import, later, reports it)
                    return
        finally:
            _importing = None
            import_guard.uninstall()
            _ended_at = time.monotonic()
            _done.set()

    with _state_lock:  # (the check and the clear at once: no second warm-up beside)
        if not _done.is_set():
            return None
        modules = tuple(name for name in modules if not import_guard.ready(name))
        if not modules:
            return None
        thread = threading.Thread(target=run, name="pyproof-warmup", daemon=True)
        _warmup = thread
        _modules, _gave_up = modules, False
        _deadline = time.monotonic() + WARMUP_WAIT
        _hook_forks()
        _done.clear()
        import_guard.install(wait_warmup, within=modules)
    thread.start()
    return thread
