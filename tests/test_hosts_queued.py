"""A worker that starts on another host while one query runs and another waits is given
both, in order (actors/remote_session.py): it works on the running one at once, as a local
worker does (the master's RunQuery for each, sessions.py); and not one that is over.
Network namespaces, one proofd
each; the client in the root namespace."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import pyproof
from pyproof.transport import auth
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, check_exact, cluster
from tests.test_hosts_netns import PORT
from tests.test_hosts_readopt import remote_pids

pytestmark = pytest.mark.slow  # a long module: started first (conftest)


def test_a_worker_added_on_another_host_works_on_the_running_query_and_then_the_queued(
        netns_hosts: NetnsHosts):  # noqa: F811
    from tests.sample_selectors import SlowCount

    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        # 47 packets of 0.3 s on two workers: some 7 s, the added worker joins within 2
        running = session.submit(SlowCount, dataset=DATASET, inputs={"sleep": 0.3}, **BASIC)
        queued = session.submit(SlowCount, dataset=DATASET, inputs={"sleep": 0.0}, **BASIC)
        deadline = time.monotonic() + 30
        while running.progress().get("entries", 0) == 0:
            assert time.monotonic() < deadline, "the first query made no progress"
            time.sleep(0.1)
        assert session.add_workers(1, host="h2") == ["worker-1@h2"]
        first = running.result(timeout=90)
        check_exact(first)
        # given the running query (not only the last one its host heard of): it took part
        assert first.stats.workers["worker-1@h2"].entries > 0, first.stats.workers
        second = queued.result(timeout=60)
        check_exact(second)


def logged(path, event: str) -> list[dict]:
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("event") == event]


def test_a_worker_restarted_on_another_host_after_a_query_ended_is_not_given_it(
        netns_hosts: NetnsHosts):  # noqa: F811
    from tests.sample_selectors import SlowCount

    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2"), auth.fresh_cluster_secret())
    logs = hosts.hosts["h2"].home / "sandbox" / f"proofd-{PORT}" / "logs"
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        ended = session.process(SlowCount, dataset=DATASET, progress=False, **BASIC)
        check_exact(ended)
        # h2's worker was answered that it is over: its part forgets it (no next query yet)
        deadline = time.monotonic() + 10
        while not logged(logs / "remote-session.jsonl", "query_over"):
            assert time.monotonic() < deadline, "h2's part did not hear the query is over"
            time.sleep(0.1)
        old = remote_pids(url, session.id)["worker-0@h2"]
        os.kill(old, signal.SIGKILL)
        while (new := remote_pids(url, session.id).get("worker-0@h2")) in (None, old):
            assert time.monotonic() < deadline + 20, "h2's worker was not restarted"
            time.sleep(0.2)
        check_exact(session.process(SlowCount, dataset=DATASET, progress=False, **BASIC))
        started = [r["query"] for r in logged(logs / "worker-0@h2.jsonl", "query_started")
                   if r["pid"] == new]
        # the next query only: the one that ended is neither loaded nor asked for again
        assert len(started) == 1 and started[0] not in {
            r["query"] for r in logged(logs / "worker-0@h2.jsonl", "query_started")
            if r["pid"] == old}, started


def test_a_failed_query_is_forgotten_by_the_parts_on_other_hosts(
        netns_hosts: NetnsHosts):  # noqa: F811
    """A query that failed is over for every worker: the master says so in its refusal,
    and h2's part drops it as it drops one that finished (a worker restarting there would
    otherwise load its selector and ask for its packets for nothing)."""
    from tests.sample_selectors import RaisesInProcess

    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2"), auth.fresh_cluster_secret())
    logs = hosts.hosts["h2"].home / "sandbox" / f"proofd-{PORT}" / "logs"
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        with pytest.raises(pyproof.ProofError, match="divided by zero"):
            session.process(RaisesInProcess, dataset=DATASET, inputs={"bad_entry": 1000},
                            progress=False, **BASIC)
        deadline = time.monotonic() + 15
        while not logged(logs / "remote-session.jsonl", "query_over"):
            assert time.monotonic() < deadline, "h2's part did not hear the query is over"
            time.sleep(0.1)
        # the session goes on, on both hosts
        after = session.process(RaisesInProcess, dataset=DATASET, progress=False,
                                inputs={"bad_entry": -1}, **BASIC)
        assert after.outputs["n"] == after.stats.entries == 2304
