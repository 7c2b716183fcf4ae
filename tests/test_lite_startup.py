"""A lite daemon opens its client's session while it boots (`--open-session`)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import pyproof
from pyproof.actors import messages as m
from pyproof.logs import read_records


def test_the_lite_daemon_opens_the_clients_session_while_it_boots_and_only_that_one() -> None:
    with pyproof.connect("lite://?workers=2") as session:
        cluster = session.cluster
        assert cluster is not None and cluster.open_request
        records = read_records(cluster.log_dir)
        preopened = [r for r in records if r.get("event") == "session_preopened"]
        assert [(r["session"], r["workers"]) for r in preopened] == [(session.id, 2)]
        # the client's open_session found it: no second session was started
        started = [r for r in records if r.get("actor") == "sessions"
                   and r.get("event") == "child_started"]
        assert [r["child_id"] for r in started] == [session.id]
        assert len(session.workers) == 2
        result = session.process("tests.sample_selectors:Cycles", cycles=40, progress=False)
        assert result.outputs["sum"] == sum(range(40))


def test_the_actors_share_the_daemons_modules_frozen_and_collect_their_own_garbage() -> None:
    # the daemon loads the modules with the collector off and freezes them before its first
    # fork: a collection in an actor leaves those shared pages alone (actors/daemon.py)
    with pyproof.connect("lite://?workers=2") as session:
        result = session.process("tests.sample_selectors:CollectorState", cycles=20,
                                 progress=False)
    assert result.outputs == {"collector_off": 0, "nothing_frozen": 0}
    assert result.stats.entries == 20


def test_the_daemon_process_keeps_the_session_registry_open_while_it_runs() -> None:
    # so a session's registry writes do not each copy the WAL back and sync the disk, as the
    # last connection's close does (registry.keep_open)
    with pyproof.connect("lite://?workers=1") as session:
        cluster = session.cluster
        registry = os.path.join(cluster.run_dir, "sessions.db")
        deadline = time.monotonic() + 10.0
        while registry not in _open_files(cluster.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert registry in _open_files(cluster.process.pid)


def _open_files(pid: int) -> set[str]:
    fds = f"/proc/{pid}/fd"
    names = set()
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            names.add(os.readlink(os.path.join(fds, fd)))
    return names


def test_the_pre_opened_session_goes_only_to_the_same_request() -> None:
    with pyproof.connect("lite://?workers=2") as session:
        request = session.cluster.open_request
        again = session.control.call("open_session", {"workers": 2}, request_id=request)
        assert again["session"] == session.id
        # the same request id asking for another size is another request: a new session
        other = session.control.call("open_session", {"workers": 1}, request_id=request)
        assert other["session"] != session.id and len(other["workers"]) == 1
        session.control.call("close_session", session=other["session"], deadline=10.0)


def _sessions_actor(sent: list) -> Any:
    """A Sessions shell outside any actor system: what it sends is collected."""
    from pyproof.actors.sessions import Sessions

    actor = Sessions()
    actor.send = lambda to, message: sent.append((to, message))  # type: ignore[method-assign]
    actor.info["s1"] = {"user": "u", "workers": 2, "created": 0.0}
    actor.opened["r1"] = "s1"
    actor.preopen_waiting["s1"] = []
    return actor


def _ask_again(actor: Any, corr: str) -> None:
    actor._create(m.CreateSession(corr=corr, session_id="new", workers=2, run_dir="/r",
                                  log_dir="/l", user="u", request_id="r1",
                                  reply_to=f"client-{corr}"), None)


def test_a_client_waiting_for_a_pre_opened_session_that_fails_gets_the_reason() -> None:
    sent: list = []
    actor = _sessions_actor(sent)
    _ask_again(actor, "c1")
    assert sent == []  # it waits for the session to run
    actor.receive_other(m.SessionFailed(corr="preopen-s1", session_id="s1",
                                        error="start timeout"), None)
    assert [(to, type(msg).__name__, msg.corr, msg.error) for to, msg in sent] == [
        ("client-c1", "SessionFailed", "c1", "session s1 failed to start: start timeout")]
    sent.clear()
    _ask_again(actor, "c2")  # a later attempt is told at once
    assert [(to, msg.error) for to, msg in sent] == [("client-c2", "session s1 ended")]


def test_a_pre_opened_session_that_exits_before_it_runs_answers_its_waiting_clients() -> None:
    sent: list = []
    actor = _sessions_actor(sent)
    _ask_again(actor, "c1")
    actor.on_child_exited("s1", 123, "crashed")
    assert [(to, msg.error) for to, msg in sent] == [
        ("client-c1", "session s1 failed to start: crashed")]


def test_a_pre_opened_session_that_runs_is_announced_to_its_waiting_clients() -> None:
    sent: list = []
    actor = _sessions_actor(sent)
    actor.refs["s1"] = "session-s1"
    _ask_again(actor, "c1")
    actor.receive_other(m.SessionReady(corr="preopen-s1", session_id="s1", master=None,
                                       workers=("worker-0", "worker-1")), None)
    assert [(to, type(msg).__name__, msg.corr, msg.workers) for to, msg in sent] == [
        ("client-c1", "SessionReady", "c1", ("worker-0", "worker-1"))]


def test_a_lite_client_starts_its_daemon_before_it_syncs_or_prunes_anything(
        monkeypatch, tmp_path) -> None:
    # the daemon's boot is the critical path of connect(): what the client writes before it
    # starts the daemon is not synced to disk (a cluster's secret lives as long as the
    # cluster) and old session directories are removed while the daemon boots
    import subprocess

    from pyproof.client import lite

    monkeypatch.setenv("PYPROOF_SANDBOX", str(tmp_path / "sandbox"))
    base = lite.lite_sessions_dir()
    os.makedirs(base)
    for i in range(lite.KEEP_SESSION_DIRS + 3):
        old = os.path.join(base, f"20200101-00000{i:02d}-1-old")
        os.makedirs(os.path.join(old, "logs"))
        os.utime(old, (1e9 + i, 1e9 + i))
    synced: list[int] = []
    real_fsync, real_popen = os.fsync, subprocess.Popen
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    seen: dict[str, Any] = {}

    def popen(*args: Any, **kwargs: Any) -> Any:
        seen.update(synced=list(synced), dirs=len(os.listdir(base)))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(lite.subprocess, "Popen", popen)
    cluster = lite.LiteCluster()  # no session: closed at once, none to wait for
    try:
        assert seen == {"synced": [], "dirs": lite.KEEP_SESSION_DIRS + 4}
        assert len(os.listdir(base)) == lite.KEEP_SESSION_DIRS
        assert os.path.basename(cluster.session_dir) in os.listdir(base)
        secret = os.path.join(cluster.run_dir, "secret")
        assert os.stat(secret).st_mode & 0o777 == 0o600
        from pyproof.transport import auth

        assert auth.read_secret(secret) == cluster.secret
    finally:
        cluster.close()


def test_a_lite_cluster_closed_while_its_pre_opened_session_starts_leaves_nothing() -> None:
    # its session supervisor leaves the control tree's process session before it is in the
    # session registry: closing in between used to leave the session running (an orphan)
    from pyproof.client import lite
    from pyproof.supervision.process_tree import descendants_of, is_alive, reap_children

    for _ in range(6):
        cluster = lite.LiteCluster(workers=1)
        cluster.close()
        reap_children()
        left = [pid for pid in descendants_of(os.getpid()) if is_alive(pid)]
        assert left == [], [lite.writers_of(cluster._out.name), left]


def test_a_session_of_slow_starting_workers_is_ready_in_about_one_workers_start(
        monkeypatch) -> None:
    # the session supervisor creates its master and workers side by side (parallel_start):
    # three workers that each take DELAY to start make a session ready in about DELAY,
    # where starting them one after another would take three times that
    from pyproof.actors.worker import START_DELAY_ENV

    delay, workers = 2.0, 3
    monkeypatch.setenv("PYPROOF_TEST_HOOKS", "1")
    monkeypatch.setenv(START_DELAY_ENV, str(delay))
    t0 = time.monotonic()
    session = pyproof.connect(f"lite://?workers={workers}")
    try:
        took = time.monotonic() - t0
        assert len(session.workers) == workers
    finally:
        session.close()
    assert delay <= took < delay * 2.25, took  # a serial start: at least 6 s


def test_a_sessions_children_warm_up_once_their_supervisor_heard_them_start() -> None:
    # the warm-up thread holds the GIL while it imports: started as the child sends Started,
    # it held up that send (and the session's start); its supervisor's WarmUp starts it
    with pyproof.connect("lite://?workers=2") as session:
        result = session.process("tests.sample_selectors:WarmupState", cycles=20,
                                 progress=False)
    assert result.outputs["calls"] >= 1
    assert result.outputs["warming"] == result.outputs["calls"]


def _session_supervisor(tmp_path, sent: list) -> Any:
    """A SessionSupervisor shell outside any actor system, its row in a real registry."""
    from pyproof.actors.registry import Registry
    from pyproof.actors.sessions import SessionSupervisor
    from pyproof.supervision.adoption import Entry, Proc

    actor = SessionSupervisor()
    actor.send = lambda to, message: sent.append((to, message))  # type: ignore[method-assign]
    actor.request = m.CreateSession(corr="c", session_id="s1", workers=2, run_dir=str(tmp_path),
                                    log_dir=str(tmp_path), user="u", reply_to="sessions")
    actor.registry = Registry(str(tmp_path))
    actor.registry.put(Entry(session_id="s1", user="u", workers=2, created=0.0,
                             supervisor=Proc(pid=os.getpid(), start=0), address=None))
    return actor


def test_a_session_warms_its_children_up_and_records_each_as_it_starts(tmp_path) -> None:
    # each child's row is written as its Started comes, not once all started: a supervisor
    # killed mid-start must leave the daemon's clean-up every child it had started
    sent: list = []
    actor = _session_supervisor(tmp_path, sent)
    pid = os.getpid()
    recorded = []
    for child in ("master", "worker-0", "worker-1"):
        actor.refs[child] = f"ref-{child}"
        actor.pids[child] = pid
        actor.on_child_started(child, f"ref-{child}", pid, {})
        (entry,) = actor.registry.entries()
        recorded.append(sorted(entry.children))
    # each child is told to warm up as its Started comes
    assert [to for to, msg in sent if isinstance(msg, m.WarmUp)] == [
        "ref-master", "ref-worker-0", "ref-worker-1"]
    assert recorded == [["master"], ["master", "worker-0"],
                        ["master", "worker-0", "worker-1"]]


def test_a_worker_told_of_a_query_before_its_warm_up_starts_none_beside_it(
        monkeypatch) -> None:
    # its query thread loads the data modules itself then: a warm-up thread importing the
    # same packages at the same time is not safe (actors/warmup.py)
    import threading
    from collections import deque

    from pyproof.actors import worker as w
    from pyproof.query.spec import QuerySpec

    started: list[int] = []
    monkeypatch.setattr(w, "start_warmup", lambda: started.append(1))

    def shell() -> Any:
        actor = w.Worker()
        actor.seen, actor.queued, actor._queries = deque(), deque(), threading.Event()
        actor.wakeupAfter = lambda *args, **kwargs: None  # (outside an actor system)
        return actor

    first = shell()
    first.receive(m.RunQuery(query_id="q1", spec=QuerySpec(selector="s:S", cycles=1)), None)
    first.receive(m.WarmUp(), None)
    assert started == [] and list(first.queued)[0].query_id == "q1"
    second = shell()  # the usual order: told to warm up first, once
    second.receive(m.WarmUp(), None)
    second.receive(m.WarmUp(), None)
    assert started == [1]


def test_the_gateway_says_it_started_before_it_starts_most_of_its_threads(tmp_path) -> None:
    # each thread takes the GIL as it starts: the root (and the daemon's ready.json, its
    # client's login) waited for all 16; the gateway serves with all of them right after
    from pyproof.actors import gateway as g

    sent: list = []
    actor = g.Gateway()
    actor.send = lambda to, message: sent.append(  # type: ignore[method-assign]
        (message, len(actor.server.pool._threads)))
    start = m.GatewayStart(corr="c", control_address=f"ipc://{tmp_path}/control.ipc",
                           sessions=None, run_dir=str(tmp_path), log_dir=str(tmp_path),
                           auth={"token_key": b"k" * 32, "owner": "u",
                                 "secret_file": str(tmp_path / "secret")})
    actor.receive(start, "root")
    try:
        (started, threads_then), = [(msg, n) for msg, n in sent if isinstance(msg, m.Started)]
        assert threads_then == g.START_CONTEXTS < g.CONTEXTS
        assert len(actor.server.pool._threads) == g.CONTEXTS
    finally:
        actor.server.close()


def test_a_worker_sends_started_before_it_starts_its_query_thread_and_watch(
        tmp_path, monkeypatch) -> None:
    # Thespian sends a message once the handler returns: the query thread (it takes the GIL)
    # and the watch's dial (it waits for the master's handshake) held a worker's Started
    # up by 5-10 ms, the last step of a session's start; they come on WarmUp (or a query, or
    # a wake-up soon after, at the latest)
    from datetime import timedelta

    from thespian.actors import WakeupMessage

    from pyproof.actors import worker as w
    from pyproof.actors.trees import master_address

    monkeypatch.setenv("PYPROOF_IN_WORKER", "")  # the handler sets it: restored after
    monkeypatch.setattr(w, "lead_process_group", lambda: None)  # not pytest's process
    monkeypatch.setattr(w, "capture_worker_output", lambda: None)
    monkeypatch.setattr(w, "start_warmup", lambda: None)
    wakeups: list = []

    def shell() -> Any:
        actor = w.Worker()
        actor.send = lambda to, message: sent.append((to, message))  # type: ignore
        actor.start_log = lambda *args, **kwargs: None  # type: ignore[method-assign]
        actor.wakeupAfter = lambda delay, payload=None: wakeups.append(payload)  # type: ignore
        return actor

    address = master_address(str(tmp_path), "s1")
    start = m.WorkerStart(session_id="s1", worker_id="worker-0", packet_address=address,
                          log_dir=str(tmp_path))
    for trigger in (m.WarmUp(), WakeupMessage(timedelta(seconds=w.SERVE_AFTER),
                                              payload=w.SERVE)):
        sent: list = []
        actor = shell()
        actor.receive(start, "session")
        try:
            assert [type(msg) for _, msg in sent] == [m.Started]
            assert actor.runner is None and actor.watch is None  # not yet: Started goes first
            assert wakeups[-1] == w.SERVE  # at the latest then, if no WarmUp or query comes
            actor.receive(trigger, "session")
            assert actor.runner is not None and actor.runner.is_alive()
            assert actor.watch is not None  # and it watches its master for queries
            runner = actor.runner
            actor.receive(m.WarmUp(), "session")  # once: no second thread
            assert actor.runner is runner
        finally:
            actor._exit()
