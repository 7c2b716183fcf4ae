"""A session spread over two hosts outlives a restart of a daemon (every control process
SIGKILLed, then `proofd` started again on the same run directory), as a session on one host
does (tests/test_proofd_survival.py): the new daemon re-adopts it, its workers on the other
host keep running (the same processes), its queries are exact and use them, and it closes
leaving nothing behind on either host (network namespaces, one proofd each; the client in
the root namespace). A worker on the other host whose request was on its way through the
master's host at the kill cannot know whether the master granted it packets: it exits
and is restarted, and the master re-queues what it held (exactly once)."""

from __future__ import annotations

import json
import random
import time

import pytest

import pyproof
from pyproof.actors.survival import control_sessions, read_control
from pyproof.supervision.process_tree import is_alive, kill_session, session_members
from pyproof.transport import auth
from tests.daemon_helpers import Background
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, by_host, check_exact, cluster
from tests.test_hosts_netns import PORT, start, wait_for
from tests.test_hosts_readopt import remote_pids, wait_closed_everywhere

pytestmark = pytest.mark.slow  # a long module: started first (conftest)



def _query(session, sleep: float = 0.05):
    from tests.sample_selectors import SlowCount

    # 47 packets on two workers: each surely gets some
    return session.process(SlowCount, dataset=DATASET, inputs={"sleep": sleep},
                           progress=False, **BASIC)


def kill_daemon(run_dir) -> list[int]:
    """SIGKILL a host's daemon: its main process, Thespian admin and logger, root, sessions
    supervisor, gateway and hosts actor, all at once (their process sessions); its sessions
    lead process sessions of their own and run on."""
    info = read_control(str(run_dir))
    assert info is not None, f"no daemon recorded in {run_dir}"
    killed = []
    for sid in control_sessions(info):
        killed += kill_session(sid)
    deadline = time.monotonic() + 10.0
    while is_alive(int(info["pid"])):
        assert time.monotonic() < deadline, "the daemon's main process survived SIGKILL"
        time.sleep(0.05)
    return killed


def unreachable(host, pid: int) -> list[dict]:
    """What worker process `pid` on `host` logged of a master it could not reach."""
    path = host.home / "sandbox" / f"proofd-{PORT}" / "logs" / "worker-0@h2.jsonl"
    with open(path) as f:
        return [r for r in map(json.loads, f)
                if r.get("event") == "master_unreachable" and r.get("pid") == pid]


def daemon_processes(run_dir) -> set[int]:
    """The processes of the daemon recorded in `run_dir` (its control tree)."""
    info = read_control(str(run_dir))
    assert info is not None, f"no daemon recorded in {run_dir}"
    return {p for sid in control_sessions(info) for p in session_members(sid)}


def test_a_daemon_restart_on_the_masters_host_keeps_the_session_spread_over_hosts(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2"), secret)
    m, h2 = hosts.hosts["m"], hosts.hosts["h2"]
    run_dir = m.home / "sandbox" / f"proofd-{PORT}" / "run"
    before = set(hosts.pids(h2))  # h2's daemon, with no session
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        check_exact(_query(session))
        workers = remote_pids(url, session.id)
        assert list(workers) == ["worker-0@h2"], workers
        master = int(session.status()["pid"])
        running = Background(_query, session, 0.1)  # some 2.5 s on two workers
        time.sleep(0.5)
        killed = kill_daemon(run_dir)
        assert master not in killed
        start(hosts, m, secret, "--cores", "2")  # the same port and run directory: adopt
        wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive"
                                    for n in ("m", "h2")), "m and h2 alive")
        check_exact(running.result(90))  # the data plane never needed m's daemon
        for _ in range(2):  # some seconds: h2 checked that the session runs (every 2 s)
            result = _query(session)
            check_exact(result)
            assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
                result.stats.workers
        # the same processes as before: adopted, not started again (but a worker whose
        # request the kill cut: restarted)
        assert int(session.status()["pid"]) == master
        cut = unreachable(hosts.hosts["h2"], workers["worker-0@h2"])
        assert remote_pids(url, session.id) == workers or cut, workers
        assert (run_dir / f"spanned-{session.id}.cbor").exists()
    wait_closed_everywhere(lambda: set(hosts.pids(h2)) - before, run_dir)


