"""Hypothesis state machines for the supervisor core.

`OtpEquivalence` drives the core through a shell that carries out every
command at once, which makes the core behave like OTP's synchronous
supervisor, and compares every start, stop, kill, escalation and log event
with `OtpModel`, a direct transcription of supervisor.erl's decisions
(do_restart, restart/2 per strategy, try_again, terminate_children,
add_restart, init failure).

`AsyncShell` delivers the shell's answers in any order, lets processes crash
at any time (even before their start is reported) and hang, and checks the
safety properties (for ordered and for independent children, whose own
machine is in test_supervision_independent.py): never two incarnations of a
child at once, every live process known to the core, nothing left alive after
the supervisor exits, and, once everything settles, every child that ought to
run runs.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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
    Log,
    Phase,
    Ping,
    Pong,
    RemoveChild,
    ShutdownRequested,
    StartChild,
    StartFailed,
    StopChild,
    SupervisorCore,
    SupFlags,
    WatchdogTick,
)

INTERVAL, TIMEOUT, STEP = 1.0, 0.5, 0.45
RESTARTS = ("permanent", "transient", "temporary")

SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def child_specs(n: int):
    return st.lists(
        st.tuples(st.sampled_from(RESTARTS), st.booleans()), min_size=n, max_size=n
    ).map(
        lambda rows: [
            ChildSpec(id=f"c{i}", start=i, restart=r, shutdown="brutal_kill" if brutal else 1.0)
            for i, (r, brutal) in enumerate(rows)
        ]
    )


# ====================================================================== the model


class OtpModel:
    """supervisor.erl's decisions, synchronous, one stimulus at a time."""

    def __init__(self, flags: SupFlags, specs: list[ChildSpec], fail: dict, hung: set) -> None:
        self.flags = flags
        self.children: list[dict] = [{"spec": s, "alive": False, "dynamic": False} for s in specs]
        self.window: list[float] = []  # newest first
        self.fail, self.hung = fail, hung
        self.ops: list = []
        self.logs: list = []
        self.dead = False

    # -- helpers
    def find(self, cid: str) -> dict | None:
        return next((c for c in self.children if c["spec"].id == cid), None)

    def start(self, c: dict) -> bool:
        cid = c["spec"].id
        self.ops.append(("StartChild", cid))
        if self.fail.get(cid, 0) > 0:
            self.fail[cid] -= 1
            self.logs.append(("start_error", cid))
            return False
        c["alive"] = True
        self.hung.discard(cid)
        self.logs.append(("child_started", cid))
        return True

    def terminate(self, c: dict) -> None:
        if not c["alive"]:
            return
        spec = c["spec"]
        self.ops.append(("StopChild", spec.id))
        if spec.id in self.hung and not spec.shutdown.is_brutal_kill:
            self.logs.append(("shutdown_error", spec.id))  # killed after its timeout
        self.hung.discard(spec.id)
        c["alive"] = False

    def terminate_children(self, children: list[dict]) -> None:
        """OTP's terminate_children: reverse order; temporary children are dropped."""
        for c in reversed(children):
            self.terminate(c)
            if c["spec"].restart == "temporary":
                self.children.remove(c)

    def give_up(self, final: tuple) -> None:
        for c in reversed(self.children):
            self.terminate(c)
        self.ops.append(final)
        self.dead = True

    def add_restart(self, now: float) -> bool:
        self.window = [now] + [t for t in self.window if t >= now - self.flags.period]
        return len(self.window) <= self.flags.intensity

    # -- stimuli
    def init(self) -> None:
        for c in self.children:
            if not self.start(c):
                self.give_up(("Escalate", "failed_to_start_child"))
                return

    def exit(self, cid: str, abnormal: bool, now: float) -> None:
        c = self.find(cid)
        assert c is not None and c["alive"]
        c["alive"] = False
        self.hung.discard(cid)
        restart = c["spec"].restart
        if restart == "permanent" or abnormal:
            self.logs.append(("child_terminated", cid))
        if restart == "permanent" or (restart == "transient" and abnormal):
            self.restart(c, now)
        elif restart == "temporary":
            self.children.remove(c)

    def restart(self, c: dict, now: float) -> None:
        while True:  # OTP's try_again loop
            if not self.add_restart(now):
                self.logs.append(("reached_max_restart_intensity", c["spec"].id))
                self.give_up(("Escalate", "reached_max_restart_intensity"))
                return
            strategy = self.flags.strategy
            if strategy == "one_for_one":
                if self.start(c):
                    return
                continue
            if strategy == "one_for_all":
                others = [o for o in self.children if o is not c]
            else:
                others = self.children[self.children.index(c) + 1 :]
            self.terminate_children(others)
            group = (
                self.children
                if strategy == "one_for_all"
                else self.children[self.children.index(c) :]
            )
            failed = next((g for g in list(group) if not self.start(g)), None)
            if failed is None:
                return
            c = failed

    def kill(self, cid: str, now: float) -> None:
        self.ops.append(("KillChild", cid))
        self.logs.append(("child_hung", cid))
        self.exit(cid, True, now)

    def add(self, spec: ChildSpec) -> None:
        if self.find(spec.id) is not None:
            return
        c = {"spec": spec, "alive": False, "dynamic": True}
        self.children.append(c)
        if not self.start(c):
            self.children.remove(c)

    def remove(self, cid: str) -> None:
        c = self.find(cid)
        if c is not None:
            self.terminate(c)
            self.children.remove(c)

    def shutdown(self) -> None:
        self.give_up(("Exit", "shutdown"))


