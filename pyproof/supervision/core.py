"""The supervisor core: OTP's supervisor as a pure state machine (events in, commands out).

`SupervisorCore.handle(*events)` takes `events.py` events (each with `now`)
and returns the commands the shell must carry out, in order. It never reads
a clock, never touches a process: that is the shell's job.

Unlike OTP's synchronous calls, starting and stopping a child take time here,
so the core keeps a plan: a set of children to stop and a set to start.
Exactly one orderly operation is in flight at a time (one `StartChild` or
one `StopChild`), so children start in list order and stop in reverse list
order, each waiting for the previous to finish, as in OTP. Under
`SupFlags(independent=True)` (one_for_one only: children that need nothing
from each other, like sessions) every start and stop the plan holds is
issued at once instead, and each waits only for its own child: a child due
to stop while it starts is stopped once it runs, one due to start again
while it stops is started once it is gone; shutting down stops them all
together and ends when the last is gone. Decisions (restarts, intensity,
replies) are the same either way. A failure that
arrives while a plan runs is merged into it: a child already due to be
stopped and restarted that dies on its own is not restarted twice (OTP
reports it as a shutdown_error and counts no extra restart, and so do we).

Decisions follow `supervisor.erl`:

* permanent children are always restarted, transient ones only after an
  abnormal exit, temporary ones never (and are forgotten when they end);
* each restart goes through the `RestartWindow`; one too many and the
  supervisor stops every child in reverse order, then `Escalate`s;
* one_for_one restarts the child; one_for_all stops the others in reverse
  order and starts all in order; rest_for_one does so for the child and the
  children after it. Temporary siblings stopped this way are forgotten;
* a restart that fails to start counts as another restart and is retried
  per the strategy (OTP's try_again), so a child that can never start
  escalates after `intensity` attempts;
* a child that fails its first start during `Init` makes the supervisor give
  up (`Escalate("failed_to_start_child")`), as OTP's init fails; a dynamic
  child (`AddChild`) that fails its first start is forgotten and the request
  is answered with an error.

The watchdog (`watchdog.py`) pings running and stopping children; a child
that misses its deadline gets `KillChild` and its exit is a failure with
reason "hung", handled by the strategy like any crash.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

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
from .restart import Decision, RestartWindow
from .spec import ChildSpec, Restart, Strategy, SupervisorSpec, SupFlags
from .watchdog import Watchdog, WatchState

__all__ = ["ChildState", "ChildStats", "Phase", "SupervisorCore", "SupervisorStats"]


class Phase(StrEnum):
    NEW = "new"
    """Created; waiting for `Init`."""
    STARTING = "starting"
    """Starting the children in order after `Init` (all at once if independent)."""
    RUNNING = "running"
    TERMINATING = "terminating"
    """Stopping every child in reverse order (all at once if independent), then `Exit` or
    `Escalate`."""
    TERMINATED = "terminated"
    """`Exit` or `Escalate` was issued; events are ignored."""


class ChildState(StrEnum):
    IDLE = "idle"
    """Not running (not yet started, or exited)."""
    STARTING = "starting"
    """`StartChild` issued, waiting for `ChildStarted` or `StartFailed`."""
    RUNNING = "running"
    STOPPING = "stopping"
    """`StopChild` issued, waiting for `ChildExited`."""
    KILLING = "killing"
    """`KillChild` issued (hung), waiting for `ChildExited`."""


_ALIVE = (ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING, ChildState.KILLING)
_HAS_REF = (ChildState.RUNNING, ChildState.STOPPING, ChildState.KILLING)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildStats:
    """A frozen view of one child, as `proofctl tree` shows it."""

    id: str
    type: str
    restart: str
    shutdown: str
    state: str
    ref: Any
    pid: int | None
    starts: int
    restarts: int
    last_exit: str | None
    dynamic: bool
    pending: str | None
    """"stop", "start", "remove" when the current plan will do that to it, else None."""
    watch: WatchState | None

    def as_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__}
        d["ref"] = None if self.ref is None else str(self.ref)
        d["watch"] = None if self.watch is None else {
            name: getattr(self.watch, name) for name in self.watch.__slots__}
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorStats:
    """A frozen view of a supervisor: flags, restart window and children in order."""

    name: str
    phase: str
    strategy: str
    intensity: int
    period: float
    restarts: int
    """Restarts decided since the supervisor started."""
    window: tuple[float, ...]
    """Restart times still counted against the intensity, newest first."""
    children: tuple[ChildStats, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "phase": self.phase, "strategy": self.strategy,
            "intensity": self.intensity, "period": self.period,
            "restarts": self.restarts, "window": list(self.window),
            "children": [c.as_dict() for c in self.children],
        }


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    dynamic: bool
    state: ChildState = ChildState.IDLE
    ref: Any = None
    pid: int | None = None
    starts: int = 0
    last_exit: str | None = None
    kill_reason: str | None = None
    forget: bool = False
    """Delete the record once it is idle (being removed, or a temporary sibling)."""
    adding: str | None = None
    """Cause of the `AddChild` awaiting this child's first start."""
    removing: tuple[str, ...] = ()
    """Causes of `RemoveChild` requests awaiting its removal."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def alive(self) -> bool:
        return self.state in _ALIVE


class SupervisorCore:
    """One supervisor's decisions. Feed events to `handle`; carry out what it returns."""

    def __init__(
        self,
        flags: SupFlags | None = None,
        children: list[ChildSpec] | tuple[ChildSpec, ...] = (),
        *,
        name: str = "supervisor",
        history: int = 256,
    ) -> None:
        spec = SupervisorSpec(name=name, flags=flags or SupFlags(), children=tuple(children))
        self.name = spec.name
        self.flags = spec.flags
        self._children: dict[str, _Child] = {
            c.id: _Child(spec=c, dynamic=False) for c in spec.children}
        self._to_stop: set[str] = set()
        self._to_start: set[str] = set()
        self._window = RestartWindow(self.flags.intensity, self.flags.period)
        self._watchdog = (
            None if self.flags.ping_interval is None
            else Watchdog(self.flags.ping_interval, self.flags.ping_timeout))
        self._phase = Phase.NEW
        self._final: Command | None = None
        self._restarts = 0
        self._history: deque[tuple[Event, tuple[Command, ...]]] = deque(maxlen=history)
        self._out: list[Command] = []

    @classmethod
    def from_spec(cls, spec: SupervisorSpec, **kwargs: Any) -> SupervisorCore:
        return cls(spec.flags, spec.children, name=spec.name, **kwargs)

    # ------------------------------------------------------------ public

    @property
    def phase(self) -> Phase:
        return self._phase

    def handle(self, *events: Event) -> list[Command]:
        """Apply `events` in order; the commands to carry out, in order."""
        out: list[Command] = []
        for event in events:
            self._out = []
            handler = self._HANDLERS.get(type(event))
            if handler is None:
                raise TypeError(f"not a supervisor event: {event!r}")
            handler(self, event)
            self._history.append((event, tuple(self._out)))
            out.extend(self._out)
        self._out = []
        return out

    def next_tick(self) -> float | None:
        """When the shell should send the next `WatchdogTick`, or None (no watchdog work)."""
        if self._watchdog is None or self._phase in (Phase.NEW, Phase.TERMINATED):
            return None
        return self._watchdog.next_deadline()

    def watched(self) -> frozenset[str]:
        """Children the watchdog watches (whose heartbeat the shell reads each tick)."""
        return frozenset() if self._watchdog is None else self._watchdog.watched

    def waiting(self) -> list[str]:
        """Children with a ping outstanding (whose CPU time the shell may sample)."""
        return [] if self._watchdog is None else self._watchdog.waiting()

    def child_ids(self) -> list[str]:
        """The children's ids in start order."""
        return list(self._children)

    def state_of(self, child_id: str) -> ChildState | None:
        c = self._children.get(child_id)
        return None if c is None else c.state

    def story(self, child_id: str) -> list[Event | Command]:
        """The recent events and commands that concern `child_id`, oldest first."""
        found: list[Event | Command] = []
        for event, commands in self._history:
            for item in (event, *commands):
                if _concerns(item, child_id):
                    found.append(item)
        return found

    def statistics(self) -> SupervisorStats:
        children = []
        for c in self._children.values():
            if c.forget and c.removing:
                pending = "remove"
            elif c.id in self._to_stop:
                pending = "stop"
            elif c.id in self._to_start:
                pending = "start"
            else:
                pending = None
            children.append(ChildStats(
                id=c.id, type=str(c.spec.type), restart=str(c.spec.restart),
                shutdown=str(c.spec.shutdown), state=str(c.state), ref=c.ref, pid=c.pid,
                starts=c.starts, restarts=max(c.starts - 1, 0), last_exit=c.last_exit,
                dynamic=c.dynamic, pending=pending,
                watch=None if self._watchdog is None else self._watchdog.state(c.id)))
        return SupervisorStats(
            name=self.name, phase=str(self._phase), strategy=str(self.flags.strategy),
            intensity=self.flags.intensity, period=self.flags.period,
            restarts=self._restarts, window=self._window.restarts, children=tuple(children))

    def validate(self) -> None:
        """Raise AssertionError if the internal state is inconsistent (tests call this)."""
        kids = self._children
        assert self._to_stop <= kids.keys(), self._to_stop - kids.keys()
        assert self._to_start <= kids.keys(), self._to_start - kids.keys()
        in_flight = [c.id for c in kids.values()
                     if c.state in (ChildState.STARTING, ChildState.STOPPING)]
        if not self.flags.independent:
            assert len(in_flight) <= 1, f"more than one operation in flight: {in_flight}"
        for c in kids.values():
            assert (c.ref is not None) == (c.state in _HAS_REF), (c.id, c.state, c.ref)
            assert (c.kill_reason is not None) == (c.state is ChildState.KILLING), c
            if c.state is ChildState.STOPPING:
                assert c.id in self._to_stop, c
            if c.forget:
                assert c.alive, f"{c.id} should have been forgotten"
                assert c.id not in self._to_start, c
            if c.adding is not None:
                assert c.dynamic and c.starts == 0, c
            if c.spec.restart is Restart.TEMPORARY and c.id in self._to_start:
                assert c.starts == 0, c
            if c.starts == 0:
                assert c.state in (ChildState.IDLE, ChildState.STARTING), c
        if self._watchdog is not None:
            self._watchdog.validate()
            expected = {c.id for c in kids.values() if c.spec.watchdog and c.state in (
                ChildState.RUNNING, ChildState.STOPPING)}
            assert self._watchdog.watched == expected, (self._watchdog.watched, expected)
        phase = self._phase
        if phase is Phase.NEW:
            assert all(c.state is ChildState.IDLE for c in kids.values())
            assert not self._to_stop and not self._to_start
        if phase in (Phase.TERMINATING, Phase.TERMINATED):
            assert not self._to_start, self._to_start
            assert self._final is not None
            assert all(c.adding is None or c.state is ChildState.STARTING
                       for c in kids.values())
        if phase is Phase.TERMINATED:
            assert not self._to_stop, self._to_stop
            assert all(c.state is ChildState.IDLE for c in kids.values())
        if phase is Phase.TERMINATING:
            alive = {c.id for c in kids.values() if c.alive}
            assert alive, "terminating with no child alive: the final command is overdue"
            assert alive <= self._to_stop, alive - self._to_stop
        if phase in (Phase.STARTING, Phase.RUNNING):
            assert len(self._window.restarts) <= self.flags.intensity, self._window
            for c in kids.values():
                if c.spec.restart is Restart.TEMPORARY and not c.forget:
                    assert c.starts == 0 or c.alive, f"temporary {c.id} should be forgotten"
        if self.flags.independent:
            # nothing waits for another child: what is due to stop is on its way out (or
            # still starting), what is due to start still waits for its own exit
            for c in kids.values():
                if c.id in self._to_stop:
                    assert c.state in (ChildState.STARTING, ChildState.STOPPING,
                                       ChildState.KILLING), f"stop not issued: {c.id} {c.state}"
                if c.id in self._to_start:
                    assert c.state in (ChildState.STOPPING, ChildState.KILLING), (
                        f"start not issued: {c.id} is {c.state}")
            if phase is Phase.STARTING:
                assert self._to_start or any(
                    c.state is ChildState.STARTING for c in kids.values()), \
                    "starting with nothing left to start"
        elif not in_flight and phase is not Phase.NEW:
            # the plan never stalls: with nothing in flight, it waits only for a hung child
            pending = self._to_stop | self._to_start
            killing = {c.id for c in kids.values() if c.state is ChildState.KILLING}
            assert not pending or pending & killing, f"plan stalled: {pending}"
            if phase is Phase.STARTING:
                assert pending, "starting with nothing left to start"
        # at rest, every child that ought to run does
        if phase is Phase.RUNNING and not in_flight and not self._to_stop and not (
                self._to_start) and not any(c.state is ChildState.KILLING for c in kids.values()):
            for c in kids.values():
                if c.spec.restart is Restart.PERMANENT:
                    assert c.state is ChildState.RUNNING, f"permanent {c.id} is {c.state}"

    # ------------------------------------------------------------ handlers

    def _on_init(self, ev: Init) -> None:
        if self._phase is not Phase.NEW:
            raise RuntimeError(f"supervisor {self.name!r} already started")
        self._phase = Phase.STARTING
        self._to_start = set(self._children)
        self._pump(ev.cause)

    def _on_started(self, ev: ChildStarted) -> None:
        c = self._children.get(ev.child_id)
        if c is None or c.state is not ChildState.STARTING:
            self._unexpected(ev)
            return
        c.state, c.ref, c.pid = ChildState.RUNNING, ev.ref, ev.pid
        c.starts += 1
        if ev.ref is None:
            c.ref = ev.child_id  # a ref is how the core tells incarnations apart
        self._log("child_started", "info", c.id, None, ev.cause,
                  pid=ev.pid, restart=str(c.spec.restart), starts=c.starts)
        if self._watchdog is not None and c.spec.watchdog:
            self._watchdog.watch(c.id, ev.now)
        if c.adding is not None:
            self._out.append(Reply(request=c.adding, ok=True, child_id=c.id, cause=ev.cause))
            c.adding = None
        self._pump(ev.cause)

    def _on_start_failed(self, ev: StartFailed) -> None:
        c = self._children.get(ev.child_id)
        if c is None or c.state is not ChildState.STARTING:
            self._unexpected(ev)
            return
        self._start_failed(c, ev.reason, ev.now, ev.cause)

    def _start_failed(self, c: _Child, reason: str, now: float, cause: str) -> None:
        c.state = ChildState.IDLE
        c.last_exit = reason
        self._log("start_error", "error", c.id, reason, cause)
        if c.forget:
            self._forget(c, cause)
        elif c.starts == 0 and c.dynamic:
            self._reply_add(c, False, reason, cause)
            self._delete(c)
        elif self._phase is Phase.TERMINATING:
            pass
        elif c.starts == 0:
            self._terminate(Escalate(reason="failed_to_start_child", child_id=c.id, cause=cause,
                                     detail=reason),
                            cause)
        else:
            self._restart(c, reason, now, cause)
        self._pump(cause)

    def _on_exited(self, ev: ChildExited) -> None:
        c = self._children.get(ev.child_id)
        if c is None or c.state is ChildState.IDLE or (
                ev.ref is not None and c.ref is not None and ev.ref != c.ref):
            return  # stale: an older incarnation, or already handled
        if c.state is ChildState.STARTING:
            if ev.ref is None:  # without a ref, assume the new one died while starting
                self._start_failed(c, ev.reason, ev.now, ev.cause)
            return  # with one, it is an older incarnation: the new one is not started yet
        prev, reason, abnormal = c.state, ev.reason, ev.abnormal
        if prev is ChildState.KILLING:
            reason, abnormal = c.kill_reason or reason, True
        c.state, c.ref, c.pid, c.kill_reason = ChildState.IDLE, None, None, None
        c.last_exit = reason
        if self._watchdog is not None:
            self._watchdog.unwatch(c.id)
        permanent = c.spec.restart is Restart.PERMANENT
        if c.id in self._to_stop:
            # stopped by the plan, or died before the plan got to stop it
            self._to_stop.discard(c.id)
            if prev is ChildState.STOPPING:
                expected = c.spec.shutdown.is_brutal_kill and reason == "killed"
                error = abnormal and not expected
            else:
                error = abnormal or permanent
            if error:
                self._log("shutdown_error", "error", c.id, reason, ev.cause)
            if c.forget:
                self._forget(c, ev.cause)
        elif c.forget:
            self._forget(c, ev.cause)
        else:
            if permanent or abnormal:
                self._log("child_terminated", "error", c.id, reason, ev.cause,
                          restart=str(c.spec.restart))
            if permanent or (abnormal and c.spec.restart is Restart.TRANSIENT):
                self._restart(c, reason, ev.now, ev.cause, charged=ev.charged)
            elif c.spec.restart is Restart.TEMPORARY:
                self._delete(c)
        self._pump(ev.cause)

    def _on_shutdown(self, ev: ShutdownRequested) -> None:
        if self._phase in (Phase.TERMINATING, Phase.TERMINATED):
            return
        final = Exit(reason=ev.reason, cause=ev.cause)
        if self._phase is Phase.NEW:
            self._phase = Phase.TERMINATED
            self._final = final
            self._out.append(final)
            return
        self._terminate(final, ev.cause)
        self._pump(ev.cause)

    def _on_add(self, ev: AddChild) -> None:
        spec = ev.spec
        child_id = getattr(spec, "id", "?")
        if not isinstance(spec, ChildSpec):
            reason = "invalid child spec"
        elif self._phase not in (Phase.STARTING, Phase.RUNNING):
            reason = f"supervisor is {self._phase}"
        elif spec.id in self._children:
            running = self._children[spec.id].state is ChildState.RUNNING
            reason = "already_started" if running else "already_present"
        else:
            reason = None
        if reason is not None:
            self._out.append(Reply(request=ev.cause, ok=False, child_id=str(child_id),
                                   reason=reason, cause=ev.cause))
            return
        self._children[spec.id] = _Child(spec=spec, dynamic=True, adding=ev.cause)
        self._to_start.add(spec.id)
        self._pump(ev.cause)

    def _on_remove(self, ev: RemoveChild) -> None:
        c = self._children.get(ev.child_id)
        if c is None or self._phase is Phase.TERMINATED:
            self._out.append(Reply(request=ev.cause, ok=False, child_id=ev.child_id,
                                   reason="not_found", cause=ev.cause))
            return
        self._reply_add(c, False, "removed", ev.cause)
        c.removing += (ev.cause,)
        self._to_start.discard(c.id)
        if c.alive:
            c.forget = True
            self._to_stop.add(c.id)
        else:
            self._forget(c, ev.cause)
        self._pump(ev.cause)

    def _on_tick(self, ev: WatchdogTick) -> None:
        if self._watchdog is None or self._phase in (Phase.NEW, Phase.TERMINATED):
            return
        result = self._watchdog.tick(ev.now, early=ev.early, busy=ev.busy, seen=ev.seen)
        for child_id in result.hung:
            c = self._children[child_id]
            c.state, c.kill_reason = ChildState.KILLING, "hung"
            self._log("child_hung", "warning", c.id, "hung", ev.cause,
                      timeout=self._watchdog.timeout)
            self._out.append(KillChild(child_id=c.id, ref=c.ref, reason="hung", cause=ev.cause))
        for ping in result.pings:
            ref = self._children[ping.child_id].ref
            self._out.append(Ping(child_id=ping.child_id, seq=ping.seq, ref=ref, cause=ev.cause))
        if result.hung:
            self._pump(ev.cause)

    def _on_pong(self, ev: Pong) -> None:
        if self._watchdog is not None:
            self._watchdog.pong(ev.child_id, ev.seq, ev.now)

    _HANDLERS: dict[type, Any] = {
        Init: _on_init,
        ChildStarted: _on_started,
        StartFailed: _on_start_failed,
        ChildExited: _on_exited,
        ShutdownRequested: _on_shutdown,
        AddChild: _on_add,
        RemoveChild: _on_remove,
        WatchdogTick: _on_tick,
        Pong: _on_pong,
    }

    # ------------------------------------------------------------ decisions

    def _restart(self, c: _Child, reason: str, now: float, cause: str, *,
                 charged: bool = True) -> None:
        """`c` (idle) must be restarted: count it (if `charged`), then plan per the strategy."""
        if charged and self._window.add(now) is Decision.ESCALATE:
            self._log("reached_max_restart_intensity", "error", c.id, reason, cause,
                      intensity=self.flags.intensity, period=self.flags.period)
            self._terminate(Escalate(reason="reached_max_restart_intensity", child_id=c.id,
                                     cause=cause, detail=reason), cause)
            return
        self._restarts += 1
        ids = list(self._children)
        strategy = self.flags.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            group = [c]
        elif strategy is Strategy.ONE_FOR_ALL:
            group = list(self._children.values())
        else:
            group = [self._children[i] for i in ids[ids.index(c.id):]]
        for g in group:
            if g.forget:
                continue  # already on its way out
            if g is not c and g.alive:
                self._to_stop.add(g.id)
                if g.spec.restart is Restart.TEMPORARY:
                    g.forget = True  # OTP drops temporary children it terminates
                    self._to_start.discard(g.id)
                    continue
            if g.spec.restart is Restart.TEMPORARY and g.starts > 0:
                continue
            self._to_start.add(g.id)

    def _terminate(self, final: Command, cause: str) -> None:
        """Stop every child in reverse order, then issue `final`."""
        self._phase = Phase.TERMINATING
        self._final = final
        for c in list(self._children.values()):
            if c.adding is not None and not c.alive:
                self._reply_add(c, False, "shutdown", cause)
                self._delete(c)
        self._to_start.clear()
        self._to_stop = {c.id for c in self._children.values() if c.alive}

    def _pump(self, cause: str) -> None:
        """Issue what the plan allows now, then finish the current phase if it is done."""
        if self._phase in (Phase.NEW, Phase.TERMINATED):
            return
        done = self._issue_all(cause) if self.flags.independent else self._issue_next(cause)
        if not done:
            return
        if self._phase is Phase.STARTING:
            self._phase = Phase.RUNNING
        elif self._phase is Phase.TERMINATING and not any(
                c.alive for c in self._children.values()):
            self._phase = Phase.TERMINATED
            assert self._final is not None
            self._out.append(self._final)

    def _issue_next(self, cause: str) -> bool:
        """OTP's order: issue the plan's next operation, if none is in flight; True when the
        plan is done (nothing in flight, nothing left but what waits for a hung child)."""
        kids = list(self._children.values())
        if any(c.state in (ChildState.STARTING, ChildState.STOPPING) for c in kids):
            return False
        for c in reversed(kids):
            if c.id not in self._to_stop:
                continue
            if c.state is ChildState.RUNNING:
                self._issue_stop(c, cause)
                return False
            if c.state is ChildState.KILLING:
                return False  # wait for it: stops are ordered
            self._to_stop.discard(c.id)
        for c in kids:
            if c.id not in self._to_start:
                continue
            if c.state is ChildState.IDLE:
                self._issue_start(c, cause)
                return False
            if c.state is ChildState.KILLING:
                return False
            self._to_start.discard(c.id)
        return True

    def _issue_all(self, cause: str) -> bool:
        """Independent children: issue every stop and start the plan allows at once, each
        waiting only for its own child (a child due to stop that is still starting is stopped
        once it runs; one due to start that is still stopping is started once it is gone).
        True when no start is pending or in flight (the initial children's start is done)."""
        kids = list(self._children.values())
        for c in reversed(kids):
            if c.id not in self._to_stop:
                continue
            if c.state is ChildState.RUNNING:
                self._issue_stop(c, cause)
            elif c.state is ChildState.IDLE:
                self._to_stop.discard(c.id)
        for c in kids:
            if c.id not in self._to_start:
                continue
            if c.state is ChildState.IDLE:
                self._issue_start(c, cause)
            elif c.state in (ChildState.STARTING, ChildState.RUNNING):
                self._to_start.discard(c.id)
        return not self._to_start and not any(c.state is ChildState.STARTING for c in kids)

    def _issue_stop(self, c: _Child, cause: str) -> None:
        c.state = ChildState.STOPPING
        self._out.append(StopChild(child_id=c.id, shutdown=c.spec.shutdown, ref=c.ref,
                                   cause=cause))

    def _issue_start(self, c: _Child, cause: str) -> None:
        c.state = ChildState.STARTING
        self._to_start.discard(c.id)
        self._out.append(StartChild(spec=c.spec, cause=cause))

    # ------------------------------------------------------------ helpers

    def _forget(self, c: _Child, cause: str) -> None:
        for request in c.removing:
            self._out.append(Reply(request=request, ok=True, child_id=c.id, cause=cause))
        self._delete(c)

    def _delete(self, c: _Child) -> None:
        self._to_stop.discard(c.id)
        self._to_start.discard(c.id)
        del self._children[c.id]

    def _reply_add(self, c: _Child, ok: bool, reason: str | None, cause: str) -> None:
        if c.adding is not None:
            self._out.append(Reply(request=c.adding, ok=ok, child_id=c.id, reason=reason,
                                   cause=cause))
            c.adding = None

    def _log(self, event: str, level: str, child_id: str | None, reason: str | None,
             cause: str, **extra: Any) -> None:
        self._out.append(Log(event=event, level=level, supervisor=self.name, child_id=child_id,
                             reason=reason, extra=tuple(extra.items()), cause=cause))

    def _unexpected(self, ev: Event) -> None:
        self._log("unexpected_event", "warning", getattr(ev, "child_id", None),
                  type(ev).__name__, ev.cause)

    def __repr__(self) -> str:
        states = ", ".join(f"{c.id}={c.state}" for c in self._children.values())
        return f"<SupervisorCore {self.name} {self._phase} [{states}]>"


def _concerns(item: Event | Command, child_id: str) -> bool:
    if getattr(item, "child_id", None) == child_id:
        return True
    spec = getattr(item, "spec", None)
    return getattr(spec, "id", None) == child_id
