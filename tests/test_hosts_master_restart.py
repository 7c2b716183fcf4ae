"""A session spread over hosts whose master is restarted (killed; its session supervisor
starts a new one): the new master counts the workers of every host, and its queries run on
all of them, exactly (network namespaces, one proofd each; the client in the root
namespace)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import pyproof
from pyproof.transport import auth
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, Running, by_host, check_exact, cluster
from tests.test_hosts_readopt import remote_pids, wait_for_master

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

RESTARTED_WITHIN = 20.0  # seconds: a new master answers, counting every host's workers


def _query(session):
    from tests.sample_selectors import SlowCount

    # 47 packets of 0.1 s on two workers: each surely gets some
    return session.process(SlowCount, dataset=DATASET, inputs={"sleep": 0.1},
                           progress=False, **BASIC)


def _kill_master(session) -> None:
    """SIGKILL the session's master (the pid its status names) and wait, bounded, for the
    new one to count the workers of both hosts."""
    old = int(session.status()["pid"])
    os.kill(old, signal.SIGKILL)
    wait_for_master(session, old)


def test_a_restarted_masters_queries_run_on_the_workers_of_every_host(
        netns_hosts: NetnsHosts):  # noqa: F811
    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        result = _query(session)
        check_exact(result)
        assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, by_host(result)
        _kill_master(session)
        for _ in range(2):  # the new master's queries, one after the other
            result = _query(session)
            check_exact(result)
            assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
                result.stats.workers


def test_a_master_killed_mid_query_fails_that_query_and_the_next_runs_on_every_host(
        netns_hosts: NetnsHosts):  # noqa: F811
    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        running = Running(session, sleep=0.2)
        deadline = time.monotonic() + 30
        while ((session.status().get("master") or {}).get("query") or {}).get(
                "processed", 0) < 200:
            assert time.monotonic() < deadline, "the query made no progress"
            time.sleep(0.1)
        _kill_master(session)
        with pytest.raises(pyproof.QueryError, match=r"master was restarted"):
            running.get(timeout=60)
        # h2's worker, busy with the dead master's query, is back for the new one's
        result = _query(session)
        check_exact(result)
        assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
            result.stats.workers


def logged(home: Path, event: str) -> list[dict]:
    """The records of `event` in the logs of a host (its home)."""
    records = []
    for path in sorted(home.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


def queries_started(home: Path, pid: int) -> list[str]:
    """The queries the worker process `pid` of a host (its home) started, from its log."""
    return [r["query"] for r in logged(home, "query_started") if r.get("pid") == pid]


def test_a_worker_restarting_on_another_host_after_a_master_restart_gets_none_of_its_queries(
        netns_hosts: NetnsHosts):  # noqa: F811
    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    home = netns_hosts.hosts["h2"].home
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        check_exact(_query(session))
        old = remote_pids(url, session.id)["worker-0@h2"]
        first = queries_started(home, old)
        assert len(first) == 1, first
        _kill_master(session)
        deadline = time.monotonic() + RESTARTED_WITHIN
        while not [r for r in logged(home, "remote_master_restarted")
                   if r.get("session") == session.id]:
            assert time.monotonic() < deadline, "h2 did not hear that the master restarted"
            time.sleep(0.1)
        # h2's worker restarts before the new master's first query: the old master's query
        # is over, it must not be given it (it would load the selector for nothing)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + RESTARTED_WITHIN
        while (new := remote_pids(url, session.id).get("worker-0@h2")) in (None, old):
            assert time.monotonic() < deadline, "h2's worker was not restarted"
            time.sleep(0.2)
        result = _query(session)
        check_exact(result)
        assert by_host(result).get("h2", 0) > 0, result.stats.workers
        # queries run in the order they come: had it been given the old one, it started
        # that one before the one it just worked on
        started = queries_started(home, new)
        assert len(started) == 1 and started != first, (first, started)