# ====================================================================== the sync shell


class SyncShell:
    def __init__(self, core: SupervisorCore, fail: dict, hung: set) -> None:
        self.core, self.fail, self.hung = core, fail, hung
        self.now = 0.0
        self.refs: dict[str, str] = {}
        self.serial = itertools.count(1)

    def send(self, event) -> list:
        out, queue = [], deque([event])
        while queue:
            commands = self.core.handle(queue.popleft())
            self.core.validate()
            out.extend(commands)
            queue.extend(r for r in map(self.respond, commands) if r is not None)
        return out

    def respond(self, cmd):
        now = self.now
        if isinstance(cmd, StartChild):
            cid = cmd.child_id
            if self.fail.get(cid, 0) > 0:
                self.fail[cid] -= 1
                return StartFailed(child_id=cid, reason="no luck", now=now)
            self.hung.discard(cid)
            self.refs[cid] = f"{cid}#{next(self.serial)}"
            return ChildStarted(child_id=cid, ref=self.refs[cid], now=now)
        if isinstance(cmd, StopChild):
            hung = cmd.child_id in self.hung
            self.hung.discard(cmd.child_id)
            if cmd.shutdown.is_brutal_kill or hung:
                return ChildExited(
                    child_id=cmd.child_id, reason="killed", abnormal=True, ref=cmd.ref, now=now
                )
            return ChildExited(
                child_id=cmd.child_id, reason="shutdown", abnormal=False, ref=cmd.ref, now=now
            )
        if isinstance(cmd, KillChild):
            self.hung.discard(cmd.child_id)
            return ChildExited(
                child_id=cmd.child_id, reason="killed", abnormal=True, ref=cmd.ref, now=now
            )
        if isinstance(cmd, Ping) and cmd.child_id not in self.hung:
            return Pong(child_id=cmd.child_id, seq=cmd.seq, now=now)
        return None


def core_ops(commands) -> list:
    out = []
    for c in commands:
        if isinstance(c, StartChild | StopChild | KillChild):
            out.append((type(c).__name__, c.child_id))
        elif isinstance(c, Escalate | Exit):
            out.append((type(c).__name__, c.reason))
    return out


def core_logs(commands) -> Counter:
    return Counter((c.event, c.child_id) for c in commands if isinstance(c, Log))


