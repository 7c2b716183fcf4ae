"""The watchdog: pure hang detection by ping and deadline, with the time passed in.

A supervisor pings each watched child every `interval` seconds (one ping
outstanding at a time, each with its own sequence number so a late answer to
an old ping, or from an old incarnation, is never taken for a fresh one). A
child that has not answered a ping `timeout` seconds after it was sent is
declared hung: the supervisor kills its process tree and its strategy
applies.

A tick that comes very late (more than `timeout` after a deadline) means the
supervisor itself was frozen or busy, and the answer may be waiting in its
own mailbox: each outstanding ping then gets one fresh `timeout` before its
child is declared hung. So a supervisor resuming from a SIGSTOP does not
kill every child, and a hung child is still killed on the next tick after.

A child past its deadline that the shell reports `busy` (its process used
CPU since the ping: a large merge holds Python's GIL in one C call for
seconds, and the actor thread cannot answer) gets another `timeout`, for up
to `max_busy` seconds after the ping; a deadlocked or frozen child uses no
CPU and is declared hung on time. A child that was runnable but waited for a
CPU (its run-queue wait grew: the machine is overloaded, 33 runnable processes
on 2 cores) is starved, not hung, and counts as busy too (`progress`): killing
it would only add the load of its restart. A child blocked in a sleep or a lock,
or frozen, neither runs nor waits for a CPU, so it is still declared hung on time.

Pings cost both processes a wake-up, so when the shell can see a child
without asking it (`Seen`: its heartbeat page says whether its actor thread
is inside a message handler and since when, /proc whether it is frozen), a
ping falls due only when that view cannot vouch for the child: it is frozen,
or has been in one handler for `interval` or more, or asks for pings, or
`quiet_interval` has passed since its last answer (so the whole path,
Thespian's transport included, is still checked now and then). A child pinged
because it is stuck in a handler gets its deadline counted from when that
handler began (as if pinged at the round after it began: it could not have
answered meanwhile); a frozen one from the last time it was seen fine (it
froze after that); either way never less than `interval` from the ping. So
hang detection stays within `timeout + interval` of the hang, as with a ping
every `interval`, even though a
child that looks fine is only looked at again `look_interval` later (each
look is a wake-up of the supervisor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

__all__ = ["LOOK_INTERVAL", "MAX_BUSY", "QUIET_INTERVAL", "CpuSample", "PingDue", "Seen",
           "TickResult", "Watchdog", "WatchState", "progress"]

MAX_BUSY = 120.0  # seconds a busy child may leave a ping unanswered
QUIET_INTERVAL = 10.0  # a child that looks fine is still pinged this often
LOOK_INTERVAL = 1.0  # ...and looked at (its heartbeat read) this often


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """What the shell saw of a child without asking it (heartbeat page and /proc)."""

    entered: float | None = None
    """When its current message handler began; None between messages."""
    stopped: bool = False
    """Frozen (SIGSTOP, a debugger): it cannot answer anything."""
    wants_pings: bool = False
    """It asks to be pinged every interval anyway (its health is more than its thread)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuSample:
    """One look at a child's process in /proc, taken by the shell at each tick."""

    pid: int
    cpu: int
    """CPU time used (all threads), in clock ticks."""
    waited: int | None = None
    """Time its main (actor) thread spent runnable on a run queue waiting for a CPU, in
    ns (/proc/PID/schedstat); None where the kernel does not say."""
    state: str = "S"
    """Its state letter ('R' runnable, 'S' asleep, 'T' stopped...)."""


def progress(before: CpuSample | None, after: CpuSample) -> str | None:
    """Why the child counts as working between two looks, or None (it may be hung).

    "cpu": it used CPU. "starved": it wanted a CPU but waited for one: its run-queue
    wait grew, or it was runnable ('R') at both looks (the kernel adds a wait to the
    count only once the thread gets the CPU, so one starved all along shows no growth,
    only its state): an overloaded machine, not a hang. None: a new process (another
    pid), a first look, or neither: blocked, asleep or frozen (a hang).
    """
    if before is None or before.pid != after.pid:
        return None
    if after.cpu > before.cpu:
        return "cpu"
    if after.state in ("T", "t", "Z", "X"):
        return None
    if before.waited is not None and after.waited is not None and after.waited > before.waited:
        return "starved"
    return "starved" if before.state == after.state == "R" else None


