"""The Thespian shell of a supervisor: carries out what `SupervisorCore` decides.

The core (pyproof.supervision.core) decides restarts, strategies, escalation
and hang detection; this shell turns its commands into actor operations:
create a child and send its init message, ask it to exit, SIGKILL its process
tree, ping it. Thespian tells us when a child process ends
(`ChildActorExited`); an exit we did not ask for is abnormal.

Subclasses customise with three hooks: `child_init` (fill in the init message
just before a start, e.g. with a sibling's address), `on_child_started` and
`on_child_exited`, plus `on_running` when every child is up.

`parallel_start = True` (a session's supervisor) creates every initial child
at once, so their processes start side by side instead of one after another.
The core still sees them start in list order, one at a time, as in OTP: a
child created early is only handed to the core when the core asks to start
it (its `Started`, if already in, is replayed then). One that fails or exits
before that is dropped and started afresh the ordinary way, so the core sees
exactly what a serial start would have shown it. Only for children whose
init needs nothing from an earlier sibling (`child_init` runs early too).
"""

from __future__ import annotations

import importlib
import itertools
import signal
import time
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ChildActorExited, WakeupMessage

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.logs import get_logger
from pyproof.supervision import core as sc
from pyproof.supervision import events as ev
from pyproof.supervision import heartbeat
from pyproof.supervision.process_tree import (
    is_alive,
    kill_tree,
    run_wait,
    start_time,
    state_and_cpu,
)
from pyproof.supervision.spec import SupervisorSpec
from pyproof.supervision.watchdog import LOOK_INTERVAL, CpuSample, Seen, progress

TICK = 0.25  # deadlines and the watchdog need no finer grain than this...
# ...and an idle supervisor wakes only when something is due, at most this late: children
# its watchdog vouches for (heartbeats) are looked at this often, and nothing else is due
TICK_MAX = LOOK_INTERVAL
PING_EARLY = TICK  # children's pings due within this are sent together (one wake-up a round)
TREE_TIMEOUT = 2.0
EXIT_NOTICE_TIMEOUT = 2.0
WAKE_SLACK = 0.01


