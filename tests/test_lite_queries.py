"""Queued, stoppable, abortable queries with live feedback, on a real lite cluster.

A stopped query's partial result is compared with a sequential uproot loop
over exactly the ranges it says it covered (exactly once).
"""

from __future__ import annotations

import time

import hist
import numpy as np
import pytest
import uproot

import pyproof
from pyproof.errors import QueryAborted
from tests.conftest import data_file
from tests.sample_selectors import ZmumuMass

SLOW = "tests.sample_selectors:SlowCount"
SMALL_PACKETS = {"packetizer": "basic", "packetizer_params": {"packet_entries": 100}}


@pytest.fixture(scope="module")
def session():
    with pyproof.connect("lite://?workers=2") as s:
        yield s


def zmumu() -> str:
    return data_file("uproot-Zmumu.root") + ":events"


def sequential(ranges: list[dict]) -> tuple[int, hist.Hist]:
    """What a plain loop over `ranges` gives: the reference a partial result must equal."""
    h = hist.Hist.new.Reg(100, 0, 200, name="M").Double()
    n = 0
    for r in ranges:
        tree = uproot.open(r["file"])[r["tree"]]
        m = tree["M"].array(entry_start=r["entry_start"], entry_stop=r["entry_stop"],
                            library="np")
        h.fill(np.asarray(m))
        n += len(m)
    return n, h


def wait_for_progress(handle, entries: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while handle.progress().get("entries", 0) < entries:
        assert time.monotonic() < deadline, f"no progress past {entries} entries"
        assert not handle.done(), "the query ended before it could be stopped"


def test_a_stopped_query_returns_a_partial_result_equal_to_a_loop_over_its_ranges(session):
    handle = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.2}, **SMALL_PACKETS)
    wait_for_progress(handle, 100)
    handle.stop()
    result = handle.result(timeout=30)
    assert result.stopped and 0 < result.stats.entries < 2304
    covered = result.covered
    assert covered and all(r["tree"] == "events" for r in covered)
    n, h = sequential(covered)
    assert n == result.stats.entries == result.outputs["n"]
    assert result.outputs["mass"] == h
    assert result.lineage["stop_reason"] == "stopped by the user"
    assert handle.state == "stopped"


def test_an_aborted_query_raises_query_aborted_and_the_session_goes_on(session):
    handle = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.2}, **SMALL_PACKETS)
    wait_for_progress(handle, 1)
    handle.abort()
    with pytest.raises(QueryAborted, match=rf"^query {handle.query} was aborted \(aborted by "
                                           r"the user\); its outputs were discarded$"):
        handle.result(timeout=30)
    assert isinstance(QueryAborted("x"), pyproof.QueryError)
    assert session.process(ZmumuMass, dataset=zmumu(), progress=False).stats.entries == 2304


def test_a_stop_or_abort_of_a_query_the_session_does_not_know_is_refused_naming_it(session):
    from pyproof.client.handle import QueryHandle

    unknown = QueryHandle(session, "no-such-query")
    for call, what in ((unknown.stop, "stop"), (unknown.abort, "abort")):
        with pytest.raises(pyproof.QueryError, match=rf"^cannot {what} query 'no-such-query': "
                                                    rf"session {session.id} has no such query "
                                                    r"\(it never started here"):
            call()
    # a query that ended is known: stopping it again is no error (idempotent)
    done = session.submit(ZmumuMass, dataset=zmumu())
    assert done.result(timeout=30).stats.entries == 2304
    done.stop()


def test_submitted_queries_run_one_after_another_and_are_listed(session):
    first = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.05}, **SMALL_PACKETS)
    second = session.submit(ZmumuMass, dataset=zmumu())
    third = session.submit(ZmumuMass, cycles=None, dataset=zmumu(), entries=1000)
    listed = {h.query: h.state for h in session.queries()}
    assert listed[third.query] == "queued"
    assert listed[first.query] in ("preparing", "running")
    results = [h.result(timeout=60) for h in (third, second, first)]
    assert [r.stats.entries for r in results] == [1000, 2304, 2304]
    assert all(h.done() for h in (first, second, third))
    # one after another: the second started once the first had ended
    walls = {h.query: h.summary for h in session.queries()}
    assert walls[first.query]["state"] == walls[second.query]["state"] == "finished"


def test_a_workers_queries_run_on_its_one_query_thread_one_after_another(session):
    """No thread started per query on a worker: a query's start there is a hand-over, and
    a query queued behind another begins the moment it ends (not at a later wake-up)."""
    import json
    import os

    first = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.02}, **SMALL_PACKETS)
    second = session.submit(ZmumuMass, dataset=zmumu())
    assert second.result(timeout=60).stats.entries == first.result(timeout=60).stats.entries
    runs: dict[str, list[tuple[str, str]]] = {}
    for name in os.listdir(session.log_dir):
        if name.startswith("worker") and name.endswith(".jsonl"):
            with open(os.path.join(session.log_dir, name), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
            runs[name] = [(r["query"], r.get("thread")) for r in rows
                          if r.get("event") == "query_started"
                          and r.get("query") in (first.query, second.query)]
    assert sorted(runs) == ["worker-0.jsonl", "worker-1.jsonl"]
    for started in runs.values():
        assert started == [(first.query, "queries"), (second.query, "queries")]


def test_a_queued_query_stopped_before_it_runs_ends_empty_and_the_next_still_runs(session):
    first = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.05}, **SMALL_PACKETS)
    queued = session.submit(ZmumuMass, dataset=zmumu())
    last = session.submit(ZmumuMass, dataset=zmumu())
    queued.stop()
    empty = queued.result(timeout=30)
    assert empty.stopped and empty.stats.entries == 0 and empty.covered == []
    assert first.result(timeout=60).stats.entries == 2304
    assert last.result(timeout=60).stats.entries == 2304