class OtpEquivalence(RuleBasedStateMachine):
    @initialize(
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        intensity=st.integers(0, 3),
        period=st.sampled_from([1.0, 5.0, 10.0]),
        data=st.data(),
    )
    def setup(self, strategy, intensity, period, data):
        self.flags = SupFlags(
            strategy=strategy,
            intensity=intensity,
            period=period,
            ping_interval=INTERVAL,
            ping_timeout=TIMEOUT,
        )
        self.specs = data.draw(st.integers(1, 5).flatmap(child_specs), label="children")
        self.now = 0.0
        self.fresh = itertools.count()
        self.boot()

    def boot(self) -> None:
        self.shell_fail: dict[str, int] = {}
        self.model_fail: dict[str, int] = {}
        self.shell_hung: set[str] = set()
        self.model_hung: set[str] = set()
        self.hung_since: float | None = None
        self.dense = True
        self.core = SupervisorCore(self.flags, self.specs, name="sup")
        self.shell = SyncShell(self.core, self.shell_fail, self.shell_hung)
        self.shell.now = self.now
        self.model = OtpModel(self.flags, self.specs, self.model_fail, self.model_hung)
        self.step(Init(now=self.now), self.model.init)

    def step(self, event, model_action) -> list:
        self.model.ops, self.model.logs = [], []
        out = self.shell.send(event)
        model_action()
        assert core_ops(out) == self.model.ops, (event, core_ops(out), self.model.ops)
        assert core_logs(out) == Counter(self.model.logs), (event, out, self.model.logs)
        if self.model.dead:
            assert self.core.phase is Phase.TERMINATED
            self.boot()  # the parent restarts us
        return out

    def running(self) -> list[str]:
        return [i for i in self.core.child_ids() if self.core.state_of(i) is ChildState.RUNNING]

    def advance(self, dt: float) -> None:
        self.now += dt
        self.shell.now = self.now

    # -- rules
    @precondition(lambda self: self.running())
    @rule(data=st.data(), abnormal=st.booleans(), dt=st.sampled_from([0.0, 0.5, 2.0, 6.0]))
    def crash(self, data, abnormal, dt):
        cid = data.draw(st.sampled_from(self.running()), label="child")
        self.advance(dt)
        self.dense = False
        self.step(
            ChildExited(
                child_id=cid,
                reason="boom" if abnormal else "normal",
                abnormal=abnormal,
                ref=self.shell.refs[cid],
                now=self.now,
            ),
            lambda: self.model.exit(cid, abnormal, self.now),
        )

    @rule(index=st.integers(0, 7), n=st.integers(1, 3))
    def fail_next_starts(self, index, n):
        cid = f"c{index}" if index < 5 else f"d{index - 5}"
        self.shell_fail[cid] = self.shell_fail.get(cid, 0) + n
        self.model_fail[cid] = self.model_fail.get(cid, 0) + n

    @precondition(lambda self: self.running() and not self.shell_hung)
    @rule(data=st.data())
    def hang(self, data):
        cid = data.draw(st.sampled_from(self.running()), label="hung child")
        self.shell_hung.add(cid)
        self.model_hung.add(cid)
        self.hung_since, self.dense = self.now, True

    @rule(dt=st.floats(0.05, STEP))
    def tick(self, dt):
        self.advance(dt)
        out = self.core.handle(WatchdogTick(now=self.now))
        killed = [c.child_id for c in out if isinstance(c, KillChild)]
        assert len(killed) <= 1 and set(killed) <= self.shell_hung, (killed, self.shell_hung)
        # replay through the shell so responses flow; compare with the model's kill
        self.model.ops, self.model.logs = [], []
        rest, queue = list(out), deque()
        for cmd in rest:
            r = self.shell.respond(cmd)
            if r is not None:
                queue.append(r)
        while queue:
            cmds = self.core.handle(queue.popleft())
            self.core.validate()
            out.extend(cmds)
            queue.extend(r for r in map(self.shell.respond, cmds) if r is not None)
        for cid in killed:
            self.model.kill(cid, self.now)
        assert core_ops(out) == self.model.ops, (core_ops(out), self.model.ops)
        assert core_logs(out) == Counter(self.model.logs), (out, self.model.logs)
        if killed:
            self.hung_since = None
        if self.model.dead:
            self.boot()

    @rule(restart=st.sampled_from(RESTARTS), brutal=st.booleans())
    def add_child(self, restart, brutal):
        spec = ChildSpec(
            id=f"d{next(self.fresh) % 3}",
            start="dyn",
            restart=restart,
            shutdown="brutal_kill" if brutal else 1.0,
        )
        self.step(AddChild(spec=spec, now=self.now, cause="add"), lambda: self.model.add(spec))

    @precondition(lambda self: self.core.child_ids())
    @rule(data=st.data())
    def remove_child(self, data):
        cid = data.draw(st.sampled_from(self.core.child_ids()), label="removed")
        self.step(
            RemoveChild(child_id=cid, now=self.now, cause="rm"), lambda: self.model.remove(cid)
        )

    @rule()
    def shutdown(self):
        self.step(ShutdownRequested(now=self.now), self.model.shutdown)

    # -- invariants
    @invariant()
    def state_matches_the_model(self):
        self.core.validate()
        assert self.core.child_ids() == [c["spec"].id for c in self.model.children]
        assert set(self.running()) == {c["spec"].id for c in self.model.children if c["alive"]}
        assert list(self.core.statistics().window) == self.model.window

    @invariant()
    def a_hung_child_is_killed_within_interval_plus_timeout(self):
        hung_alive = self.shell_hung & set(self.running())
        if hung_alive and self.dense and self.hung_since is not None:
            assert self.now <= self.hung_since + INTERVAL + TIMEOUT + 2 * STEP, (
                hung_alive,
                self.hung_since,
                self.now,
            )


