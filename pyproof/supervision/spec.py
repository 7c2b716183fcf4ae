"""Supervision specs: the tree as data, with Erlang/OTP's vocabulary and defaults.

A supervisor is described by `SupFlags` (strategy, restart intensity, period,
watchdog timing) and an ordered list of `ChildSpec`s. Children start in list
order and stop in reverse order. Nothing here has side effects: the shell
reads `ChildSpec.start` (an opaque value, e.g. an actor class name and its
arguments, or a nested `SupervisorSpec`) to create the child.

Defaults are OTP's: strategy one_for_one, intensity 1, period 5 s; restart
permanent; shutdown 5 s for a worker and infinity for a supervisor.

Invalid values raise `ValueError` naming the field and the value, e.g.
``ValueError("invalid restart type: 'sometimes'")``.

Restart intensities multiply across levels: when a supervisor with
intensity I1 escalates, its parent (intensity I2) restarts it, and with it
its children, so a child that always crashes is started roughly
(I1 + 1) * (I2 + 1) times before the parent gives up too. Say so where you
nest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import field
from enum import StrEnum
from typing import Any, ClassVar

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

__all__ = [
    "ChildSpec",
    "ChildType",
    "Restart",
    "Shutdown",
    "Strategy",
    "SupFlags",
    "SupervisorSpec",
    "check_unique_ids",
]


class Restart(StrEnum):
    """When a terminated child is restarted."""

    PERMANENT = "permanent"
    """Always restarted, whatever the exit reason."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit."""
    TEMPORARY = "temporary"
    """Never restarted; removed from the supervisor when it terminates."""