def test_feedback_snapshots_grow_and_leave_the_result_unchanged(session):
    snapshots: list[float] = []

    def seen(outputs):
        snapshots.append(outputs["mass"].sum())

    result = session.process(SLOW, dataset=zmumu(), inputs={"sleep": 0.05}, feedback=["mass"],
                             feedback_interval=0.1, on_feedback=seen, progress=False,
                             **SMALL_PACKETS)
    plain = session.process(SLOW, dataset=zmumu(), inputs={"sleep": 0.0}, progress=False,
                            **SMALL_PACKETS)
    assert len(snapshots) >= 2, snapshots
    assert snapshots == sorted(snapshots) and snapshots[0] > 0 and snapshots[-1] <= 2304
    assert result.outputs["mass"] == plain.outputs["mass"]
    assert result.stats.entries == 2304


def test_ctrl_c_in_process_stops_the_query_and_returns_what_was_done(session):
    pressed = []

    def interrupt(outputs):
        if not pressed:  # as if the user pressed Ctrl-C (once) while it ran
            pressed.append(outputs["n"])
            raise KeyboardInterrupt

    result = session.process(SLOW, dataset=zmumu(), inputs={"sleep": 0.2}, feedback=["n"],
                             feedback_interval=0.1, on_feedback=interrupt, progress=False,
                             **SMALL_PACKETS)
    assert pressed and result.stopped and result.stats.entries < 2304
    n, _ = sequential(result.covered)
    assert result.outputs["n"] == n


def test_a_second_ctrl_c_aborts_the_query_and_is_raised(session):
    def interrupt(outputs):
        raise KeyboardInterrupt  # pressed again and again

    with pytest.raises(KeyboardInterrupt):
        session.process(SLOW, dataset=zmumu(), inputs={"sleep": 0.2}, feedback=["n"],
                        feedback_interval=0.1, on_feedback=interrupt, progress=False,
                        **SMALL_PACKETS)
    last = session.queries()[-1]
    with pytest.raises(QueryAborted):
        last.result(timeout=30)


def test_a_queued_query_is_watched_on_the_data_plane_not_the_control_plane(session,
                                                                            monkeypatch):
    """Heartbeats keep a queued query's handle fed: no control-plane status checks."""
    checks: list[str] = []
    check = session._check_alive
    monkeypatch.setattr(session, "_check_alive",
                        lambda handle: (checks.append(handle.query), check(handle))[1])
    first = session.submit(SLOW, dataset=zmumu(), inputs={"sleep": 0.4}, **SMALL_PACKETS)
    second = session.submit(ZmumuMass, dataset=zmumu())
    t0 = time.monotonic()
    assert second.result(timeout=120).outputs["n"] == 2304
    assert time.monotonic() - t0 > 4  # queued longer than the client's silence check (3 s)
    assert first.done() and checks == []


def test_a_result_sent_while_the_client_asked_how_its_query_stands_is_read_not_fetched(
        session, monkeypatch):
    """The client's data plane went silent (the master merging a huge output) and it asked
    how the query stands; the master answered once it had sent the result: finished, kept.
    The result waits on the data plane: the client reads it there. (It fetched the kept one
    over the control plane instead: 512 MB through the daemon's actors never came in 60 s.)"""
    calls: list[str] = []
    call = session._call
    monkeypatch.setattr(session, "_call",
                        lambda kind, *a, **kw: (calls.append(kind), call(kind, *a, **kw))[1])
    handle = session.submit(ZmumuMass, dataset=zmumu())
    deadline = time.monotonic() + 30
    while handle.query not in session.status()["master"]["results"]:  # sent, not read
        assert time.monotonic() < deadline, "the query did not finish within 30 s"
        time.sleep(0.05)
    session._check_alive(handle)  # what the client does after MASTER_SILENCE_CHECK s silent
    assert handle.result(timeout=30).outputs["n"] == 2304
    assert "fetch_result" not in calls


def test_a_silent_finished_query_is_waited_for_once_then_its_kept_result_is_fetched():
    from pyproof.client.session import silent_query_verdict as verdict

    kept = {"queries": [{"id": "q", "state": "finished"}], "results": ["q"]}
    assert verdict("q", kept, told_finished=False) == "wait"  # it may wait on the data plane
    assert verdict("q", kept, told_finished=True) == "fetch"  # it did not come: lost there
    sending = {"queries": [{"id": "q", "state": "finished"}], "results": []}
    assert verdict("q", sending, told_finished=True) == "wait"
    running = {"queries": [{"id": "q", "state": "running"}], "results": ["q"]}
    assert verdict("q", running, told_finished=True) == "running"
    assert verdict("q", {"queries": [{"id": "p", "state": "running"}]},
                   told_finished=False) == "lost"
    assert verdict("q", {"results": ["q"]}, told_finished=False) == "fetch"  # long ago
    failed = {"queries": [{"id": "q", "state": "failed"}], "results": ["q"]}
    assert verdict("q", failed, told_finished=False) == "wait"  # its error frame, likewise
