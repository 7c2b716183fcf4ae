"""Independent children (`SupFlags(independent=True)`): every start and stop at once.

A supervisor of independent children (the sessions supervisor: one child per
user's session) must not hold a new child's start behind another child's
slow stop, as OTP's ordered supervisor does (one operation at a time). The
examples below pin the difference with concrete sequences; the hypothesis
machine `IndependentChildren` delivers the shell's answers in any order,
crashes and hangs processes, and checks after every event that each child's
start or stop was issued as soon as that child allowed it (never waiting for
another), that each child's own lifecycle stays sound (one start in flight,
its stop answered before it starts again), that every add and remove request
is answered exactly once, that the supervisor ends only when every child is
dead, and that restarts are counted against the intensity as OTP counts them.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyproof.supervision import (
    AddChild,
    ChildExited,
    ChildSpec,
    ChildStarted,
    ChildState,
    Escalate,
    Exit,
    Init,
    KillChild,
    Phase,
    Ping,
    Pong,
    RemoveChild,
    Reply,
    ShutdownRequested,
    StartChild,
    StartFailed,
    StopChild,
    SupervisorCore,
    SupFlags,
    WatchdogTick,
)

INTERVAL, TIMEOUT = 1.0, 0.5
PERIOD = 5.0
RESTARTS = ("permanent", "transient", "temporary")


def ops(commands) -> list[tuple[str, str | None]]:
    out = []
    for c in commands:
        if isinstance(c, StartChild | StopChild | KillChild):
            out.append((type(c).__name__, c.child_id))
        elif isinstance(c, Escalate | Exit):
            out.append((type(c).__name__, c.reason))
    return out


def replies(commands) -> list[tuple[str, bool, str | None]]:
    return [(c.request, c.ok, c.reason) for c in commands if isinstance(c, Reply)]


def make(ids=("a", "b", "c"), *, independent=True, intensity=3, watchdog=False, **restart):
    flags = SupFlags(intensity=intensity, period=PERIOD, independent=independent,
                     **({"ping_interval": INTERVAL, "ping_timeout": TIMEOUT} if watchdog
                        else {}))
    core = SupervisorCore(flags, [ChildSpec(id=i, start=i, restart=restart.get(i, "permanent"))
                                  for i in ids], name="sup")
    return core


def handle(core: SupervisorCore, *events) -> list:
    out = core.handle(*events)
    core.validate()
    return out


def up(core: SupervisorCore, now: float = 0.0) -> None:
    ids = core.child_ids()
    handle(core, Init(now=now))
    for i in ids:
        handle(core, ChildStarted(child_id=i, ref=f"{i}#1", now=now))
    assert core.phase is Phase.RUNNING


def session(sid: str, restart: str = "temporary") -> ChildSpec:
    return ChildSpec(id=sid, start=sid, restart=restart, type="supervisor", shutdown=5.0)


# ------------------------------------------------------------ flags


def test_independent_children_go_only_with_one_for_one():
    assert SupFlags(independent=True).independent is True
    assert SupFlags().independent is False  # OTP's order unless asked
    with pytest.raises(ValueError, match=r"^invalid strategy with independent=True: "
                                         r"'one_for_all' \(it restarts children together, so "
                                         r"they depend on each other and their order matters; "
                                         r"use one_for_one, or independent=False\)$"):
        SupFlags(strategy="one_for_all", independent=True)
    with pytest.raises(ValueError, match=r"^invalid strategy with independent=True: "
                                         r"'rest_for_one' "):
        SupFlags(strategy="rest_for_one", independent=True)
    with pytest.raises(ValueError, match=r"^invalid independent: 1$"):
        SupFlags(independent=1)


# ------------------------------------------------------------ concrete sequences


def test_every_initial_child_is_started_at_once_and_running_follows_the_last_start():
    core = make()
    assert ops(handle(core, Init(now=0))) == [("StartChild", "a"), ("StartChild", "b"),
                                              ("StartChild", "c")]
    assert core.phase is Phase.STARTING
    handle(core, ChildStarted(child_id="c", ref="c#1", now=0))
    handle(core, ChildStarted(child_id="a", ref="a#1", now=0))
    assert core.phase is Phase.STARTING
    assert ops(handle(core, ChildStarted(child_id="b", ref="b#1", now=0))) == []
    assert core.phase is Phase.RUNNING


def test_a_new_child_starts_while_the_stops_of_others_are_under_way():
    core = make(ids=())
    handle(core, Init(now=0))
    for sid in ("s1", "s2", "s3"):
        handle(core, AddChild(spec=session(sid), now=0, cause=f"open-{sid}"))
        handle(core, ChildStarted(child_id=sid, ref=f"{sid}#1", now=0))
    # two sessions close: both stops go out at once
    assert ops(handle(core, RemoveChild(child_id="s1", now=1, cause="close-s1"))) == [
        ("StopChild", "s1")]
    assert ops(handle(core, RemoveChild(child_id="s2", now=1, cause="close-s2"))) == [
        ("StopChild", "s2")]
    # a new session opens before either has exited: its start is not held up
    assert ops(handle(core, AddChild(spec=session("s4"), now=1, cause="open-s4"))) == [
        ("StartChild", "s4")]
    out = handle(core, ChildStarted(child_id="s4", ref="s4#1", now=1))
    assert replies(out) == [("open-s4", True, None)]
    assert core.state_of("s1") is core.state_of("s2") is ChildState.STOPPING
    out = handle(core, ChildExited(child_id="s2", reason="shutdown", abnormal=False, ref="s2#1",
                                   now=2))
    assert replies(out) == [("close-s2", True, None)] and ops(out) == []
    out = handle(core, ChildExited(child_id="s1", reason="shutdown", abnormal=False, ref="s1#1",
                                   now=2))
    assert replies(out) == [("close-s1", True, None)]
    assert core.child_ids() == ["s3", "s4"]


def test_an_ordered_supervisor_holds_the_new_child_until_every_stop_is_done():
    """The same sequence under OTP's order: what the sessions supervisor did before."""
    core = make(ids=(), independent=False)
    handle(core, Init(now=0))
    for sid in ("s1", "s2"):
        handle(core, AddChild(spec=session(sid), now=0, cause=f"open-{sid}"))
        handle(core, ChildStarted(child_id=sid, ref=f"{sid}#1", now=0))
    assert ops(handle(core, RemoveChild(child_id="s1", now=1, cause="close-s1"))) == [
        ("StopChild", "s1")]
    assert ops(handle(core, RemoveChild(child_id="s2", now=1, cause="close-s2"))) == []
    assert ops(handle(core, AddChild(spec=session("s3"), now=1, cause="open-s3"))) == []
    out = handle(core, ChildExited(child_id="s1", reason="shutdown", abnormal=False,
                                   ref="s1#1", now=2))
    assert ops(out) == [("StopChild", "s2")]
    out = handle(core, ChildExited(child_id="s2", reason="shutdown", abnormal=False,
                                   ref="s2#1", now=2))
    assert ops(out) == [("StartChild", "s3")]


