"""Events into the supervisor core and commands out of it.

Every event and command is a frozen, slotted, keyword-only dataclass with a
`cause` id: a command's `cause` is the `cause` of the event that produced
it, so a log line or a reply can be traced back to its stimulus.

Every event carries `now`, the current time in seconds from the shell's
monotonic clock; the core never reads a clock.

The shell's contract, in short:

* `StartChild(spec)`: create the child from `spec.start`, then send
  `ChildStarted(child_id, ref, pid)` or `StartFailed(child_id, reason)`.
* `StopChild(child_id, shutdown, ref)`: ask the child to exit; after
  `shutdown.seconds` (at once for brutal_kill) kill its whole process tree;
  then send `ChildExited` (reason "shutdown" if it exited when asked,
  "killed" with abnormal=True if it had to be killed).
* `KillChild(child_id, ref, reason)`: SIGKILL its process tree now, then send
  `ChildExited`.
* `Ping(child_id, seq, ref)`: send the child a ping; its answer becomes
  `Pong(child_id, seq)`.
* `Reply(request, ok, child_id, reason)`: answer the `AddChild` or
  `RemoveChild` whose `cause` is `request`.
* `Escalate(reason, child_id)` / `Exit(reason)`: every child has already been
  stopped; exit (abnormally for `Escalate`) so the parent decides.
* `Log(event, level, supervisor, child_id, reason, extra)`: a structlog event,
  e.g. ``getattr(logger, cmd.level)(cmd.event, **cmd.fields())``.
* A child that exits on its own: send `ChildExited(child_id, reason, abnormal,
  ref)`. Stale reports (an older `ref`) are ignored.
* Send `WatchdogTick(now)` when `SupervisorCore.next_tick()` is due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

from .spec import ChildSpec, Shutdown
from .watchdog import Seen

__all__ = [
    "AddChild",
    "ChildExited",
    "ChildStarted",
    "Command",
    "Escalate",
    "Event",
    "Exit",
    "Init",
    "KillChild",
    "Log",
    "Ping",
    "Pong",
    "RemoveChild",
    "Reply",
    "ShutdownRequested",
    "StartChild",
    "StartFailed",
    "StopChild",
    "WatchdogTick",
]

_DC = {"frozen": True, "slots": True, "kw_only": True}

# ---------------------------------------------------------------- events


@dataclass(**_DC)
class Init:
    """Start the children in list order (the supervisor's own start)."""

    now: float
    cause: str = ""


@dataclass(**_DC)
class ChildStarted:
    """The child asked for by `StartChild` runs; `ref` addresses it (e.g. an actor address)."""

    child_id: str
    ref: Any
    now: float
    pid: int | None = None
    cause: str = ""


@dataclass(**_DC)
class StartFailed:
    """Creating the child asked for by `StartChild` failed."""

    child_id: str
    reason: str
    now: float
    cause: str = ""


@dataclass(**_DC)
class ChildExited:
    """A child is gone (on its own, or after `StopChild` / `KillChild`).

    `abnormal` is False for OTP's normal, shutdown and {shutdown, _} reasons.
    `ref`, when given, must be the ref of the current incarnation; a report
    about an older one (or a second report) is ignored. Without a `ref`, an
    exit reported while the child is starting counts as a failed start.
    """

    child_id: str
    reason: str
    abnormal: bool
    now: float
    ref: Any = None
    charged: bool = True
    """False: the exit was the fault of user code the child ran (a selector that exited or
    crashed its worker), not of the child: restarted, but not counted against the restart
    intensity, so users' code cannot exhaust it and take the supervisor down."""
    cause: str = ""


@dataclass(**_DC)
class ShutdownRequested:
    """The parent asks this supervisor to stop its children (reverse order) and exit."""

    now: float
    reason: str = "shutdown"
    cause: str = ""


@dataclass(**_DC)
class AddChild:
    """Add and start a child at run time (e.g. a session); answered by `Reply`."""

    spec: ChildSpec
    now: float
    cause: str = ""


@dataclass(**_DC)
class RemoveChild:
    """Stop a child (if running) and forget its spec; answered by `Reply`."""

    child_id: str
    now: float
    cause: str = ""


@dataclass(**_DC)
class WatchdogTick:
    """Time passes: send due pings, declare hung the children past their deadline.

    `early`: also ping children whose ping is due within that many seconds, so
    the children's pings fall into one round (one wake-up) instead of one each.
    `busy`: children whose process used CPU, or waited for one (starved), since
    the last tick: working, not hung (watchdog.py `progress`). `seen`: child id ->
    `Seen`, what the shell read of each child it can see without a message (its
    heartbeat page, /proc); those that
    look fine are not pinged (watchdog.py).
    """

    now: float
    early: float = 0.0
    busy: frozenset[str] = frozenset()
    seen: Mapping[str, Seen] = field(default_factory=dict)
    cause: str = ""


@dataclass(**_DC)
class Pong:
    """A child answered the ping numbered `seq`."""

    child_id: str
    seq: int
    now: float
    cause: str = ""


Event = (
    Init
    | ChildStarted
    | StartFailed
    | ChildExited
    | ShutdownRequested
    | AddChild
    | RemoveChild
    | WatchdogTick
    | Pong
)

# ---------------------------------------------------------------- commands


@dataclass(**_DC)
class StartChild:
    spec: ChildSpec
    cause: str = ""

    @property
    def child_id(self) -> str:
        return self.spec.id


@dataclass(**_DC)
class StopChild:
    child_id: str
    shutdown: Shutdown
    ref: Any
    cause: str = ""


@dataclass(**_DC)
class KillChild:
    child_id: str
    ref: Any
    reason: str = "hung"
    cause: str = ""


@dataclass(**_DC)
class Ping:
    child_id: str
    seq: int
    ref: Any
    cause: str = ""


@dataclass(**_DC)
class Reply:
    request: str
    ok: bool
    child_id: str
    reason: str | None = None
    cause: str = ""


@dataclass(**_DC)
class Escalate:
    """Give up: the children are stopped; exit abnormally so the parent decides."""

    reason: str
    child_id: str | None = None
    cause: str = ""
    detail: str = ""  # why that child failed (its start error, its last exit): for the log


@dataclass(**_DC)
class Exit:
    """Shutdown done: the children are stopped; exit with `reason`."""

    reason: str
    cause: str = ""


@dataclass(**_DC)
class Log:
    """A structlog event in OTP's vocabulary, with the fixed keys supervisor, child_id, reason."""

    event: str
    level: str
    supervisor: str
    child_id: str | None = None
    reason: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    cause: str = ""

    def fields(self) -> dict[str, Any]:
        """Key-value pairs for the logger (event and level excluded)."""
        return {
            "supervisor": self.supervisor,
            "child_id": self.child_id,
            "reason": self.reason,
            **dict(self.extra),
            "cause": self.cause,
        }


Command = StartChild | StopChild | KillChild | Ping | Reply | Escalate | Exit | Log
