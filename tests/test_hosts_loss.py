"""The master's host lost (network namespaces, one proofd each; the client in the root
namespace): the session's queries fail cleanly, naming the host, and the session's parts on
the other hosts stop."""

from __future__ import annotations

import re
import time

import pytest

import pyproof
from pyproof.transport import auth
from tests.netns_hosts import NetnsHosts, _ip, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import Running, cluster

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

ERROR_WITHIN = 25.0  # the client's error after the master's host is cut off (seconds)
REAPED_WITHIN = 30.0  # the session's processes on another host gone after that


def _wait_gone(hosts: NetnsHosts, host, pids: set[int], timeout: float) -> set[int]:
    """The pids of `pids` still running on `host` after at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids & set(hosts.pids(host))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_the_master_host_cut_off_fails_the_query_naming_it_and_its_remote_workers_stop(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2"), auth.fresh_cluster_secret())
    m, h2 = hosts.hosts["m"], hosts.hosts["h2"]
    before = set(hosts.pids(h2))
    session = pyproof.connect(f"{url}?workers=m:1,h2:2")
    try:
        parts = set(hosts.pids(h2)) - before  # the session's part on h2: supervisor, workers
        assert len(parts) >= 3, parts
        query = Running(session, sleep=0.3)
        deadline = time.monotonic() + 30
        while ((session.status().get("master") or {}).get("query") or {}).get(
                "processed", 0) < 100:
            assert time.monotonic() < deadline, "the query made no progress"
            time.sleep(0.1)
        _ip("link", "set", m.veth, "down")  # the master's host is cut off from everyone
        cut = time.monotonic()
        with pytest.raises(pyproof.ProofError, match=(
                rf"^query [0-9a-f]+: the session's master host 'm' "
                rf"\({re.escape(url)}\) does not answer: it died or is cut off from this "
                rf"client; the session and its queries are lost: open a new session once "
                rf"the host is back \(")):
            query.get(timeout=ERROR_WITHIN + 30)
        took = time.monotonic() - cut
        assert took < ERROR_WITHIN, f"the error came after {took:.1f} s"
        # h2 stops hearing the master: the session's part there is reaped
        left = _wait_gone(hosts, h2, parts, REAPED_WITHIN)
        assert not left, f"the session's processes on h2 still run: {sorted(left)}"
        assert set(hosts.pids(h2)) >= before - parts  # h2's daemon itself runs on
    finally:
        start = time.monotonic()
        session.close()  # the master is unreachable: bounded
        assert time.monotonic() - start < 20


def test_a_host_stopped_with_proofctl_leaves_at_once_drains_and_the_query_completes_exactly(
        netns_hosts: NetnsHosts):  # noqa: F811
    from tests.test_hosts_cluster import BASIC, DATASET, by_host, check_exact
    from tests.test_hosts_netns import PORT, registry

    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2", "h3"), auth.fresh_cluster_secret())
    h3 = hosts.hosts["h3"]
    with pyproof.connect(f"{url}?workers=h2:2,h3:2") as session:
        query = Running(session, sleep=0.4)  # 46 packets: some 5 s on four workers
        deadline = time.monotonic() + 30
        while ((session.status().get("master") or {}).get("query") or {}).get(
                "processed", 0) < 300:
            assert time.monotonic() < deadline, "the query made no progress"
            time.sleep(0.1)
        stopped = hosts.proofctl(h3, "daemon", "stop", "--port", str(PORT))
        assert stopped.stdout.splitlines() == [
            f"left the cluster of {url} (2 workers drained)",
            f"proofd on port {PORT} stopped"], stopped
        # said goodbye: "left" at once (not "lost" after missed heartbeats), nothing of it
        # runs any more, and the query still runs, on h2 alone
        assert {h["name"]: h["state"] for h in registry(url)["hosts"]} == {
            "m": "alive", "h2": "alive", "h3": "left"}
        assert hosts.pids(h3) == []
        assert query.thread.is_alive(), "the query ended before h3 left: nothing was shown"
        result = query.get()
        check_exact(result)  # every entry once
        # drained: each of h3's workers sent what it had processed; at most the packet it
        # was given and had not started went back to the queue
        requeued = [r["worker"].partition("#")[0] for r in result.lineage["requeued"]]
        assert all(requeued.count(w) <= 1 for w in ("worker-0@h3", "worker-1@h3")), \
            result.lineage["requeued"]
        assert by_host(result)["h3"] > 0 and by_host(result)["h2"] > 0, by_host(result)
        # the session goes on without h3; h3 stays "left", never "lost"
        result = session.process("tests.sample_selectors:SlowCount", dataset=DATASET,
                                 inputs={"sleep": 0.0}, progress=False, **BASIC)
        check_exact(result)
        assert set(by_host(result)) == {"h2"}
        assert {h["name"]: h["state"] for h in registry(url)["hosts"]}["h3"] == "left"


def test_a_joined_hosts_session_part_is_registered_readopted_after_a_restart_and_stopped(
        netns_hosts: NetnsHosts):  # noqa: F811
    """The part of a session on a joined host is in that host's durable registry (its
    worker count kept right); that host's daemon dying and started again re-adopts it (the
    same worker processes run the next query), or cleans it if its session was closed
    meanwhile; `proofctl daemon stop` there stops it."""
    from pyproof.actors.registry import Registry
    from pyproof.actors.survival import stop_control_leftovers
    from pyproof.supervision.process_tree import is_alive
    from tests.test_hosts_cluster import BASIC, DATASET, by_host, check_exact
    from tests.test_hosts_netns import PORT, start, wait_for

    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    m, h2 = hosts.add("m"), hosts.add("h2")
    start(hosts, m, secret, "--cores", "2", "--lost-after", "60")  # a restart is no loss
    url = m.url(PORT)
    start(hosts, h2, secret, "--cores", "4", "--join", url)
    wait_for(url, lambda r: r.get("h2", {}).get("state") == "alive", "h2 joined")
    run_dir = h2.home / "sandbox" / f"proofd-{PORT}" / "run"
    registry = Registry(str(run_dir))

    def part(sid: str, want: int) -> dict[str, int]:
        """h2's registered part of `sid` once it has `want` workers (bounded): worker pids."""
        deadline = time.monotonic() + 20
        while True:
            entry = {e.session_id: e for e in registry.entries()}.get(sid)
            if entry is not None and entry.workers == want == len(entry.children):
                return {w: p.pid for w, p in entry.children.items()}
            assert time.monotonic() < deadline, f"h2's registry: {registry.entries()}"
            time.sleep(0.1)

    closed = pyproof.connect(f"{url}?workers=h2:1")  # closed while h2's daemon is down
    with pyproof.connect(f"{url}?workers=h2:2") as session:
        assert registry.remote_parts() == {closed.id: ("m", url), session.id: ("m", url)}
        gone = part(closed.id, 1)
        assert sorted(part(session.id, 2)) == ["worker-0@h2", "worker-1@h2"]
        assert session.add_workers(1, host="h2") == ["worker-2@h2"]
        part(session.id, 3)
        assert session.remove_workers(["worker-2@h2"]) == ["worker-2@h2"]
        pids = part(session.id, 2)
        # h2's daemon dies (its control tree; the session's part lives on) and is started
        # again: it re-adopts the part, whose workers run the next query
        stop_control_leftovers(str(run_dir))
        closed.close()
        start(hosts, h2, secret, "--cores", "4", "--join", url)
        wait_for(url, lambda r: r["h2"]["state"] == "alive", "h2 back")
        # the part of the session closed meanwhile is cleaned (its master says it ended)
        deadline = time.monotonic() + 20
        while any(is_alive(p) for p in gone.values()) or closed.id in registry.remote_parts():
            assert time.monotonic() < deadline, f"the closed session's part runs: {gone}"
            time.sleep(0.1)
        result = session.process("tests.sample_selectors:SlowCount", dataset=DATASET,
                                 inputs={"sleep": 0.0}, progress=False, **BASIC)
        check_exact(result)
        assert set(by_host(result)) == {"h2"}
        assert part(session.id, 2) == pids and all(is_alive(p) for p in pids.values())
        # proofctl daemon stop on h2 finds the part in its registry and stops it
        hosts.proofctl(h2, "daemon", "stop", "--port", str(PORT))
        deadline = time.monotonic() + 10
        while any(is_alive(p) for p in pids.values()):
            assert time.monotonic() < deadline, f"h2's workers still run: {pids}"
            time.sleep(0.1)