def test_a_child_removed_while_it_starts_is_stopped_once_it_runs_and_answered_once():
    core = make(ids=())
    handle(core, Init(now=0))
    handle(core, AddChild(spec=session("s1"), now=0, cause="open"))
    out = handle(core, RemoveChild(child_id="s1", now=0, cause="close"))
    assert replies(out) == [("open", False, "removed")] and ops(out) == []
    assert core.state_of("s1") is ChildState.STARTING
    out = handle(core, ChildStarted(child_id="s1", ref="s1#1", now=1))
    assert ops(out) == [("StopChild", "s1")] and replies(out) == []
    out = handle(core, ChildExited(child_id="s1", reason="shutdown", abnormal=False, ref="s1#1",
                                   now=1))
    assert replies(out) == [("close", True, None)]
    assert core.child_ids() == []


def test_a_child_removed_while_its_start_fails_is_answered_once():
    core = make(ids=())
    handle(core, Init(now=0))
    handle(core, AddChild(spec=session("s1"), now=0, cause="open"))
    handle(core, RemoveChild(child_id="s1", now=0, cause="close"))
    out = handle(core, StartFailed(child_id="s1", reason="no luck", now=1))
    assert replies(out) == [("close", True, None)]
    assert core.child_ids() == []


def test_a_crashed_child_is_restarted_at_once_while_a_sibling_stops_and_the_restart_counts():
    core = make(intensity=1)
    up(core)
    assert ops(handle(core, RemoveChild(child_id="c", now=1, cause="rm"))) == [("StopChild", "c")]
    out = handle(core, ChildExited(child_id="a", reason="boom", abnormal=True, ref="a#1", now=1))
    assert ops(out) == [("StartChild", "a")]
    assert core.statistics().window == (1.0,)
    handle(core, ChildStarted(child_id="a", ref="a#2", now=1))
    # a second restart within the period is one too many: every live child is stopped at
    # once (c is still stopping), and the supervisor escalates when the last is gone
    out = handle(core, ChildExited(child_id="b", reason="boom", abnormal=True, ref="b#1", now=2))
    assert ops(out) == [("StopChild", "a")]
    assert core.phase is Phase.TERMINATING
    out = handle(core, ChildExited(child_id="a", reason="shutdown", abnormal=False, ref="a#2",
                                   now=2))
    assert ops(out) == [] and core.phase is Phase.TERMINATING
    out = handle(core, ChildExited(child_id="c", reason="shutdown", abnormal=False, ref="c#1",
                                   now=3))
    assert replies(out) == [("rm", True, None)]
    assert ops(out) == [("Escalate", "reached_max_restart_intensity")]
    assert core.phase is Phase.TERMINATED


