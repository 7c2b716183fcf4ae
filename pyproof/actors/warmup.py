"""Import the data path's heavy modules in the background, once a process is up.

A session's master and workers start without uproot, awkward and hist (about
a third of a second of CPU each, more than the rest of a start-up), so that a
session is ready at once. Each then imports them on a daemon thread, started
once its supervisor heard it started (`m.WarmUp`: a thread started as the actor
sent `Started` held the GIL while it imported, and the send waited for it; a
query that came first loads them itself, no warm-up beside it): by the time the
user's first query arrives they are usually loaded. A query that comes sooner,
even a `cycles=` one, waits for the warm-up to end (below): on a busy machine a
fresh worker's first query can wait a second or more. (A waiter that took over
the rest of the imports at its own priority was measured slower, and left out.)

Two threads importing the same package tree at once are NOT safe: Python's
per-module locks break a cross-thread cycle (awkward's submodules import each
other) by handing one thread a partially initialized module ("partially
initialized module 'awkward' has no attribute 'Array'"). So whatever may import
them on another thread (a selector's module, the master's look-up) first waits
for the warm-up with `wait_warmup()`: the imports happen one after the other.

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
import types
from typing import Any

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


def _import_structlog_without_rich() -> None:
    """Import structlog as if rich were not installed (a sixth of a lite start-up).

    structlog's console renderer imports rich (and better_exceptions) when it can;
    the actors log JSON and never use it. The modules stay importable afterwards:
    only structlog's own optional use of them is off, in this process tree.
    """
    optional = [name for name in ("rich", "better_exceptions") if name not in sys.modules]
    for name in optional:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import structlog  # noqa: F401
    finally:
        for name in optional:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


WARMUP_WAIT = 120.0  # seconds: an import that takes longer is stuck; go on and let it fail

_warmup: threading.Thread | None = None


def wait_warmup(timeout: float = WARMUP_WAIT) -> None:
    """Return once this process's warm-up imports are done (at once if none runs).

    Call before anything that may import the data modules on another thread
    (loading a selector, a look-up): see the module docstring.
    """
    thread = _warmup
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def load_data_modules(modules: tuple[str, ...] = DATA_MODULES) -> None:
    """Import `modules` now (at once if the warm-up is done; else after it).

    A worker calls this before its first data packet, so that no packet's clock
    (`packet_timeout`, the packetizer's rates) counts the import.
    """
    wait_warmup()
    for name in modules:
        importlib.import_module(name)


def start_warmup(modules: tuple[str, ...] = DATA_MODULES) -> threading.Thread | None:
    """Start importing `modules` on a daemon thread (none with PYPROOF_WARMUP=0)."""
    if os.environ.get("PYPROOF_WARMUP", "1") == "0":
        return None

    def run() -> None:
        # a lower priority for this thread alone (Linux schedules threads): a query
        # that arrives meanwhile, or a sibling's start, goes first
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARMUP_NICE)
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 (the real import, later, reports it)
                return

    global _warmup
    thread = threading.Thread(target=run, name="pyproof-warmup", daemon=True)
    _warmup = thread
    thread.start()
    return thread