def import_actor(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _last_child_process(actor: Any) -> Any:
    """The multiprocessing Process of the child `createActor` just forked (thespian 4.0.1
    keeps them in its actor manager's `_child_procs`): how we learn a child's exit status,
    which ChildActorExited does not carry. None if that ever changes."""
    procs = getattr(getattr(actor, "_myRef", None), "_child_procs", None)
    return getattr(procs[-1], "childProc", None) if procs else None


def exit_code(process: Any) -> int | None:
    """A dead child's exit status (negative: killed by that signal), None if unknown."""
    if process is None:
        return None
    try:
        return process.exitcode
    except Exception:  # not our child any more, or Thespian reaped it another way
        return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class SupervisorActor(ProofActor):
    """A generic supervisor; start it by sending `Supervise`-like `supervise(spec)`.

    A child may also be adopted rather than created (`m.AdoptStart`): an actor
    that already runs, found in the durable session registry after the
    supervisor that created it died. Thespian reports exits only to a child's
    creator, so an adopted child's exit is noticed by its pid on each tick.
    """

    spare_sessions = False
    """True in control supervisors: killing a child's tree spares the sessions under it."""

    parallel_start = False  # create every initial child at once (see the module docstring)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.core: sc.SupervisorCore | None = None
        self.refs: dict[str, Any] = {}          # child id -> actor address
        self.pids: dict[str, int] = {}
        self.starting: dict[str, float] = {}    # child id -> start deadline
        self.stopping: dict[str, float | None] = {}  # child id -> kill deadline
        self.kill_reasons: dict[str, str] = {}
        self.killed: dict[str, tuple[int, float]] = {}  # child id -> (pid, give-up time)
        self.requests: dict[str, Any] = {}      # AddChild cause -> requester
        self.trees: dict[str, dict[str, Any]] = {}
        self._wake_at: float | None = None  # when the pending wake-up is due
        self._wake_ids = itertools.count()
        self._wake_id = -1  # the pending wake-up's payload; older ones are superseded
        self._corr = itertools.count()
        self._announced = False
        self.exiting = False  # we got ActorExitRequest: children's exits are our shutdown
        # children created ahead of the core's StartChild (parallel_start):
        # child id -> {"ref", "started": (pid, info) | None, "failed": bool}
        self.early: dict[str, dict[str, Any]] = {}
        self._deferred: list[Any] = []  # events for the core, after the current commands
        self.adopted: dict[str, tuple[int, int | None]] = {}  # child id -> (pid, start time)
        self.processes: dict[str, Any] = {}  # child id -> Thespian's Process object
        self.exit_codes: dict[str, int | None] = {}  # child id -> its last exit status
        self.cpu_samples: dict[str, CpuSample] = {}  # child id -> its last look in /proc
        # child id -> (pid, its heartbeat page or None: not found, ping it as before)
        self.watchers: dict[str, tuple[int, heartbeat.Watcher | None]] = {}
        # child id -> (seen, why busy: "cpu", "starved" or None)
        self.last_looks: dict[str, tuple[Seen | None, str | None]] = {}

    # -- hooks --------------------------------------------------------------
    def child_init(self, child_id: str, init: Any) -> Any:
        return init

    def on_child_started(self, child_id: str, ref: Any, pid: int, info: dict) -> None:
        pass

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        pass

    def on_running(self) -> None:
        pass

    def on_gone(self, final: ev.Escalate | ev.Exit) -> None:
        """About to exit: `final` says why (an `Escalate` names the child and its error)."""

    def receive_other(self, message: Any, sender: Any) -> None:
        pass

    def on_exit(self) -> None:
        """This supervisor is being stopped; its children are already killed."""

    def charged(self, child_id: str, exit_code: int | None, reason: str, now: float) -> bool:
        """Whether an exit counts against our restart intensity (see `ev.ChildExited`)."""
        return True

    def on_tick(self, now: float) -> None:
        """Called on every timer tick (at least once a second; more often while something is
        due) with the monotonic time."""

    # -- driving the core ---------------------------------------------------
    def supervise(self, spec: SupervisorSpec) -> None:
        self.core = sc.SupervisorCore.from_spec(spec)
        if self.parallel_start:
            for child in spec.children:
                self._create_early(child)
        self.run(ev.Init(now=time.monotonic()))
        self._ensure_tick()

    def run(self, *events: Any) -> None:
        assert self.core is not None
        for command in self.core.handle(*events):
            self.execute(command)
        while self._deferred:  # an early child's Started, replayed once the core asked
            self._deferred.pop(0)()
        if not self._announced and self.core.phase == sc.Phase.RUNNING:
            self._announced = True
            self.on_running()

    def execute(self, command: Any) -> None:
        log = get_logger()
        if isinstance(command, ev.StartChild):
            self._start(command.spec)
        elif isinstance(command, ev.StopChild):
            ref = self.refs.get(command.child_id)
            self.stopping[command.child_id] = None
            if command.shutdown.is_brutal_kill or ref is None:
                self._kill(command.child_id, "shutdown")
            else:
                self.send(ref, ActorExitRequest())
                if not command.shutdown.is_infinity:
                    self.stopping[command.child_id] = (
                        time.monotonic() + (command.shutdown.seconds or 0.0))
        elif isinstance(command, ev.KillChild):
            self.kill_reasons[command.child_id] = command.reason
            if command.reason == "hung":  # what the watchdog went by, for whoever debugs it
                view, busy = self.last_looks.get(command.child_id, (None, None))
                sample = self.cpu_samples.get(command.child_id)
                log.warning("hung_child_seen", supervisor=self.core.name if self.core else None,
                            child_id=command.child_id, heartbeat=view is not None,
                            in_handler_for=None if view is None or view.entered is None
                            else round(time.monotonic() - view.entered, 3),
                            stopped=view is not None and view.stopped, busy=busy,
                            cpu_ticks=None if sample is None else sample.cpu,
                            run_wait_ns=None if sample is None else sample.waited,
                            state=None if sample is None else sample.state)
            self._kill(command.child_id, command.reason)
        elif isinstance(command, ev.Ping):
            self.send(command.ref, m.PingChild(seq=command.seq))
        elif isinstance(command, ev.Reply):
            requester = self.requests.pop(command.request, None)
            if requester is not None:
                self.reply_added(requester, command)
        elif isinstance(command, ev.Log):
            getattr(log, command.level, log.info)(command.event, **command.fields())
        elif isinstance(command, ev.Escalate | ev.Exit):
            self.on_gone(command)
            self.send(self.myAddress, ActorExitRequest())

    def reply_added(self, requester: Any, reply: ev.Reply) -> None:
        pass

    def _create_early(self, spec: Any) -> None:
        start: m.ActorStart = spec.start
        ref = self.createActor(import_actor(start.actor))
        # its Process object: the exit status when it dies (local faults: charged())
        self.early[spec.id] = {"ref": ref, "started": None, "failed": False,
                               "process": _last_child_process(self)}
        self.send(ref, self.child_init(spec.id, start.init))

    def _adopt_early(self, spec: Any) -> bool:
        """Hand the core the child created early for `spec`, if it is still sound."""
        early = self.early.pop(spec.id, None)
        if early is None:
            return False
        if early["failed"]:  # it failed or exited before the core asked: start afresh
            return False
        ref = early["ref"]
        self.refs[spec.id] = ref
        self.processes[spec.id] = early["process"]
        self.pids.pop(spec.id, None)
        self.starting[spec.id] = time.monotonic() + spec.start.start_timeout
        if early["started"] is not None:
            pid, info = early["started"]

            def replay() -> None:
                if spec.id in self.starting and self.refs.get(spec.id) == ref:
                    self._started(spec.id, ref, pid, info)

            self._deferred.append(replay)
        return True

    def _early_of(self, ref: Any) -> str | None:
        for child_id, early in self.early.items():
            if early["ref"] == ref:
                return child_id
        return None

    def _drop_early(self, child_id: str) -> None:
        """An early child failed before the core asked for it: stop it, start afresh later."""
        early = self.early[child_id]
        early["failed"] = True
        if early["started"] is not None:
            kill_tree(early["started"][0], reap=False)
        else:
            self.send(early["ref"], ActorExitRequest())

    def _start(self, spec: Any) -> None:
        if self._adopt_early(spec):
            return
        start: m.ActorStart = spec.start
        if isinstance(start, m.AdoptStart):
            from pyproof.actors.registry import address_from_wire

            ref = address_from_wire(start.address)
            self.refs[spec.id] = ref
            self.pids.pop(spec.id, None)
            self.adopted[spec.id] = (start.pid, start_time(start.pid))
            self.starting[spec.id] = time.monotonic() + start.start_timeout
            self.send(ref, m.Adopt(session_id=spec.id))
            return
        ref = self.createActor(import_actor(start.actor))
        self.processes[spec.id] = _last_child_process(self)
        self.refs[spec.id] = ref
        self.pids.pop(spec.id, None)
        self.starting[spec.id] = time.monotonic() + start.start_timeout
        self.send(ref, self.child_init(spec.id, start.init))

    def _kill(self, child_id: str, reason: str) -> None:
        pid = self.pids.get(child_id)
        ref = self.refs.get(child_id)
        if pid is None and child_id in self.adopted:
            pid = self.adopted[child_id][0]
        if pid is not None:
            # Thespian reaps it and tells us ChildActorExited (not for an adopted child:
            # it is not ours, so its death is taken as its exit at the next tick)
            kill_tree(pid, reap=False, spare_sessions=self.spare_sessions)
            notice = 0.0 if child_id in self.adopted else EXIT_NOTICE_TIMEOUT
            self.killed[child_id] = (pid, time.monotonic() + notice)
        elif ref is not None:
            self.send(ref, ActorExitRequest())

    def _ensure_tick(self) -> None:
        """Have a wake-up pending for the next thing due (an earlier one supersedes)."""
        if self.core is None or self.core.phase == sc.Phase.TERMINATED:
            return
        now = time.monotonic()
        delay = self._next_tick_delay(now)
        if self._wake_at is None or now + delay < self._wake_at - WAKE_SLACK:
            self._wake_at = now + delay
            self._wake_id = next(self._wake_ids)
            self.wakeupAfter(timedelta(seconds=delay), payload=self._wake_id)

    def _next_tick_delay(self, now: float) -> float:
        """Seconds until the next deadline or watchdog ping, within [TICK, TICK_MAX].

        An idle supervisor then wakes once per look at its children (once a second when
        their heartbeats vouch for them), and no deadline is seen later than before: each
        is at most TICK late.
        """
        due = [*self.starting.values(), *(d for d in self.stopping.values() if d is not None),
               *(give_up for _, give_up in self.killed.values()),
               *(pending["deadline"] for pending in self.trees.values())]
        if self.core is not None and (tick := self.core.next_tick()) is not None:
            due.append(tick)
        if not due:
            return TICK_MAX
        return min(max(min(due) - now, TICK), TICK_MAX)

    def _on_tick(self) -> None:
        self._wake_at = None  # this wake-up is spent
        now = time.monotonic()
        for child_id, deadline in list(self.starting.items()):
            if now > deadline:
                del self.starting[child_id]
                if self.adopted.pop(child_id, None) is not None:
                    # an adoption nobody answered: not our process to kill (the pid
                    # may be a stranger's by now); the caller cleans up its entry
                    self.refs.pop(child_id, None)
                else:
                    self._kill(child_id, "start timeout")
                self.run(ev.StartFailed(child_id=child_id, reason="start timeout", now=now))
        for child_id, deadline in list(self.stopping.items()):
            if deadline is not None and now > deadline:
                self.stopping[child_id] = None
                self._kill(child_id, "shutdown timeout")
        for child_id, (pid, give_up) in list(self.killed.items()):
            # Thespian does not always report the exit of a child we SIGKILLed: a dead
            # process with no notice by the deadline is taken as exited
            ref = self.refs.get(child_id)
            if ref is None or self.pids.get(child_id) != pid:
                del self.killed[child_id]
            elif now > give_up and not is_alive(pid):
                if child_id not in self.adopted:
                    get_logger().warning("exit_notice_missing", child_id=child_id, pid=pid)
                self._child_exited(ref)
        for child_id, (pid, started) in list(self.adopted.items()):
            ref = self.refs.get(child_id)
            if ref is not None and child_id not in self.killed and (
                    not is_alive(pid) or start_time(pid) != started):
                get_logger().warning("adopted_child_gone", child_id=child_id, pid=pid)
                self._child_exited(ref)
        self.on_tick(now)
        for corr, pending in list(self.trees.items()):
            if now > pending["deadline"]:  # a frozen subtree: answer with what we have
                self._tree_done(corr)
        if self.core is not None and self.core.phase != sc.Phase.TERMINATED:
            busy, seen = self._look_at_children(now)
            self.run(ev.WatchdogTick(now=now, early=PING_EARLY, busy=busy, seen=seen))
            self._ensure_tick()

    def _look_at_children(self, now: float) -> tuple[frozenset[str], dict[str, Seen]]:
        """What we can see of each watched child without a message: whether its process
        used CPU, or waited on a run queue for one, since the last tick (busy: starved is
        not hung, watchdog.py `progress`), and its heartbeat page with its process state
        (seen; a child without a page is pinged as before). Stamps each page as looked at.
        """
        assert self.core is not None
        busy: dict[str, str] = {}
        seen: dict[str, Seen] = {}
        samples: dict[str, CpuSample] = {}
        for child_id in self.core.watched():
            pid = self.pids.get(child_id) or self.adopted.get(child_id, (None,))[0]
            stat = state_and_cpu(pid) if pid is not None else None
            if pid is None or stat is None:
                continue
            state, cpu = stat
            sample = samples[child_id] = CpuSample(pid=pid, cpu=cpu, waited=run_wait(pid),
                                                   state=state)
            why = progress(self.cpu_samples.get(child_id), sample)
            if why is not None:
                busy[child_id] = why
            watcher = self._watcher(child_id, pid)
            if watcher is not None:
                entered, wants_pings = watcher.read(now)
                seen[child_id] = Seen(entered=entered, stopped=state in ("T", "t"),
                                      wants_pings=wants_pings)
        self.cpu_samples = samples
        self.last_looks = {child_id: (seen.get(child_id), busy.get(child_id))
                           for child_id in samples}
        return frozenset(busy), seen

    def _watcher(self, child_id: str, pid: int) -> heartbeat.Watcher | None:
        """The heartbeat page of child `child_id` (process `pid`), mapped once per process.

        A child maps its page before it answers its start, so one not found
        then is not a pyproof actor (or not ours to read): it is pinged as before.
        """
        known = self.watchers.get(child_id)
        if known is not None and known[0] == pid:
            return known[1]
        self._drop_watcher(child_id)
        watcher = heartbeat.find(pid)
        self.watchers[child_id] = (pid, watcher)
        return watcher

    def _drop_watcher(self, child_id: str) -> None:
        known = self.watchers.pop(child_id, None)
        if known is not None and known[1] is not None:
            known[1].close()

    # -- Thespian messages --------------------------------------------------
    def receive(self, message, sender) -> None:
        self._receive(message, sender)
        if not isinstance(message, ActorExitRequest):
            # a pong, a start or a request may bring something due before the pending wake-up
            self._ensure_tick()

    def _receive(self, message, sender) -> None:
        if isinstance(message, WakeupMessage):
            if message.payload == self._wake_id:  # else superseded by an earlier one
                self._on_tick()
        elif isinstance(message, m.Started):
            child_id = self.child_of(sender)
            if child_id is None and (early := self._early_of(sender)) is not None:
                self.early[early]["started"] = (message.pid, message.info)
                return
            if child_id is None or child_id not in self.starting:
                return
            self._started(child_id, sender, message.pid, message.info)
        elif isinstance(message, m.StartError):
            if self.child_of(sender) is None and (early := self._early_of(sender)) is not None:
                self._drop_early(early)
                return
            child_id = self.child_of(sender)
            if child_id is None or child_id not in self.starting:
                return
            del self.starting[child_id]
            self._kill(child_id, "start error")
            self.run(ev.StartFailed(child_id=child_id, reason=message.reason,
                                    now=time.monotonic()))
        elif isinstance(message, m.PongChild):
            child_id = self.child_of(sender)
            if child_id is not None:
                self.run(ev.Pong(child_id=child_id, seq=message.seq, now=time.monotonic()))
        elif isinstance(message, ChildActorExited):
            early = self._early_of(message.childAddress)
            if early is not None and self.child_of(message.childAddress) is None:
                del self.early[early]  # gone before the core asked: it starts one afresh
                return
            self._child_exited(message.childAddress)
        elif isinstance(message, m.TreeRequest):
            self._tree_request(message, sender)
        elif isinstance(message, m.TreeReply):
            self._tree_reply(message)
        elif isinstance(message, ActorExitRequest):
            # we are being stopped: our children go first, in reverse start order, and
            # their exits are expected (Thespian exits this actor when we return)
            self.exiting = True
            for child_id in reversed(list(self.refs)):
                self.stopping[child_id] = None
                pid = (self.pids.get(child_id) or self.adopted.get(child_id, (None,))[0]
                       or getattr(self.processes.get(child_id), "pid", None))  # still starting
                if pid is not None:
                    kill_tree(pid, reap=False, spare_sessions=self.spare_sessions)
            for child_id in list(self.early):  # created early, never handed to the core
                if not self.early[child_id]["failed"]:
                    self._drop_early(child_id)
            self.on_exit()
            if self._forked_children_gone():
                # Thespian would now send each child an exit request and wait for its exit.
                # They are dead, and thespian 4.0.1 loses dead children there: its send-error
                # callback names the last child for every failed send, and handling one exit
                # drops the other dead processes unreported. We then sat out our supervisor's
                # shutdown timeout (5 s) in most closes. Its documented way out: not recursive.
                message.notRecursive()
        else:
            self.receive_other(message, sender)

    def _forked_children_gone(self) -> bool:
        """True if every process Thespian forked for us (children, early ones) is dead
        (a zombie counts), so that nothing is left for its recursive exit to stop."""
        forked = [*self.processes.values(), *(e["process"] for e in self.early.values())]
        return all(p is not None and not is_alive(p.pid) for p in forked)

    def _started(self, child_id: str, ref: Any, pid: int, info: dict) -> None:
        del self.starting[child_id]
        self.pids[child_id] = pid
        self.run(ev.ChildStarted(child_id=child_id, ref=ref, now=time.monotonic(), pid=pid))
        self.on_child_started(child_id, ref, pid, info)

    def child_of(self, ref: Any) -> str | None:
        """The id of the live child at `ref` (actor addresses are not hashable)."""
        for child_id, child_ref in self.refs.items():
            if child_ref == ref:
                return child_id
        return None

    def _child_exited(self, ref: Any) -> None:
        child_id = self.child_of(ref)
        if child_id is None:
            return
        del self.refs[child_id]
        self._drop_watcher(child_id)
        self.killed.pop(child_id, None)
        self.adopted.pop(child_id, None)
        pid = self.pids.pop(child_id, None)
        expected = child_id in self.stopping
        self.stopping.pop(child_id, None)
        reason = self.kill_reasons.pop(child_id, None) or ("shutdown" if expected else "crashed")
        code = exit_code(self.processes.pop(child_id, None))
        self.exit_codes[child_id] = code
        now = time.monotonic()
        if self.exiting:
            # Thespian reports our children's exits while we stop: an ordinary shutdown,
            # not a failure for the core to restart (it would log an error and restart)
            self.starting.pop(child_id, None)
            get_logger().info("child_terminated", supervisor=self.core.name if self.core
                              else None, child_id=child_id, reason=reason)
            self.on_child_exited(child_id, pid, reason)
            return
        if self.starting.pop(child_id, None) is not None:
            self.run(ev.StartFailed(child_id=child_id, reason=f"exited while starting ({reason})",
                                    now=now))
        else:
            charged = expected or self.charged(child_id, code, reason, now)
            if not charged:
                reason = f"{reason}: {describe_exit(code)}"
            self.run(ev.ChildExited(child_id=child_id, reason=reason, abnormal=not expected,
                                    now=now, ref=ref, charged=charged))
        self.on_child_exited(child_id, pid, reason)

    # -- the live tree (proofctl tree) ---------------------------------------
    def snapshot(self) -> dict[str, Any]:
        import os

        assert self.core is not None
        stats = self.core.statistics()
        children = []
        for child in stats.children:
            children.append({"id": child.id, "type": child.type, "state": child.state,
                             "pid": child.pid, "restarts": child.restarts,
                             "last_exit": child.last_exit})
        return {"name": stats.name, "pid": os.getpid(), "strategy": stats.strategy,
                "restarts": stats.restarts, "children": children}

    def _tree_request(self, message: m.TreeRequest, sender: Any) -> None:
        if self.core is None:
            self.send(message.reply_to or sender, m.TreeReply(corr=message.corr, tree={}))
            return
        corr = f"t{next(self._corr)}"
        tree = self.snapshot()
        subs = [c for c in self.core.statistics().children
                if c.type == "supervisor" and c.ref is not None]
        self.trees[corr] = {"tree": tree, "waiting": {c.id for c in subs},
                            "reply": (message.reply_to or sender, message.corr),
                            "deadline": time.monotonic() + TREE_TIMEOUT}
        if not subs:
            self._tree_done(corr)
            return
        for child in subs:
            self.send(child.ref, m.TreeRequest(corr=f"{corr}/{child.id}",
                                               reply_to=self.myAddress))

    def _tree_reply(self, message: m.TreeReply) -> None:
        corr, _, child_id = message.corr.partition("/")
        pending = self.trees.get(corr)
        if pending is None:
            return
        for child in pending["tree"]["children"]:
            if child["id"] == child_id:
                child["tree"] = message.tree
        pending["waiting"].discard(child_id)
        if not pending["waiting"]:
            self._tree_done(corr)

    def _tree_done(self, corr: str) -> None:
        pending = self.trees.pop(corr)
        to, their_corr = pending["reply"]
        self.send(to, m.TreeReply(corr=their_corr, tree=pending["tree"]))