def test_a_shutdown_stops_every_child_at_once_even_one_still_starting():
    core = make(ids=())
    handle(core, Init(now=0))
    for sid in ("s1", "s2"):
        handle(core, AddChild(spec=session(sid), now=0, cause=f"open-{sid}"))
        handle(core, ChildStarted(child_id=sid, ref=f"{sid}#1", now=0))
    handle(core, AddChild(spec=session("s3"), now=0, cause="open-s3"))
    out = handle(core, ShutdownRequested(now=1))
    assert ops(out) == [("StopChild", "s2"), ("StopChild", "s1")]
    out = handle(core, ChildExited(child_id="s1", reason="shutdown", abnormal=False, ref="s1#1",
                                   now=1))
    assert ops(out) == []
    out = handle(core, ChildStarted(child_id="s3", ref="s3#1", now=1))
    assert ops(out) == [("StopChild", "s3")] and replies(out) == [("open-s3", True, None)]
    handle(core, ChildExited(child_id="s3", reason="shutdown", abnormal=False, ref="s3#1", now=2))
    assert core.phase is Phase.TERMINATING  # s2 is still on its way out
    out = handle(core, ChildExited(child_id="s2", reason="shutdown", abnormal=False, ref="s2#1",
                                   now=2))
    assert ops(out) == [("Exit", "shutdown")]