@dataclass(frozen=True, slots=True, kw_only=True)
class PingDue:
    child_id: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TickResult:
    pings: tuple[PingDue, ...] = ()
    """Pings to send now."""
    hung: tuple[str, ...] = ()
    """Children that missed their deadline; they are no longer watched."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchState:
    """A frozen view of one watched child."""

    next_ping: float
    seq: int | None
    sent: float | None
    deadline: float | None
    last_pong: float | None


@dataclass(slots=True)
class _Watch:
    next_ping: float
    since: float = 0.0  # when watching began: the quiet interval counts from here at first
    fine_at: float = 0.0  # when it was last seen fine (an answer, or a look that vouched)
    seq: int | None = None
    sent: float | None = None
    deadline: float | None = None
    grace_used: bool = False
    last_pong: float | None = None


@dataclass(slots=True)
class Watchdog:
    """Ping bookkeeping for the children of one supervisor."""

    interval: float
    timeout: float
    max_busy: float = MAX_BUSY
    quiet_interval: float = QUIET_INTERVAL
    look_interval: float = LOOK_INTERVAL
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _seq: int = 0

    def watch(self, child_id: str, now: float) -> None:
        """Start watching a child that just started; its first ping is due at now + interval."""
        self._watches[child_id] = _Watch(next_ping=now + self.interval, since=now, fine_at=now)

    def unwatch(self, child_id: str) -> None:
        """Stop watching (the child is stopping, exited or removed). Unknown ids are ignored."""
        self._watches.pop(child_id, None)

    def watching(self, child_id: str) -> bool:
        return child_id in self._watches

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watches)

    def pong(self, child_id: str, seq: int, now: float) -> bool:
        """A child answered ping `seq`: True if that was its outstanding ping (else stale)."""
        w = self._watches.get(child_id)
        if w is None or w.seq is None or w.seq != seq:
            return False
        w.seq = w.sent = w.deadline = None
        w.grace_used = False
        w.last_pong = w.fine_at = now
        return True

    def waiting(self) -> list[str]:
        """Children with a ping outstanding (the shell samples their CPU time for `busy`)."""
        return [child_id for child_id, w in self._watches.items() if w.deadline is not None]

    def tick(self, now: float, busy: frozenset[str] = frozenset(), *,
             early: float = 0.0, seen: Mapping[str, Seen] | None = None) -> TickResult:
        """Pings due at `now` (or within `early` seconds) and children that missed their
        deadline (unless `busy`: their process used CPU, or waited for one, since the last
        look (`progress`), up to max_busy after the ping).

        A ping sent early only shortens that child's interval, never its
        deadline: hang detection is as quick as before, or quicker. A child in
        `seen` that looks fine is not pinged (see the module docstring).
        """
        seen = seen or {}
        pings: list[PingDue] = []
        hung: list[str] = []
        for child_id, w in self._watches.items():
            if w.deadline is not None:
                if now < w.deadline:
                    continue
                if child_id in busy and w.sent is not None and now - w.sent < self.max_busy:
                    w.deadline = now + self.timeout  # working, not hung: more time
                    continue
                if now - w.deadline > self.timeout and not w.grace_used:
                    w.grace_used = True
                    w.deadline = now + self.timeout
                    continue
                hung.append(child_id)
            else:
                view = seen.get(child_id)
                alarm = view is not None and self._alarming(view, now)
                if view is not None and not alarm:
                    w.fine_at = now
                if not alarm and now < w.next_ping - early:
                    continue
                deadline = now + self.timeout
                if view is not None and not alarm and self._vouches(view, w, now):
                    w.next_ping = now + max(self.interval, self.look_interval)  # look again
                    continue
                if view is not None and view.stopped:  # it froze after it was last fine
                    deadline = max(w.fine_at + self.timeout, now + self.interval)
                elif view is not None and view.entered is not None:
                    # as if pinged at its next round after the handler began (the old
                    # rhythm: a handler always had timeout, up to timeout + interval)
                    deadline = max(view.entered + self.timeout + self.interval,
                                   now + self.interval)
                self._seq += 1
                w.seq, w.sent, w.deadline = self._seq, now, deadline
                w.next_ping = now + self.interval
                pings.append(PingDue(child_id=child_id, seq=self._seq))
        for child_id in hung:
            del self._watches[child_id]
        return TickResult(pings=tuple(pings), hung=tuple(hung))

    def _alarming(self, view: Seen, now: float) -> bool:
        """Frozen, or in one handler for an interval: ask it now, whatever the round."""
        return view.stopped or (view.entered is not None and now - view.entered >= self.interval)

    def _vouches(self, view: Seen, w: _Watch, now: float) -> bool:
        """Whether what the shell saw makes this round's ping needless."""
        if view.wants_pings:
            return False
        last = w.last_pong if w.last_pong is not None else w.since
        return now - last < self.quiet_interval

    def next_deadline(self) -> float | None:
        """When the next tick has something to do (a ping or a deadline), or None."""
        times = [w.deadline if w.deadline is not None else w.next_ping
                 for w in self._watches.values()]
        return min(times, default=None)

    def state(self, child_id: str) -> WatchState | None:
        w = self._watches.get(child_id)
        if w is None:
            return None
        return WatchState(next_ping=w.next_ping, seq=w.seq, sent=w.sent,
                          deadline=w.deadline, last_pong=w.last_pong)

    def validate(self) -> None:
        for child_id, w in self._watches.items():
            outstanding = (w.seq is not None, w.sent is not None, w.deadline is not None)
            assert len(set(outstanding)) == 1, (child_id, w)
            assert w.seq is None or w.seq <= self._seq, (child_id, w)
            assert w.grace_used is False or w.seq is not None, (child_id, w)
