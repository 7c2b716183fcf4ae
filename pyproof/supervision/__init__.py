"""Erlang/OTP-style supervision for pyproof's actors.

Layers (bottom up), all pure (no thespian, no pynng, no clock: time is an
argument) except the last two:

- `spec`: `ChildSpec`, `SupFlags`, `SupervisorSpec`, `Restart`, `Shutdown`,
  `ChildType`, `Strategy`: the tree as data, with OTP's defaults;
- `restart`: `RestartWindow.add(now) -> Decision`, OTP's restart intensity;
- `watchdog`: `Watchdog`, hang detection by ping and deadline (pings only when a
  heartbeat `Seen` cannot vouch for a child);
- `events`: the events the core takes and the commands it returns;
- `core`: `SupervisorCore`, the state machine that decides (strategies,
  restart types, escalation, ordered start and stop, dynamic children);
- `process_tree`: killing whole process trees (Linux /proc), for the shells;
- `heartbeat`: each actor's shared page (a memfd) saying whether its actor
  thread is in a handler and since when, read by its supervisor's shell.

The Thespian shell that carries out the commands lives in `pyproof.actors`.
"""

import typing as _typing

from pyproof.lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from .core import ChildState, ChildStats, Phase, SupervisorCore, SupervisorStats
    from .events import (
        AddChild,
        ChildExited,
        ChildStarted,
        Command,
        Escalate,
        Event,
        Exit,
        Init,
        KillChild,
        Log,
        Ping,
        Pong,
        RemoveChild,
        Reply,
        ShutdownRequested,
        StartChild,
        StartFailed,
        StopChild,
        WatchdogTick,
    )
    from .restart import Decision, RestartWindow, add_restart
    from .spec import (
        ChildSpec,
        ChildType,
        Restart,
        Shutdown,
        Strategy,
        SupervisorSpec,
        SupFlags,
        check_unique_ids,
    )
    from .watchdog import PingDue, Seen, TickResult, Watchdog, WatchState

# name -> submodule: imported on first use (PEP 562), so that importing one submodule
# (a lite client imports `process_tree` to reap its cluster) does not load them all
_LAZY = {
    "ChildState": "core",
    "ChildStats": "core",
    "Phase": "core",
    "SupervisorCore": "core",
    "SupervisorStats": "core",
    "AddChild": "events",
    "ChildExited": "events",
    "ChildStarted": "events",
    "Command": "events",
    "Escalate": "events",
    "Event": "events",
    "Exit": "events",
    "Init": "events",
    "KillChild": "events",
    "Log": "events",
    "Ping": "events",
    "Pong": "events",
    "RemoveChild": "events",
    "Reply": "events",
    "ShutdownRequested": "events",
    "StartChild": "events",
    "StartFailed": "events",
    "StopChild": "events",
    "WatchdogTick": "events",
    "Decision": "restart",
    "RestartWindow": "restart",
    "add_restart": "restart",
    "ChildSpec": "spec",
    "ChildType": "spec",
    "Restart": "spec",
    "Shutdown": "spec",
    "Strategy": "spec",
    "SupervisorSpec": "spec",
    "SupFlags": "spec",
    "check_unique_ids": "spec",
    "PingDue": "watchdog",
    "Seen": "watchdog",
    "TickResult": "watchdog",
    "Watchdog": "watchdog",
    "WatchState": "watchdog",
}


__getattr__, __dir__ = _lazy_attributes(
    __name__, globals(), lambda name: f"{__name__}.{_LAZY[name]}" if name in _LAZY else None,
    _LAZY)


__all__ = [
    "AddChild",
    "ChildExited",
    "ChildSpec",
    "ChildStarted",
    "ChildState",
    "ChildStats",
    "ChildType",
    "Command",
    "Decision",
    "Escalate",
    "Event",
    "Exit",
    "Init",
    "KillChild",
    "Log",
    "Phase",
    "Ping",
    "PingDue",
    "Pong",
    "RemoveChild",
    "Reply",
    "Restart",
    "RestartWindow",
    "Seen",
    "Shutdown",
    "ShutdownRequested",
    "StartChild",
    "StartFailed",
    "StopChild",
    "Strategy",
    "SupFlags",
    "SupervisorCore",
    "SupervisorSpec",
    "SupervisorStats",
    "TickResult",
    "WatchState",
    "Watchdog",
    "WatchdogTick",
    "add_restart",
    "check_unique_ids",
]
