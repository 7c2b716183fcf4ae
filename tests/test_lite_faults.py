"""Failures inside a lite cluster: lost workers re-queue their work exactly once;
a packet that keeps killing workers is given up and reported, not retried forever."""

from __future__ import annotations

import os
import signal
import time

import pytest

import pyproof
from tests.conftest import data_file, zmumu
from tests.daemon_helpers import Background
from tests.test_lite import assert_same_zmumu, reference_zmumu


def worker_pids(session, count: int = 2) -> dict[str, int]:
    """Worker id -> pid, as the master knows them (waits until it knows `count`)."""
    deadline = time.monotonic() + 10
    while True:
        names = session.status()["master"]["workers"]
        pids = {n.partition("#")[0]: int(n.partition("#")[2]) for n in names}
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def marked(path, count: int, timeout: float) -> list[tuple[int, int]]:
    """The entry ranges a MarksPackets worker wrote to `path` (its whole lines), once there
    are at least `count` or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        ranges = [tuple(map(int, line.split())) for line in text.split("\n")[:-1]]
        if len(ranges) >= count or time.monotonic() > deadline:
            return ranges
        time.sleep(0.01)


def test_a_worker_killed_after_delivering_nothing_is_requeued_exactly_once(tmp_path):
    with pyproof.connect("lite://?workers=2") as session:
        pids = worker_pids(session)
        running = Background(session.process, "tests.sample_selectors:MarksPackets",
                             dataset=zmumu(), inputs={"per_entry": 0.0004, "slow": "worker-0",
                                                      "factor": 8.0, "marks": str(tmp_path)},
                             packetizer="basic", packetizer_params={"packet_entries": 64},
                             progress=False)
        # worker-1 holds packets it processed, not yet delivered (outputs go at the query's
        # end). Its own marks say so, not the query's count of entries: a fresh worker may
        # still be importing uproot and co. (actors/warmup.py, seconds under load) while
        # worker-0 processes hundreds of entries; then it held nothing when killed. worker-0
        # is slowed (0.2 s a packet) so that the query still runs when worker-1 joins late.
        held = marked(tmp_path / f"worker-1-{pids['worker-1']}", 2, timeout=30)
        assert len(held) >= 2, f"worker-1 processed {len(held)} packets in 30 s"
        os.kill(pids["worker-1"], signal.SIGKILL)
        held = marked(tmp_path / f"worker-1-{pids['worker-1']}", 0, timeout=0)  # all of them
        result = running.result(60)
        assert_same_zmumu(result.outputs, reference_zmumu([data_file("uproot-Zmumu.root")]))
        assert result.stats.entries == 2304
        requeued = result.lineage["requeued"]
        assert requeued and all(r["worker"].startswith("worker-1#") for r in requeued)
        # every range it processed came back (with the one it was in, if any), once each
        ranges = sorted((r["entry_start"], r["entry_stop"]) for r in requeued)
        assert len(set(ranges)) == len(ranges)
        assert all(any(a <= start and stop <= b for a, b in ranges) for start, stop in held)
        # the supervisor replaced the worker: the session has two again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and worker_pids(session).get("worker-1") in (
                None, pids["worker-1"]):
            time.sleep(0.05)
        assert worker_pids(session)["worker-1"] != pids["worker-1"]


def test_a_packet_that_keeps_killing_workers_is_poisoned_and_reported():
    with pyproof.connect("lite://?workers=2") as session:
        options = dict(dataset=zmumu(), inputs={"deadly": 1000}, packetizer="basic",
                       packetizer_params={"packet_entries": 100}, progress=False)
        with pytest.raises(pyproof.QueryError, match=r"poisoned") as info:
            session.process("tests.sample_selectors:DiesOnEntry", **options)
        assert info.value.remote.context["entry_start"] <= 1000
        assert info.value.remote.context["file"] == data_file("uproot-Zmumu.root")
        result = session.process("tests.sample_selectors:DiesOnEntry", on_missing="skip",
                                 **options)
        poisoned = result.lineage["poisoned"]
        assert len(poisoned) >= 1
        assert any(p["entry_start"] <= 1000 < p["entry_stop"] for p in poisoned)
        assert all(len(p["workers"]) == 3 for p in poisoned)
        lost = sum(p["entry_stop"] - p["entry_start"] for p in poisoned)
        assert result.stats.entries == result.outputs["n"] == 2304 - lost
        assert any("poisoned" in m["reason"] for m in result.missing)


def test_a_selector_stuck_in_a_packet_fails_the_query_naming_it_and_the_worker_restarts():
    with pyproof.connect("lite://?workers=2") as session:
        before = worker_pids(session)
        t0 = time.monotonic()
        with pytest.raises(pyproof.QueryError, match=r"PacketTimeout: .*more than 1 s") as info:
            session.process("tests.sample_selectors:StuckOnEntry", dataset=zmumu(),
                            inputs={"stuck": 500}, packet_timeout=1.0, packetizer="basic",
                            packetizer_params={"packet_entries": 100}, progress=False)
        assert time.monotonic() - t0 < 20
        where = info.value.remote.context
        assert where["file"] == data_file("uproot-Zmumu.root")
        assert where["entry_start"] <= 500 < where["entry_stop"]
        assert where["worker"] in before
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and worker_pids(session).get(where["worker"]) in (
                None, before[where["worker"]]):
            time.sleep(0.05)
        assert worker_pids(session)[where["worker"]] != before[where["worker"]]
        # the session goes on
        assert session.process("tests.sample_selectors:ZmumuMass", dataset=zmumu(),
                               progress=False).stats.entries == 2304
