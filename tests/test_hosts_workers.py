"""Workers on the fly on the master's own host of a cluster (network namespaces, one proofd
each): added mid-query they get packets at once; removed, they drain exactly once. Files
they write stay on their host and are listed with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pyproof
from pyproof.actors.hosts import SESSIONS_CHECK
from pyproof.transport import auth
from tests.daemon_helpers import zmumu_reference
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, Running, by_host, check_exact, cluster
from tests.test_hosts_netns import PORT, start, wait_for
from tests.test_lite_workers import _wait_processed

pytestmark = pytest.mark.slow  # a long module: started first (conftest)


def test_workers_added_on_the_masters_host_mid_query_take_packets_and_the_result_is_exact(
        netns_hosts: NetnsHosts):  # noqa: F811
    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        query = Running(session, sleep=0.2)
        _wait_processed(session, 100)
        assert session.add_workers(1, host="m") == ["worker-1"]
        # the master's host is full now (2 cores): said so
        with pytest.raises(pyproof.ProofError, match=r"host 'm' has room for 0 more workers "
                                                     r"\(2 cores, 2 in use\), not 1"):
            session.add_workers(1, host="m")
        shown = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "workers", "ls",
                                session.id, "--url", url], env=os.environ,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert [line.split() for line in shown.stdout.splitlines()[1:]] == [
            ["worker-0", "m"], ["worker-1", "m"], ["worker-0@h2", "h2"]]
        # the worker the session opened with on the master's host leaves, mid-query
        _wait_processed(session, 800)
        assert session.remove_workers(["worker-0"]) == ["worker-0"]
        assert sorted(session.workers) == ["worker-0@h2", "worker-1"]
        result = query.get()
        check_exact(result)
        assert result.stats.workers["worker-1"].packets > 0, result.stats.workers
        assert result.stats.workers["worker-1"].host == "m"
        assert set(by_host(result)) == {"m", "h2"}


def test_output_files_stay_on_the_host_that_wrote_them_and_are_listed_with_it(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2"), auth.fresh_cluster_secret())
    run = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "run",
                          "tests.sample_selectors:Skim", "--dataset", DATASET[0],
                          # about 4 s of work: h2's worker, still warming up when a
                          # query this small starts, surely gets packets too
                          "--inputs", json.dumps({"per_entry": 0.002}),
                          "--url", f"{url}?workers=m:1,h2:1"], env=os.environ,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    shown = [line.split(": ", 1)[1] for line in run.stdout.splitlines()
             if line.startswith("output file: ")]
    listed = [tuple(s.split(":", 1)) for s in shown]
    assert {h for h, _ in listed} == {"m", "h2"}, run.stdout
    for host, path in listed:  # each file is in the sandbox of the host that wrote it
        assert path.startswith(str(hosts.hosts[host].home / "sandbox" / "outputs") + "/"), path
        assert os.path.isfile(path)
    n, _ = zmumu_reference()
    import uproot

    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        result = session.process("tests.sample_selectors:Skim", dataset=DATASET,
                                 inputs={"per_entry": 0.002}, progress=False, **BASIC)
        assert result.stats.entries == n
        assert [p for _, p in result.output_file_hosts] == result.output_files
        # every host's worker did work, and wrote files on its own host
        assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
            result.stats.workers
        assert {h for h, _ in result.output_file_hosts} == {"m", "h2"}, \
            result.output_file_hosts
        for host, path in result.output_file_hosts:  # listed with the host that wrote it
            assert path.startswith(str(hosts.hosts[host].home / "sandbox" / "outputs") + "/")
        # the files together hold every selected event exactly once
        selected = sum(uproot.open(p)["events"].num_entries for p in result.output_files)
        assert selected == result.outputs["selected"]


def test_a_hosts_part_of_a_session_is_kept_while_the_master_has_not_heard_it_started(
        netns_hosts: NetnsHosts):  # noqa: F811
    """h2 answers the master's start of its part a check's interval (and 1 s) after its
    worker started (a master's host that hears late, as a loaded one does): h2's check that
    the session still runs surely reaches the master before it knows that part. The master
    counts a part it is starting as alive: the part is kept, and its worker gets packets.
    (Before, h2 closed it and its worker, listed in the session, never got a packet.)"""
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    master = hosts.add("m")
    late = hosts.add("h2", env={"PYPROOF_TEST_HOOKS": "1",
                                "PYPROOF_TEST_START_ANSWER_DELAY": str(SESSIONS_CHECK + 1.0)})
    start(hosts, master, secret, "--cores", "2")
    url = master.url(PORT)
    start(hosts, late, secret, "--cores", "2", "--join", url)
    wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive" for n in ("m", "h2")),
             "m and h2 alive")
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        from tests.sample_selectors import SlowCount

        result = session.process(SlowCount, dataset=DATASET, inputs={"sleep": 0.1},
                                 progress=False, **BASIC)
        check_exact(result)
        assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
            result.stats.workers