def test_a_hung_child_being_killed_holds_up_no_other_child():
    core = make(watchdog=True)
    up(core)
    pings = [c for c in handle(core, WatchdogTick(now=1.0)) if isinstance(c, Ping)]
    assert sorted(p.child_id for p in pings) == ["a", "b", "c"]
    for p in pings:
        if p.child_id != "a":
            handle(core, Pong(child_id=p.child_id, seq=p.seq, now=1.0))
    out = handle(core, WatchdogTick(now=1.6))  # a never answered
    assert ("KillChild", "a") in ops(out) and core.state_of("a") is ChildState.KILLING
    assert ops(handle(core, RemoveChild(child_id="b", now=1.6, cause="rm"))) == [
        ("StopChild", "b")]
    assert ops(handle(core, AddChild(spec=session("d", "permanent"), now=1.6, cause="add"))) == [
        ("StartChild", "d")]
    out = handle(core, ChildExited(child_id="a", reason="killed", abnormal=True, ref="a#1",
                                   now=1.7))
    assert ops(out) == [("StartChild", "a")]  # hung: a failure, restarted like a crash


def test_a_failed_initial_start_escalates_once_the_children_already_started_are_stopped():
    core = make()
    handle(core, Init(now=0))
    handle(core, ChildStarted(child_id="a", ref="a#1", now=0))
    out = handle(core, StartFailed(child_id="b", reason="no luck", now=0))
    assert ops(out) == [("StopChild", "a")] and core.phase is Phase.TERMINATING
    assert ops(handle(core, ChildExited(child_id="a", reason="shutdown", abnormal=False,
                                        ref="a#1", now=0))) == []  # c still starts
    out = handle(core, ChildStarted(child_id="c", ref="c#1", now=0))
    assert ops(out) == [("StopChild", "c")]
    out = handle(core, ChildExited(child_id="c", reason="shutdown", abnormal=False, ref="c#1",
                                   now=0))
    assert ops(out) == [("Escalate", "failed_to_start_child")]


# ------------------------------------------------------------ the machine


def child_specs(n: int):
    return st.lists(st.tuples(st.sampled_from(RESTARTS), st.booleans()), min_size=n,
                    max_size=n).map(lambda rows: [
                        ChildSpec(id=f"c{i}", start=i, restart=r,
                                  shutdown="brutal_kill" if brutal else 1.0)
                        for i, (r, brutal) in enumerate(rows)])