class ChildType(StrEnum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class Strategy(StrEnum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and the children started after it."""


def _enum(cls: type[StrEnum], value: object, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    raise ValueError(f"invalid {what}: {value!r}")


def _seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    """How a child is stopped: `brutal_kill`, a timeout in seconds, or `infinity`.

    brutal_kill: killed at once (SIGKILL of its process tree).
    timeout: asked to exit, killed if still alive after `seconds`.
    infinity: asked to exit, waited for (the default for supervisors, which
    stop their own children with bounded timeouts).
    """

    kind: str
    seconds: float | None = None

    BRUTAL_KILL: ClassVar[Shutdown]
    INFINITY: ClassVar[Shutdown]

    def __post_init__(self) -> None:
        if self.kind == "timeout":
            if not _seconds(self.seconds) or self.seconds < 0:  # type: ignore[operator]
                raise ValueError(f"invalid shutdown: {self.seconds!r}")
            object.__setattr__(self, "seconds", float(self.seconds))  # type: ignore[arg-type]
        elif self.kind in ("brutal_kill", "infinity"):
            if self.seconds is not None:
                raise ValueError(f"invalid shutdown: {self.seconds!r}")
        else:
            raise ValueError(f"invalid shutdown: {self.kind!r}")

    @classmethod
    def timeout(cls, seconds: float) -> Shutdown:
        return cls(kind="timeout", seconds=seconds)

    @classmethod
    def parse(cls, value: object) -> Shutdown:
        """A `Shutdown` from itself, "brutal_kill", "infinity" or seconds (>= 0)."""
        if isinstance(value, Shutdown):
            return value
        if value == "brutal_kill":
            return cls.BRUTAL_KILL
        if value == "infinity":
            return cls.INFINITY
        if _seconds(value) and value >= 0:  # type: ignore[operator]
            return cls.timeout(value)  # type: ignore[arg-type]
        raise ValueError(f"invalid shutdown: {value!r}")

    @property
    def is_brutal_kill(self) -> bool:
        return self.kind == "brutal_kill"

    @property
    def is_infinity(self) -> bool:
        return self.kind == "infinity"

    def __str__(self) -> str:
        return f"{self.seconds:g}" if self.kind == "timeout" else self.kind


Shutdown.BRUTAL_KILL = Shutdown(kind="brutal_kill")
Shutdown.INFINITY = Shutdown(kind="infinity")

WORKER_SHUTDOWN = Shutdown.timeout(5.0)
"""OTP's default for a worker: 5000 ms."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """One child of a supervisor.

    `start` is opaque to the core: the shell uses it to create the child
    (an actor class and arguments, or a `SupervisorSpec` for a nested
    supervisor). `shutdown` accepts a `Shutdown`, "brutal_kill", "infinity"
    or seconds; it defaults to 5 s for a worker and infinity for a
    supervisor. `watchdog=False` exempts the child from pings (it is never
    declared hung).
    """

    id: str
    start: Any
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown = field(default=None)  # type: ignore[assignment]
    type: ChildType = ChildType.WORKER
    watchdog: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"invalid child id: {self.id!r}")
        object.__setattr__(self, "restart", _enum(Restart, self.restart, "restart type"))
        object.__setattr__(self, "type", _enum(ChildType, self.type, "child type"))
        if self.shutdown is None:
            default = Shutdown.INFINITY if self.type is ChildType.SUPERVISOR else WORKER_SHUTDOWN
            object.__setattr__(self, "shutdown", default)
        else:
            object.__setattr__(self, "shutdown", Shutdown.parse(self.shutdown))
        if not isinstance(self.watchdog, bool):
            raise ValueError(f"invalid watchdog: {self.watchdog!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SupFlags:
    """A supervisor's flags.

    More than `intensity` restarts within `period` seconds make the
    supervisor stop all its children and exit (escalation): intensity 1,
    period 5 means a second restart within 5 s escalates.

    The watchdog pings every child (with `watchdog=True`) each
    `ping_interval` seconds; a child that has not answered within
    `ping_timeout` seconds is declared hung and killed. `ping_interval=None`
    turns the watchdog off.

    `independent=True` says the children have nothing to do with each other
    (sessions, each its own user's): every start and stop is issued at once,
    so one child's slow stop never holds up another's start, as with OTP's
    simple_one_for_one. The default (False) keeps OTP's order: one start or
    stop at a time, children started in list order and stopped in reverse.
    Only one_for_one goes with it: one_for_all and rest_for_one restart
    children together because they depend on each other, and then their order
    matters.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    ping_interval: float | None = None
    ping_timeout: float = 2.0
    independent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", _enum(Strategy, self.strategy, "strategy"))
        if not isinstance(self.intensity, int) or isinstance(self.intensity, bool) or (
            self.intensity < 0
        ):
            raise ValueError(f"invalid intensity: {self.intensity!r}")
        if not _seconds(self.period) or self.period <= 0:
            raise ValueError(f"invalid period: {self.period!r}")
        object.__setattr__(self, "period", float(self.period))
        if self.ping_interval is not None:
            if not _seconds(self.ping_interval) or self.ping_interval <= 0:
                raise ValueError(f"invalid ping_interval: {self.ping_interval!r}")
            object.__setattr__(self, "ping_interval", float(self.ping_interval))
        if not _seconds(self.ping_timeout) or self.ping_timeout <= 0:
            raise ValueError(f"invalid ping_timeout: {self.ping_timeout!r}")
        object.__setattr__(self, "ping_timeout", float(self.ping_timeout))
        if not isinstance(self.independent, bool):
            raise ValueError(f"invalid independent: {self.independent!r}")
        if self.independent and self.strategy is not Strategy.ONE_FOR_ONE:
            raise ValueError(
                f"invalid strategy with independent=True: {str(self.strategy)!r} (it "
                f"restarts children together, so they depend on each other and their order "
                f"matters; use one_for_one, or independent=False)")


def check_unique_ids(children: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    """The children as a tuple; ValueError naming the first duplicate id or a non-spec."""
    seen: set[str] = set()
    result = []
    for child in children:
        if not isinstance(child, ChildSpec):
            raise ValueError(f"invalid child spec: {child!r}")
        if child.id in seen:
            raise ValueError(f"duplicate child id: {child.id!r}")
        seen.add(child.id)
        result.append(child)
    return tuple(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorSpec:
    """A whole supervisor as data: its name, flags and ordered children.

    Use it as the `start` of a `ChildSpec` with `type=ChildType.SUPERVISOR` to
    nest supervisors; the tree is then one value.
    """

    name: str
    flags: SupFlags = field(default_factory=SupFlags)
    children: tuple[ChildSpec, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"invalid supervisor name: {self.name!r}")
        if not isinstance(self.flags, SupFlags):
            raise ValueError(f"invalid flags: {self.flags!r}")
        object.__setattr__(self, "children", check_unique_ids(self.children))
