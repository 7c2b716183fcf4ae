"""SupervisorCore by example: feed events, compare the commands with OTP's behaviour."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

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
    Reply,
    Shutdown,
    ShutdownRequested,
    StartChild,
    StartFailed,
    StopChild,
    SupervisorCore,
    SupFlags,
    WatchdogTick,
)


class Shell:
    """A fake shell that carries out commands at once (so the core behaves like OTP's).

    `fail[child_id]` start attempts of a child fail; a child in `hung` answers
    no ping and ignores a polite stop (it is killed after its timeout).
    """

    def __init__(self, core: SupervisorCore) -> None:
        self.core = core
        self.now = 0.0
        self.fail: dict[str, int] = {}
        self.hung: set[str] = set()
        self.refs: dict[str, str] = {}
        self._serial = itertools.count(1)

    def send(self, event) -> list:
        out = []
        queue = deque([event])
        while queue:
            commands = self.core.handle(queue.popleft())
            self.core.validate()
            out.extend(commands)
            for command in commands:
                response = self.respond(command)
                if response is not None:
                    queue.append(response)
        return out

    def respond(self, command):
        now = self.now
        if isinstance(command, StartChild):
            cid = command.child_id
            if self.fail.get(cid, 0) > 0:
                self.fail[cid] -= 1
                return StartFailed(child_id=cid, reason="no luck", now=now)
            self.refs[cid] = f"{cid}#{next(self._serial)}"
            self.hung.discard(cid)
            return ChildStarted(child_id=cid, ref=self.refs[cid], now=now)
        if isinstance(command, StopChild):
            if command.child_id in self.hung and not command.shutdown.is_brutal_kill:
                return ChildExited(child_id=command.child_id, reason="killed", abnormal=True,
                                   ref=command.ref, now=now)
            killed = command.shutdown.is_brutal_kill
            return ChildExited(child_id=command.child_id, reason="killed" if killed else
                               "shutdown", abnormal=killed, ref=command.ref, now=now)
        if isinstance(command, KillChild):
            return ChildExited(child_id=command.child_id, reason="killed", abnormal=True,
                               ref=command.ref, now=now)
        if isinstance(command, Ping) and command.child_id not in self.hung:
            return Pong(child_id=command.child_id, seq=command.seq, now=now)
        return None

    def up(self) -> list:
        return self.send(Init(now=self.now))

    def crash(self, child_id: str, *, at: float | None = None, abnormal: bool = True,
              reason: str = "boom") -> list:
        if at is not None:
            self.now = at
        return self.send(ChildExited(child_id=child_id, reason=reason if abnormal else "normal",
                                     abnormal=abnormal, ref=self.refs[child_id], now=self.now))


def ops(commands) -> list[tuple[str, str | None]]:
    """The commands that act on children or the supervisor, as (kind, child_id)."""
    out = []
    for c in commands:
        if isinstance(c, StartChild | StopChild | KillChild):
            out.append((type(c).__name__, c.child_id))
        elif isinstance(c, Escalate):
            out.append(("Escalate", c.reason))
        elif isinstance(c, Exit):
            out.append(("Exit", c.reason))
    return out


def logs(commands) -> list[tuple[str, str | None, str | None]]:
    return [(c.event, c.child_id, c.reason) for c in commands
            if isinstance(c, Log) and c.event != "child_started"]


def specs(*ids: str, **restart: str) -> list[ChildSpec]:
    return [ChildSpec(id=i, start=f"Actor-{i}", restart=restart.get(i, "permanent")) for i in ids]


def make(strategy="one_for_one", ids=("a", "b", "c"), intensity=3, period=5.0, **restart):
    core = SupervisorCore(SupFlags(strategy=strategy, intensity=intensity, period=period),
                          specs(*ids, **restart), name="sup")
    return core, Shell(core)


# ------------------------------------------------------------ start and stop


def test_children_start_in_list_order_one_at_a_time():
    core, _ = make()
    assert ops(core.handle(Init(now=0))) == [("StartChild", "a")]
    assert core.phase is Phase.STARTING
    out = core.handle(ChildStarted(child_id="a", ref="A", now=0))
    assert ops(out) == [("StartChild", "b")]
    assert [c.event for c in out if isinstance(c, Log)] == ["child_started"]
    core.handle(ChildStarted(child_id="b", ref="B", now=0))
    core.validate()
    assert ops(core.handle(ChildStarted(child_id="c", ref="C", now=0))) == []
    assert core.phase is Phase.RUNNING
    core.validate()


def test_a_shutdown_stops_children_in_reverse_order_then_exits():
    core, shell = make()
    shell.up()
    out = shell.send(ShutdownRequested(now=1))
    assert ops(out) == [("StopChild", "c"), ("StopChild", "b"), ("StopChild", "a"),
                        ("Exit", "shutdown")]
    assert core.phase is Phase.TERMINATED
    assert all(core.state_of(i) is ChildState.IDLE for i in "abc")
    assert core.handle(ChildExited(child_id="a", reason="x", abnormal=True, now=2)) == []


def test_each_stop_waits_for_the_previous_child_to_exit():
    core, shell = make()
    shell.up()
    assert ops(core.handle(ShutdownRequested(now=1))) == [("StopChild", "c")]
    core.validate()
    out = core.handle(ChildExited(child_id="c", reason="shutdown", abnormal=False, now=1))
    assert ops(out) == [("StopChild", "b")]
    core.validate()


def test_a_stop_carries_the_child_shutdown_and_ref():
    core = SupervisorCore(SupFlags(), [ChildSpec(id="w", start=None, shutdown="brutal_kill")])
    shell = Shell(core)
    shell.up()
    out = shell.send(ShutdownRequested(now=1))
    stop = next(c for c in out if isinstance(c, StopChild))
    assert stop.shutdown.is_brutal_kill and stop.ref == shell.refs["w"]
    assert logs(out) == []  # "killed" is the expected end of a brutal kill


def test_a_shutdown_before_init_exits_at_once():
    core, _ = make()
    assert ops(core.handle(ShutdownRequested(now=0))) == [("Exit", "shutdown")]
    core.validate()


def test_init_twice_is_a_bug():
    core, shell = make()
    shell.up()
    with pytest.raises(RuntimeError, match=r"^supervisor 'sup' already started$"):
        core.handle(Init(now=1))


def test_a_child_killed_after_its_shutdown_timeout_is_a_shutdown_error():
    core, shell = make()
    shell.up()
    shell.hung.add("b")
    out = shell.send(ShutdownRequested(now=1))
    assert logs(out) == [("shutdown_error", "b", "killed")]


# ------------------------------------------------------------ strategies


def test_one_for_one_restarts_only_the_failed_child():
    _, shell = make("one_for_one")
    shell.up()
    out = shell.crash("b")
    assert ops(out) == [("StartChild", "b")]
    assert logs(out) == [("child_terminated", "b", "boom")]


def test_one_for_all_stops_the_others_in_reverse_order_then_restarts_all_in_order():
    _, shell = make("one_for_all", ids=("a", "b", "c", "d"))
    shell.up()
    out = shell.crash("b")
    assert ops(out) == [("StopChild", "d"), ("StopChild", "c"), ("StopChild", "a"),
                        ("StartChild", "a"), ("StartChild", "b"), ("StartChild", "c"),
                        ("StartChild", "d")]


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it():
    _, shell = make("rest_for_one", ids=("a", "b", "c", "d"))
    shell.up()
    out = shell.crash("b")
    assert ops(out) == [("StopChild", "d"), ("StopChild", "c"),
                        ("StartChild", "b"), ("StartChild", "c"), ("StartChild", "d")]


def test_rest_for_one_on_the_last_child_restarts_only_it():
    _, shell = make("rest_for_one")
    shell.up()
    assert ops(shell.crash("c")) == [("StartChild", "c")]


# ------------------------------------------------------------ restart types


@pytest.mark.parametrize(
    ("restart", "abnormal", "restarted", "logged"),
    [
        ("permanent", True, True, True),
        ("permanent", False, True, True),
        ("transient", True, True, True),
        ("transient", False, False, False),
        ("temporary", True, False, True),
        ("temporary", False, False, False),
    ],
)
def test_restart_types_follow_otp(restart, abnormal, restarted, logged):
    core, shell = make("one_for_all", b=restart)
    shell.up()
    out = shell.crash("b", abnormal=abnormal)
    assert (("StartChild", "b") in ops(out)) is restarted
    assert bool(logs(out)) is logged
    if not restarted:
        assert ops(out) == []  # the siblings are not touched either
    if restart == "temporary":
        assert "b" not in core.child_ids()  # a temporary child is forgotten
    elif not restarted:
        assert core.state_of("b") is ChildState.IDLE


def test_one_for_all_forgets_temporary_siblings_and_restarts_idle_transient_ones():
    core, shell = make("one_for_all", ids=("a", "b", "c", "d"), c="temporary", d="transient")
    shell.up()
    shell.crash("d", abnormal=False)  # a transient child that ended normally stays idle
    assert core.state_of("d") is ChildState.IDLE
    out = shell.crash("a")
    assert ops(out) == [("StopChild", "c"), ("StopChild", "b"), ("StartChild", "a"),
                        ("StartChild", "b"), ("StartChild", "d")]
    assert core.child_ids() == ["a", "b", "d"]


# ------------------------------------------------------------ intensity


def test_a_second_restart_within_the_period_escalates_after_stopping_everyone():
    core, shell = make("one_for_one", intensity=1, period=5.0)
    shell.up()
    assert ops(shell.crash("a", at=10.0)) == [("StartChild", "a")]
    out = shell.crash("b", at=15.0)
    assert ops(out) == [("StopChild", "c"), ("StopChild", "a"),
                        ("Escalate", "reached_max_restart_intensity")]
    assert logs(out) == [("child_terminated", "b", "boom"),
                         ("reached_max_restart_intensity", "b", "boom")]
    escalate = next(c for c in out if isinstance(c, Escalate))
    assert (escalate.child_id, escalate.detail) == ("b", "boom")
    assert core.phase is Phase.TERMINATED
    core.validate()


def test_exits_not_charged_to_the_child_restart_it_without_counting_against_the_intensity():
    core, shell = make("one_for_one", intensity=1, period=5.0)
    shell.up()
    for _ in range(10):  # a user's code killed its process: a fault of the user's code
        out = shell.send(ChildExited(child_id="a", reason="exit status 1", abnormal=True,
                                     ref=shell.refs["a"], now=shell.now, charged=False))
        assert ops(out) == [("StartChild", "a")]
    assert core.statistics().window == ()
    assert ops(shell.crash("a")) == [("StartChild", "a")]  # a charged one still counts
    assert ops(shell.crash("b"))[-1] == ("Escalate", "reached_max_restart_intensity")


def test_restarts_spread_wider_than_the_period_never_escalate():
    core, shell = make("one_for_one", intensity=1, period=5.0)
    shell.up()
    for t in (10.0, 15.5, 21.0, 26.5):
        assert ops(shell.crash("a", at=t)) == [("StartChild", "a")]
    assert core.statistics().restarts == 4


def test_a_log_entry_uses_otp_vocabulary_and_fixed_keys():
    _, shell = make()
    shell.up()
    out = shell.crash("a", reason="ZeroDivisionError")
    log = next(c for c in out if isinstance(c, Log) and c.event == "child_terminated")
    fields = log.fields()
    assert (log.level, fields["supervisor"], fields["child_id"], fields["reason"]) == (
        "error", "sup", "a", "ZeroDivisionError")


# ------------------------------------------------------------ start failures


def test_a_child_failing_its_first_start_stops_the_started_ones_and_escalates():
    core, shell = make()
    shell.fail["c"] = 1
    out = shell.up()
    assert ops(out) == [("StartChild", "a"), ("StartChild", "b"), ("StartChild", "c"),
                        ("StopChild", "b"), ("StopChild", "a"),
                        ("Escalate", "failed_to_start_child")]
    assert logs(out) == [("start_error", "c", "no luck")]
    escalate = next(c for c in out if isinstance(c, Escalate))
    assert (escalate.child_id, escalate.detail) == ("c", "no luck")  # the boot error says so
    assert core.phase is Phase.TERMINATED


def test_a_failed_restart_counts_as_a_restart_and_is_tried_again():
    core, shell = make("one_for_one", intensity=3)
    shell.up()
    shell.fail["b"] = 2
    out = shell.crash("b")
    assert ops(out) == [("StartChild", "b")] * 3
    assert [e for e, _, _ in logs(out)] == ["child_terminated", "start_error", "start_error"]
    assert core.state_of("b") is ChildState.RUNNING
    assert core.statistics().restarts == 3


def test_a_child_that_never_starts_again_escalates_after_intensity_attempts():
    core, shell = make("one_for_all", intensity=2)
    shell.up()
    shell.fail["b"] = 99
    out = shell.crash("a")
    assert ops(out) == [
        ("StopChild", "c"), ("StopChild", "b"), ("StartChild", "a"), ("StartChild", "b"),
        # try again: one_for_all stops the started ones and starts all again
        ("StopChild", "a"), ("StartChild", "a"), ("StartChild", "b"),
        ("StopChild", "a"), ("Escalate", "reached_max_restart_intensity")]


def test_rest_for_one_tries_again_from_the_child_that_failed_to_start():
    _, shell = make("rest_for_one", ids=("a", "b", "c", "d"), intensity=5)
    shell.up()
    shell.fail["c"] = 1
    out = shell.crash("b")
    assert ops(out) == [("StopChild", "d"), ("StopChild", "c"), ("StartChild", "b"),
                        ("StartChild", "c"), ("StartChild", "c"), ("StartChild", "d")]


# ------------------------------------------------------------ races


def test_a_child_dying_while_waiting_to_be_stopped_is_not_restarted_twice():
    core, shell = make("one_for_all", intensity=5)
    shell.up()
    out = core.handle(ChildExited(child_id="c", reason="boom", abnormal=True, now=1,
                                  ref=shell.refs["c"]))
    assert ops(out) == [("StopChild", "b")]
    out = core.handle(ChildExited(child_id="a", reason="boom", abnormal=True, now=1,
                                  ref=shell.refs["a"]))
    core.validate()
    assert logs(out) == [("shutdown_error", "a", "boom")]
    assert ops(out) == []  # still waiting for b
    out = core.handle(ChildExited(child_id="b", reason="shutdown", abnormal=False, now=1,
                                  ref=shell.refs["b"]))
    assert ops(out) == [("StartChild", "a")]
    assert core.statistics().restarts == 1


def test_a_late_exit_of_an_old_incarnation_is_ignored():
    core, shell = make()
    shell.up()
    old = shell.refs["a"]
    shell.crash("a")
    assert core.handle(ChildExited(child_id="a", reason="boom", abnormal=True, now=2,
                                   ref=old)) == []
    assert core.state_of("a") is ChildState.RUNNING


def test_a_failure_during_a_restart_merges_into_the_running_plan():
    core, shell = make("rest_for_one", ids=("a", "b", "c", "d"), intensity=5)
    shell.up()
    out = core.handle(ChildExited(child_id="c", reason="boom", abnormal=True, now=1,
                                  ref=shell.refs["c"]))
    assert ops(out) == [("StopChild", "d")]
    out = core.handle(ChildExited(child_id="b", reason="boom", abnormal=True, now=1,
                                  ref=shell.refs["b"]))
    assert ops(out) == []
    out = shell.send(ChildExited(child_id="d", reason="shutdown", abnormal=False, now=1,
                                 ref=shell.refs["d"]))
    assert ops(out) == [("StartChild", "b"), ("StartChild", "c"), ("StartChild", "d")]
    assert core.statistics().restarts == 2


# ------------------------------------------------------------ dynamic children


def test_a_dynamic_child_is_started_after_the_others_and_the_request_answered():
    core, shell = make()
    shell.up()
    out = shell.send(AddChild(spec=ChildSpec(id="session-7", start="S", type="supervisor",
                                             restart="temporary"), now=1, cause="req-1"))
    assert ops(out) == [("StartChild", "session-7")]
    assert [c for c in out if isinstance(c, Reply)] == [
        Reply(request="req-1", ok=True, child_id="session-7", cause="")]
    assert core.child_ids() == ["a", "b", "c", "session-7"]
    assert shell.send(ShutdownRequested(now=2))[0] == StopChild(
        child_id="session-7", shutdown=Shutdown.INFINITY, ref=shell.refs["session-7"])


def test_a_dynamic_child_that_fails_to_start_is_forgotten_and_the_request_refused():
    core, shell = make()
    shell.up()
    shell.fail["s"] = 1
    out = shell.send(AddChild(spec=ChildSpec(id="s", start="S"), now=1, cause="req-2"))
    assert [c for c in out if isinstance(c, Reply)] == [
        Reply(request="req-2", ok=False, child_id="s", reason="no luck")]
    assert core.child_ids() == ["a", "b", "c"] and core.phase is Phase.RUNNING


def test_adding_an_existing_id_is_refused():
    _, shell = make()
    shell.up()
    out = shell.send(AddChild(spec=ChildSpec(id="b", start="B"), now=1, cause="r"))
    assert out == [Reply(request="r", ok=False, child_id="b", reason="already_started",
                         cause="r")]


def test_removing_a_child_stops_it_forgets_it_and_answers():
    core, shell = make("one_for_all")
    shell.up()
    out = shell.send(RemoveChild(child_id="b", now=1, cause="rm"))
    assert ops(out) == [("StopChild", "b")]
    assert [c for c in out if isinstance(c, Reply)] == [
        Reply(request="rm", ok=True, child_id="b")]
    assert core.child_ids() == ["a", "c"]
    out = shell.send(RemoveChild(child_id="b", now=1, cause="rm2"))
    assert out == [Reply(request="rm2", ok=False, child_id="b", reason="not_found",
                         cause="rm2")]


# ------------------------------------------------------------ watchdog


def watched(strategy="one_for_one", **kw):
    flags = SupFlags(strategy=strategy, intensity=5, ping_interval=1.0, ping_timeout=0.5)
    core = SupervisorCore(flags, specs("a", "b", "c"), name="sup", **kw)
    return core, Shell(core)


def test_the_watchdog_pings_running_children_every_interval():
    core, shell = watched()
    shell.up()
    assert core.next_tick() == 1.0
    shell.now = 1.0
    out = shell.send(WatchdogTick(now=1.0))
    assert [(type(c).__name__, c.child_id) for c in out] == [
        ("Ping", "a"), ("Ping", "b"), ("Ping", "c")]
    assert core.next_tick() == 2.0  # answered at once: next pings due


def test_a_child_that_misses_its_ping_deadline_is_killed_and_restarted():
    core, shell = watched("rest_for_one")
    shell.up()
    shell.hung.add("b")
    shell.now = 1.0
    shell.send(WatchdogTick(now=1.0))
    assert core.next_tick() == 1.5
    shell.now = 1.5
    out = shell.send(WatchdogTick(now=1.5))
    assert ops(out) == [("KillChild", "b"), ("StopChild", "c"), ("StartChild", "b"),
                        ("StartChild", "c")]
    assert logs(out) == [("child_hung", "b", "hung"), ("child_terminated", "b", "hung")]
    assert core.state_of("b") is ChildState.RUNNING


def test_a_slow_answer_before_the_deadline_keeps_the_child():
    core, shell = watched()
    shell.up()
    shell.hung.add("a")
    shell.now = 1.0
    ping = next(c for c in shell.send(WatchdogTick(now=1.0)) if c.child_id == "a")
    core.handle(Pong(child_id="a", seq=ping.seq, now=1.4))
    assert ops(core.handle(WatchdogTick(now=1.5))) == []


def test_the_statistics_snapshot_shows_states_refs_and_restart_counts():
    core, shell = watched()
    shell.up()
    shell.crash("b", at=1.0)
    stats = core.statistics()
    assert (stats.name, stats.phase, stats.strategy, stats.restarts) == (
        "sup", "running", "one_for_one", 1)
    b = stats.children[1]
    assert (b.id, b.state, b.ref, b.starts, b.restarts, b.last_exit) == (
        "b", "running", shell.refs["b"], 2, 1, "boom")
    assert stats.as_dict()["children"][1]["ref"] == shell.refs["b"]
    with pytest.raises(AttributeError):
        stats.restarts = 0  # type: ignore[misc]


def test_the_story_of_a_child_lists_its_events_and_commands():
    core, shell = make()
    shell.up()
    shell.crash("b")
    kinds = [type(x).__name__ for x in core.story("b")]
    assert kinds == ["StartChild", "ChildStarted", "Log", "ChildExited", "Log",
                     "StartChild", "ChildStarted", "Log"]


def test_commands_carry_the_cause_of_their_event():
    core, shell = make()
    shell.up()
    out = core.handle(ChildExited(child_id="a", reason="boom", abnormal=True, now=1,
                                  ref=shell.refs["a"], cause="exit-42"))
    assert out and all(c.cause == "exit-42" for c in out)