class IndependentChildren(RuleBasedStateMachine):
    """The core of an independent supervisor, against a per-child model (see the docstring).

    The model knows, per child, only what the shell saw: a start in flight
    (`starting`), the incarnation the core was told runs (`current`), a stop or
    kill the core issued whose exit it has not yet been told (`stopping`); and
    the requests made: removals (`removing`), a shutdown or escalation
    (`terminating`). From these and OTP's rules it predicts each restart and
    the restart window.
    """

    @initialize(intensity=st.integers(0, 4), data=st.data())
    def setup(self, intensity, data):
        self.flags = SupFlags(intensity=intensity, period=PERIOD, ping_interval=INTERVAL,
                              ping_timeout=TIMEOUT, independent=True)
        self.specs = data.draw(st.integers(0, 4).flatmap(child_specs), label="children")
        self.now = 0.0
        self.serial = itertools.count(1)
        self.causes = itertools.count()
        self.fail: dict[str, int] = {}
        self.boot()

    def boot(self) -> None:
        self.core = SupervisorCore(self.flags, self.specs, name="sup")
        # the shell's processes
        self.alive: dict[str, str] = {}  # ref -> child id
        self.hung: set[str] = set()  # refs
        self.pending: list = []
        self.exits: list = []
        # what the core was told and asked for, per child
        self.starting: set[str] = set()
        self.current: dict[str, str] = {}  # child id -> the ref the core was told runs
        self.stopping: dict[str, str] = {}  # child id -> "stop" or "kill" not yet answered
        # the model
        self.records = {s.id: {"spec": s, "starts": 0, "dynamic": False} for s in self.specs}
        self.removing: set[str] = set()
        self.adding: dict[str, str] = {}  # child id -> its AddChild request
        self.terminating: str | None = None  # the final command's kind once decided
        self.window: list[float] = []
        self.requests: dict[str, str] = {}  # request -> "add" or "remove"
        self.answered: Counter[str] = Counter()
        self.feed(Init(now=self.now), starts=[s.id for s in self.specs])

    # -- the shell -------------------------------------------------------------
    def feed(self, event, *, starts=(), stops=()) -> list:
        """Hand `event` to the core, carry out its commands, and check that the starts and
        stops the model expects from it went out at once."""
        out = self.core.handle(event)
        self.core.validate()
        for cmd in out:
            self.carry_out(cmd)
        issued = ops(out)
        for cid in starts:
            assert ("StartChild", cid) in issued, (event, cid, issued)
        for cid in stops:
            assert ("StopChild", cid) in issued, (event, cid, issued)
        self.no_child_waits_for_another()
        return out

    def carry_out(self, cmd) -> None:
        now = self.now
        if isinstance(cmd, StartChild):
            cid = cmd.child_id
            assert cid not in self.starting, f"two starts of {cid} in flight"
            assert cid not in self.stopping, f"{cid} started before its stop was answered"
            assert cid not in self.current, f"{cid} started while the core thinks it runs"
            assert cid not in self.alive.values(), f"two incarnations of {cid}"
            self.starting.add(cid)
            if self.fail.get(cid, 0) > 0:
                self.fail[cid] -= 1
                self.pending.append(StartFailed(child_id=cid, reason="no luck", now=now))
                return
            ref = f"{cid}#{next(self.serial)}"
            self.alive[ref] = cid
            self.pending.append(ChildStarted(child_id=cid, ref=ref, now=now))
        elif isinstance(cmd, StopChild | KillChild):
            cid = cmd.child_id
            assert self.current.get(cid) == cmd.ref, (cmd, self.current.get(cid))
            if isinstance(cmd, StopChild):  # a kill may follow a stop (a hung child)
                assert cid not in self.stopping, f"{cid} stopped twice"
            self.stopping[cid] = "kill" if isinstance(cmd, KillChild) else "stop"
            if cmd.ref in self.alive:
                del self.alive[cmd.ref]
                polite = isinstance(cmd, StopChild) and not cmd.shutdown.is_brutal_kill and (
                    cmd.ref not in self.hung)
                self.pending.append(ChildExited(
                    child_id=cid, reason="shutdown" if polite else "killed",
                    abnormal=not polite, ref=cmd.ref, now=now))
        elif isinstance(cmd, Ping):
            if cmd.ref in self.alive and cmd.ref not in self.hung:
                self.pending.append(Pong(child_id=cmd.child_id, seq=cmd.seq, now=now))
        elif isinstance(cmd, Reply):
            assert cmd.request in self.requests, cmd
            self.answered[cmd.request] += 1
            assert self.answered[cmd.request] == 1, f"{cmd.request} answered twice"
        elif isinstance(cmd, Escalate | Exit):
            assert self.terminating == type(cmd).__name__, (cmd, self.terminating)
            assert not self.alive, f"{cmd} with live processes {self.alive}"
            assert not self.starting and not self.stopping and not self.current, cmd

    def no_child_waits_for_another(self) -> None:
        """What each child is due for went out: a child due to stop that runs is stopping;
        no child that ought to run sits idle waiting for its turn."""
        if self.core.phase is Phase.TERMINATED:
            return
        for cid in self.records:
            due_stop = cid in self.removing or self.terminating is not None
            if due_stop and cid in self.current:
                assert cid in self.stopping, f"{cid} due to stop, not stopped"
        for c in self.core.statistics().children:
            assert c.pending != "start", f"{c.id} waits to start"
            if c.pending in ("stop", "remove"):
                assert c.state != "running", f"{c.id} waits to stop"

    def deliverable(self) -> list[int]:
        seen, out = set(), []
        for i, event in enumerate(self.pending):
            key = getattr(event, "ref", None) or event.child_id
            if key not in seen:
                seen.add(key)
                out.append(i)
        return out

    # -- the model -------------------------------------------------------------
    def escalate_or_restart(self, cid: str, charged: bool, now: float) -> list[str]:
        """A restart of `cid` is due at `now`: count it; the starts expected at once."""
        if charged:
            self.window = [now] + [t for t in self.window if t >= now - PERIOD]
            if len(self.window) > self.flags.intensity:
                self.terminating = "Escalate"
                return []
        return [cid]

    def forget(self, cid: str) -> None:
        self.records.pop(cid, None)
        self.removing.discard(cid)
        self.adding.pop(cid, None)

    def delivered(self, event) -> None:
        """Predict what the core must do with `event`, then feed it."""
        starts: list[str] = []
        stops: list[str] = []
        if isinstance(event, ChildStarted):
            cid = event.child_id
            self.starting.discard(cid)
            self.current[cid] = event.ref
            self.records[cid]["starts"] += 1
            self.adding.pop(cid, None)
            if cid in self.removing or self.terminating:
                stops = [cid]
        elif isinstance(event, StartFailed):
            cid = event.child_id
            self.starting.discard(cid)
            record = self.records[cid]
            if cid in self.removing or (record["starts"] == 0 and record["dynamic"]):
                self.forget(cid)  # removed, or a failed add
            elif self.terminating:
                pass
            elif record["starts"] == 0:
                self.terminating = "Escalate"
            else:
                starts = self.escalate_or_restart(cid, True, event.now)
        elif isinstance(event, ChildExited):
            cid = event.child_id
            if self.current.get(cid) != event.ref:  # an older incarnation
                assert self.core.handle(event) == []
                return
            del self.current[cid]
            killed = self.stopping.pop(cid, None) == "kill"  # the watchdog's: a failure
            if cid in self.removing:
                self.forget(cid)
            elif self.terminating:
                pass
            else:
                restart = self.records[cid]["spec"].restart
                abnormal = event.abnormal or killed
                if restart == "permanent" or (restart == "transient" and abnormal):
                    starts = self.escalate_or_restart(cid, event.charged, event.now)
                elif restart == "temporary":
                    self.forget(cid)
        self.feed(event, starts=starts, stops=stops)

    # -- rules -----------------------------------------------------------------
    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def deliver(self, data):
        i = data.draw(st.sampled_from(self.deliverable()), label="deliver")
        event = self.pending.pop(i)
        if isinstance(event, ChildExited):
            self.exits.append(event)
        self.delivered(event)
        self.after()

    @precondition(lambda self: self.exits)
    @rule(data=st.data())
    def an_old_exit_is_reported_again(self, data):
        event = data.draw(st.sampled_from(self.exits), label="again")
        if self.current.get(event.child_id) == event.ref:
            return  # not old yet: its first report is still on its way
        before = self.core.statistics()
        assert self.core.handle(event) == []
        assert self.core.statistics() == before

    @precondition(lambda self: self.alive)
    @rule(data=st.data(), abnormal=st.booleans(), charged=st.booleans())
    def crash(self, data, abnormal, charged):
        ref = data.draw(st.sampled_from(sorted(self.alive)), label="crash")
        cid = self.alive.pop(ref)
        self.pending.append(ChildExited(child_id=cid, reason="boom" if abnormal else "normal",
                                        abnormal=abnormal, ref=ref, now=self.now,
                                        charged=charged))

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def hang(self, data):
        self.hung.add(data.draw(st.sampled_from(sorted(self.alive)), label="hang"))

    @rule(index=st.integers(0, 6), n=st.integers(1, 3))
    def fail_next_starts(self, index, n):
        cid = f"c{index}" if index < 4 else f"d{index - 4}"
        self.fail[cid] = self.fail.get(cid, 0) + n

    @rule(dt=st.sampled_from([0.1, 0.4, 1.0, 3.0]))
    def tick(self, dt):
        self.now += dt
        self.feed(WatchdogTick(now=self.now))
        self.after()

    @rule(restart=st.sampled_from(RESTARTS), index=st.integers(0, 2))
    def add_child(self, restart, index):
        cid = f"d{index}"
        spec = ChildSpec(id=cid, start="dyn", restart=restart, type="supervisor", shutdown=1.0)
        request = f"add-{next(self.causes)}"
        self.requests[request] = "add"
        if self.terminating or cid in self.records:
            out = self.feed(AddChild(spec=spec, now=self.now, cause=request))
            assert [r[:2] for r in replies(out)] == [(request, False)], out
        else:
            self.records[cid] = {"spec": spec, "starts": 0, "dynamic": True}
            self.adding[cid] = request
            self.feed(AddChild(spec=spec, now=self.now, cause=request), starts=[cid])
        self.after()

    @rule(data=st.data())
    def remove_child(self, data):
        cid = data.draw(st.sampled_from(sorted({*self.records, "c0", "d0"})), label="remove")
        request = f"rm-{next(self.causes)}"
        self.requests[request] = "remove"
        if cid not in self.records:
            out = self.feed(RemoveChild(child_id=cid, now=self.now, cause=request))
            assert replies(out) == [(request, False, "not_found")], out
        elif cid in self.starting or cid in self.current:
            # the remove reply comes with its exit; a pending add is answered now
            adding = self.adding.pop(cid, None)
            self.removing.add(cid)
            stops = [cid] if cid in self.current and cid not in self.stopping else []
            out = self.feed(RemoveChild(child_id=cid, now=self.now, cause=request), stops=stops)
            assert replies(out) == ([] if adding is None else [(adding, False, "removed")])
        else:  # idle: forgotten at once
            self.forget(cid)
            out = self.feed(RemoveChild(child_id=cid, now=self.now, cause=request))
            assert replies(out) == [(request, True, None)], out
        self.after()

    @rule()
    def shutdown(self):
        stops = [] if self.terminating else [
            cid for cid in self.current if cid not in self.stopping]
        self.terminating = self.terminating or "Exit"
        self.feed(ShutdownRequested(now=self.now), stops=stops)
        self.after()

    @rule()
    def settle(self):
        """Deliver everything, tick until hung children are gone: every request answered."""
        for _ in range(300):
            if self.pending:
                self.delivered(self.pending.pop(0))
                if self.after():
                    return
            elif self.hung & set(self.alive):
                self.now += TIMEOUT + INTERVAL
                self.feed(WatchdogTick(now=self.now))
            else:
                break
        assert not self.pending
        assert set(self.requests) == set(self.answered), set(self.requests) - set(self.answered)
        for c in self.core.statistics().children:
            assert c.pending is None and c.state in ("running", "idle"), c
            if c.restart == "permanent":
                assert c.state == "running", c

    def after(self) -> bool:
        """After the supervisor ended: every request was answered; the parent starts a new
        one. True if it did."""
        if self.core.phase is not Phase.TERMINATED:
            return False
        assert set(self.requests) == set(self.answered), set(self.requests) - set(self.answered)
        self.boot()
        return True

    # -- invariants ------------------------------------------------------------
    @invariant()
    def the_core_agrees_with_the_model(self):
        self.core.validate()
        assert sorted(self.core.child_ids()) == sorted(self.records)
        assert list(self.core.statistics().window) == self.window
        running = {i for i in self.core.child_ids()
                   if self.core.state_of(i) in (ChildState.RUNNING, ChildState.STOPPING,
                                                ChildState.KILLING)}
        assert running == set(self.current), (running, self.current)
        assert {i for i in self.core.child_ids()
                if self.core.state_of(i) is ChildState.STARTING} == self.starting
        cids = list(self.alive.values())
        assert len(cids) == len(set(cids)), f"two incarnations: {cids}"


TestIndependentChildren = IndependentChildren.TestCase
TestIndependentChildren.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
