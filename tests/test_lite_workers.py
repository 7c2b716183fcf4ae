"""Workers on the fly on the session's own host (a lite cluster: no hosts, no cluster):
added mid-query they get packets at once, removed mid-query they drain exactly once."""

from __future__ import annotations

import time

import pytest

import pyproof
from tests.daemon_helpers import zmumu_reference
from tests.test_hosts_cluster import BASIC, DATASET, Running


def _wait_processed(session, entries: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ((session.status().get("master") or {}).get("query") or {}).get(
            "processed", 0) < entries:
        assert time.monotonic() < deadline, f"the query did not reach {entries} entries"
        time.sleep(0.05)


def test_workers_added_and_removed_mid_query_on_a_lite_cluster_give_the_exact_result():
    with pyproof.connect("lite://?workers=1") as session:
        query = Running(session, sleep=0.15)  # 46 packets: some 7 s on one worker
        _wait_processed(session, 100)
        assert session.add_workers(2) == ["worker-1", "worker-2"]
        assert session.workers == ["worker-0", "worker-1", "worker-2"]
        _wait_processed(session, 600)
        # a worker that took packets leaves mid-query: what it had not delivered is re-queued
        assert session.remove_workers(["worker-1"]) == ["worker-1"]
        assert session.workers == ["worker-0", "worker-2"]
        result = query.get()
        n, reference = zmumu_reference()  # uproot, sequentially
        assert result.outputs["n"] == n == result.stats.entries
        assert (result.outputs["mass"].values() == reference.values()).all()
        assert result.stats.workers["worker-2"].packets > 0, result.stats.workers
        assert result.stats.workers["worker-1"].packets > 0, result.stats.workers
        # the next query runs on the workers left, and on those added between queries
        assert session.add_workers(1) == ["worker-3"]
        with pytest.raises(pyproof.ProofError, match=r"cannot remove worker-9: no such worker "
                                                     r"\(workers: worker-0, worker-2, "
                                                     r"worker-3\)$"):
            session.remove_workers(["worker-9"])
        with pytest.raises(pyproof.ProofError, match=r"cannot remove every worker of session "
                                                     r"[0-9a-f]+: a session keeps at least one"):
            session.remove_workers(3)
        assert session.remove_workers(1) == ["worker-3"]
        result = session.process("tests.sample_selectors:SlowCount", dataset=DATASET,
                                 inputs={"sleep": 0.0}, progress=False, **BASIC)
        assert result.outputs["n"] == n
        assert set(result.stats.workers) <= {"worker-0", "worker-2"}


def test_a_retried_add_workers_request_is_answered_again_and_adds_nothing(monkeypatch):
    import uuid

    from pyproof.actors.registry import Registry
    from pyproof.client import control

    with pyproof.connect("lite://?workers=1") as session:
        fixed = uuid.uuid4()
        with monkeypatch.context() as patch:  # every request gets the same id: a retry
            patch.setattr(control.uuid, "uuid4", lambda: fixed)
            first = session.add_workers(1)
            again = session.add_workers(1)  # its answer was lost: the client asks again
        assert first == again == ["worker-1"]
        assert session.add_workers(1) == ["worker-2"]  # a new request adds
        assert session.workers == ["worker-0", "worker-1", "worker-2"]
        # the durable registry counts them (what a restarted daemon re-adopts)
        registry = Registry(session.cluster.run_dir)
        assert [e.workers for e in registry.entries()] == [3]
        assert session.remove_workers(["worker-1"]) == ["worker-1"]
        assert [e.workers for e in registry.entries()] == [2]