def test_a_daemon_restart_on_a_workers_host_keeps_its_part_of_the_session(
        netns_hosts: NetnsHosts):  # noqa: F811
    """h2's worker dials the master through h2's hosts actor (its tunnel): one that was
    asking for a packet when that actor was killed cannot know whether the master granted
    it one, so it exits (worker_loop.py: only its death gives back what it holds) and its
    part's supervisor, which runs on, restarts it. The master must hear that the worker it
    knew is lost (its packets are re-queued) though the exit happened while no hosts actor
    ran on h2: else the query waited for ever for them. Restarted between queries, the
    worker asks nothing meanwhile: it keeps its pid."""
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    m, h2 = hosts.add("m"), hosts.add("h2")
    # h2's restart must take less than the master's --lost-after (README: a host found
    # lost meanwhile has its parts closed): 6 s, not the tests' 1.5 s, on a loaded machine
    start(hosts, m, secret, "--cores", "2", "--lost-after", "6")
    url = m.url(PORT)
    start(hosts, h2, secret, "--cores", "2", "--join", url)
    wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive" for n in ("m", "h2")),
             "m and h2 alive")
    run_dir = h2.home / "sandbox" / f"proofd-{PORT}" / "run"
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        check_exact(_query(session))
        workers = remote_pids(url, session.id)
        assert list(workers) == ["worker-0@h2"], workers
        running = Background(_query, session, 0.1)  # some 2.5 s on two workers
        time.sleep(0.5)
        killed = kill_daemon(run_dir)
        assert workers["worker-0@h2"] not in killed
        start(hosts, h2, secret, "--cores", "2", "--join", url)
        wait_for(url, lambda r: r.get("h2", {}).get("state") == "alive", "h2 back")
        result = running.result(60)
        check_exact(result)
        for _ in range(2):  # some seconds: h2 checked that the session runs (every 2 s)
            result = _query(session)
            check_exact(result)
            assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
                result.stats.workers
        now = remote_pids(url, session.id)
        assert list(now) == ["worker-0@h2"], now  # restarted (a new pid), or kept
        assert session.status()["workers"] == ["worker-0", "worker-0@h2"]
        part = [p for p in set(hosts.pids(h2)) if p == now["worker-0@h2"]]
        assert part, f"h2's worker {now} does not run on h2"
        # between queries the worker asks nothing: it dials the new tunnel when it next
        # asks, and keeps its pid
        kill_daemon(run_dir)
        start(hosts, h2, secret, "--cores", "2", "--join", url)
        wait_for(url, lambda r: r.get("h2", {}).get("state") == "alive", "h2 back again")
        result = _query(session)
        check_exact(result)
        assert by_host(result).get("h2", 0) > 0, result.stats.workers
        assert remote_pids(url, session.id) == now
    wait_closed_everywhere(lambda: set(hosts.pids(h2)) - daemon_processes(run_dir),
                           m.home / "sandbox" / f"proofd-{PORT}" / "run")


@pytest.mark.parametrize("seed", [7])
def test_daemon_restarts_on_the_masters_host_at_random_moments_of_queries_lose_nothing(
        netns_hosts: NetnsHosts, seed: int):  # noqa: F811
    """Short packets (many requests on their way through the master's host at any moment):
    each query cut by a restart completes, exactly. Seeded: the kill delays replay."""
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2"), secret)
    run_dir = hosts.hosts["m"].home / "sandbox" / f"proofd-{PORT}" / "run"
    rng = random.Random(seed)
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        for i in range(8):
            delay = rng.uniform(0.05, 0.6)
            print(f"seed {seed}, restart {i}: {delay:.2f} s into the query")
            running = Background(_query, session, 0.02)
            time.sleep(delay)
            kill_daemon(run_dir)
            start(hosts, hosts.hosts["m"], secret, "--cores", "2")
            wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive"
                                        for n in ("m", "h2")), "m and h2 alive")
            check_exact(running.result(60))
        result = _query(session)  # both hosts' workers still take part
        check_exact(result)
        assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
            result.stats.workers
