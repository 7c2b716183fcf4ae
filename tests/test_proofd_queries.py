"""Queries on a real proofd: re-attach and wait for a running one; proofctl queries."""

from __future__ import annotations

import json
import time

import pytest

import pyproof
from pyproof.cli.main import main
from pyproof.errors import QueryAborted
from tests.conftest import data_file
from tests.daemon_helpers import Daemon

SLOW = "tests.sample_selectors:SlowCount"
ZMUMU = data_file("uproot-Zmumu.root") + ":events"
SMALL_PACKETS = {"packetizer": "basic", "packetizer_params": {"packet_entries": 100}}


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def test_a_reattached_client_waits_for_a_query_still_running_and_gets_its_result(daemon):
    session = pyproof.connect(f"{daemon.url}?workers=2")
    handle = session.submit(SLOW, dataset=ZMUMU, inputs={"sleep": 0.1}, **SMALL_PACKETS)
    session_id = session.detach()
    with pyproof.connect(daemon.url, session=session_id) as again:
        [listed] = again.queries()
        assert listed.query == handle.query and listed.state in ("preparing", "running")
        result = listed.result(timeout=60)
        assert result.stats.entries == result.outputs["n"] == 2304
        assert [h.state for h in again.queries()] == ["finished"]


def queries_json(daemon, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["queries", "--url", daemon.url, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_proofctl_lists_queries_and_stops_or_aborts_one(daemon, capsys):
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        first = session.submit(SLOW, dataset=ZMUMU, inputs={"sleep": 0.2}, **SMALL_PACKETS)
        second = session.submit(SLOW, dataset=ZMUMU, inputs={"sleep": 0.2}, **SMALL_PACKETS)
        deadline = time.monotonic() + 30
        while first.progress().get("entries", 0) == 0:
            assert time.monotonic() < deadline
        rows = queries_json(daemon, capsys, session.id)
        assert [(r["session"], r["id"]) for r in rows] == [(session.id, first.query),
                                                            (session.id, second.query)]
        assert [r["state"] for r in rows] == ["running", "queued"]
        assert main(["queries", "--url", daemon.url, "stop", first.query]) == 0
        assert f"query {first.query} ({session.id}): stop asked" in capsys.readouterr().out
        partial = first.result(timeout=30)
        assert partial.stopped and partial.stats.entries < 2304
        assert main(["queries", "--url", daemon.url, "abort", second.query]) == 0
        with pytest.raises(QueryAborted):
            second.result(timeout=30)
        states = {r["id"]: r["state"] for r in queries_json(daemon, capsys)}
        assert states == {first.query: "stopped", second.query: "aborted"}
        assert main(["queries", "--url", daemon.url, "stop", "nosuchquery"]) == 1
        assert "no session of yours knows query 'nosuchquery'" in capsys.readouterr().err


def test_a_proofd_sessions_workers_start_with_the_data_modules_and_no_warm_up(daemon):
    # proofd's admin loads numpy, uproot, awkward and hist before its first actor; every
    # worker is forked from it (actors/daemon.py --preload-data, actors/warmup.py)
    with pyproof.connect(f"{daemon.url}?workers=2") as session:
        result = session.process("tests.warmup_selectors:Warming", cycles=10, progress=False)
    workers = result.outputs["workers"]
    assert workers >= 1 and result.outputs["count"] == 10
    assert result.outputs["loaded"] == workers
    assert result.outputs["warmed"] == result.outputs["warming"] == 0