TestOtpEquivalence = OtpEquivalence.TestCase
TestOtpEquivalence.settings = SETTINGS


# ====================================================================== async


class AsyncShell(RuleBasedStateMachine):
    """Answers arrive in any order; processes crash and hang at any time."""

    @initialize(
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        intensity=st.integers(0, 4),
        independent=st.booleans(),
        data=st.data(),
    )
    def setup(self, strategy, intensity, independent, data):
        self.flags = SupFlags(
            strategy=strategy,
            intensity=intensity,
            period=5.0,
            ping_interval=INTERVAL,
            ping_timeout=TIMEOUT,
            # independent children (every start and stop at once) go with one_for_one only
            independent=independent and strategy == "one_for_one",
        )
        self.specs = data.draw(st.integers(1, 4).flatmap(child_specs), label="children")
        self.now = 0.0
        self.serial = itertools.count(1)
        self.fail: dict[str, int] = {}
        self.fresh = itertools.count()
        self.boot()

    def boot(self) -> None:
        self.core = SupervisorCore(self.flags, self.specs, name="sup")
        self.alive: dict[str, str] = {}  # ref -> child id: live processes
        self.hung: set[str] = set()  # refs
        self.pending: list = []  # events the shell has yet to deliver
        self.exits: list = []  # exits delivered already
        self.feed(Init(now=self.now))

    def feed(self, event) -> None:
        for cmd in self.core.handle(event):
            self.carry_out(cmd)
        self.core.validate()

    def carry_out(self, cmd) -> None:
        now = self.now
        if isinstance(cmd, StartChild):
            cid = cmd.child_id
            assert cid not in self.alive.values(), f"two incarnations of {cid}"
            if self.fail.get(cid, 0) > 0:
                self.fail[cid] -= 1
                self.pending.append(StartFailed(child_id=cid, reason="no luck", now=now))
                return
            ref = f"{cid}#{next(self.serial)}"
            self.alive[ref] = cid
            self.pending.append(ChildStarted(child_id=cid, ref=ref, now=now))
        elif isinstance(cmd, StopChild | KillChild):
            if cmd.ref in self.alive:
                del self.alive[cmd.ref]
                polite = (
                    isinstance(cmd, StopChild)
                    and not cmd.shutdown.is_brutal_kill
                    and (cmd.ref not in self.hung)
                )
                self.pending.append(
                    ChildExited(
                        child_id=cmd.child_id,
                        reason="shutdown" if polite else "killed",
                        abnormal=not polite,
                        ref=cmd.ref,
                        now=now,
                    )
                )
            # else: it is already dead and its exit is on its way
        elif isinstance(cmd, Ping):
            if cmd.ref in self.alive and cmd.ref not in self.hung:
                self.pending.append(Pong(child_id=cmd.child_id, seq=cmd.seq, now=now))
        elif isinstance(cmd, Escalate | Exit):
            assert not self.alive, f"{cmd} with live children {self.alive}"

    def deliverable(self) -> list[int]:
        """Indexes of the first pending event of each process (per-process order is kept)."""
        seen, out = set(), []
        for i, ev in enumerate(self.pending):
            key = getattr(ev, "ref", None) or ev.child_id
            if key not in seen:
                seen.add(key)
                out.append(i)
        return out

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def deliver(self, data):
        i = data.draw(st.sampled_from(self.deliverable()), label="deliver")
        event = self.pending.pop(i)
        if isinstance(event, ChildExited):
            self.exits.append(event)
        self.feed(event)

    @precondition(lambda self: self.exits)
    @rule(data=st.data())
    def an_old_exit_is_reported_again(self, data):
        event = data.draw(st.sampled_from(self.exits), label="again")
        before = self.core.statistics()
        assert self.core.handle(event) == []
        assert self.core.statistics() == before

    @precondition(lambda self: self.alive)
    @rule(data=st.data(), abnormal=st.booleans())
    def crash(self, data, abnormal):
        ref = data.draw(st.sampled_from(sorted(self.alive)), label="crash")
        cid = self.alive.pop(ref)
        self.pending.append(
            ChildExited(
                child_id=cid,
                reason="boom" if abnormal else "normal",
                abnormal=abnormal,
                ref=ref,
                now=self.now,
            )
        )

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def hang(self, data):
        self.hung.add(data.draw(st.sampled_from(sorted(self.alive)), label="hang"))

    @rule(index=st.integers(0, 5), n=st.integers(1, 3))
    def fail_next_starts(self, index, n):
        cid = f"c{index}" if index < 4 else f"d{index - 4}"
        self.fail[cid] = self.fail.get(cid, 0) + n

    @rule(dt=st.sampled_from([0.1, 0.4, 1.0, 3.0]))
    def tick(self, dt):
        self.now += dt
        self.feed(WatchdogTick(now=self.now))

    @rule(restart=st.sampled_from(RESTARTS))
    def add_child(self, restart):
        spec = ChildSpec(id=f"d{next(self.fresh) % 2}", start="dyn", restart=restart)
        self.feed(AddChild(spec=spec, now=self.now, cause="add"))

    @precondition(lambda self: self.core.child_ids())
    @rule(data=st.data())
    def remove_child(self, data):
        cid = data.draw(st.sampled_from(self.core.child_ids()), label="remove")
        self.feed(RemoveChild(child_id=cid, now=self.now, cause="rm"))

    @rule()
    def shutdown(self):
        self.feed(ShutdownRequested(now=self.now))

    @rule()
    def settle(self):
        """Deliver everything, tick until hung children are gone: the plan must complete."""
        for _ in range(200):
            if self.pending:
                self.feed(self.pending.pop(0))
            elif self.hung & set(self.alive):
                self.now += TIMEOUT + INTERVAL
                self.feed(WatchdogTick(now=self.now))
            else:
                break
        assert not self.pending
        core = self.core
        if core.phase is Phase.TERMINATED:
            assert not self.alive
            self.boot()
            return
        stats = core.statistics()
        assert all(c.pending is None for c in stats.children), stats
        for c in stats.children:
            assert c.state in ("running", "idle"), c
            if c.restart == "permanent":
                assert c.state == "running", c
        assert sorted(self.alive.values()) == sorted(
            c.id for c in stats.children if c.state == "running"
        )

    @invariant()
    def every_live_process_is_known_to_the_core(self):
        self.core.validate()
        cids = list(self.alive.values())
        assert len(cids) == len(set(cids)), f"two incarnations: {cids}"
        for ref, cid in self.alive.items():
            state = self.core.state_of(cid)
            assert state not in (None, ChildState.IDLE), (ref, cid, state)
        if self.core.phase is Phase.TERMINATED:
            assert not self.alive


TestAsyncShell = AsyncShell.TestCase
TestAsyncShell.settings = SETTINGS
