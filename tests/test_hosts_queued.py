"""A worker that starts on another host while one query runs and another waits is given
both, in order (actors/remote_session.py): it works on the running one at once, as a local
worker does (the master's RunQuery for each, sessions.py). Network namespaces, one proofd
each; the client in the root namespace."""

from __future__ import annotations

import time

import pytest

import pyproof
from pyproof.transport import auth
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, check_exact, cluster

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
