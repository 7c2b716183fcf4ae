"""The hosts actor of a session's master's host is killed (its supervisor restarts it): the
session spread over hosts keeps its workers on the other hosts (the new actor reloads its
record, hosts/spans.py), its queries run there, exactly, and it closes leaving nothing
behind there (network namespaces, one proofd each; the client in the root namespace)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import pyproof
from pyproof.client.control import dial_daemon
from pyproof.transport import auth
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_cluster import BASIC, DATASET, by_host, check_exact, cluster
from tests.test_hosts_netns import PORT

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

RESTARTED_WITHIN = 20.0  # seconds: the root supervisor answers a killed child within this
CLOSED_WITHIN = 30.0  # h2 hears the session ended at its next check (every 2 s)


def wait_closed_everywhere(left_on_h2: Callable[[], set[int]], run_dir: Path) -> None:
    """Wait (bounded) until a closed session left no process on h2 (`left_on_h2()` is
    empty) and no record of it in the master's host's run directory."""
    deadline = time.monotonic() + CLOSED_WITHIN
    while left := left_on_h2():
        assert time.monotonic() < deadline, \
            f"processes left on h2 after the session closed: {left}"
        time.sleep(0.2)
    while left := [p.name for p in run_dir.iterdir() if p.name.startswith("spanned-")]:
        assert time.monotonic() < deadline, f"left in m's run directory: {left}"
        time.sleep(0.2)


def hosts_actor_pid(url: str) -> int | None:
    """The pid of the daemon's hosts actor, as its supervision tree shows it."""
    control = dial_daemon(url, attempt_timeout=2.0, connect_within=5.0)
    try:
        tree = control.call("tree", deadline=10.0)["tree"]
    finally:
        control.close()
    return next((c.get("pid") for c in tree["children"] if c["id"] == "hosts"), None)


def remote_pids(url: str, sid: str) -> dict[str, int]:
    """The session's workers on other hosts and their pids (`proofctl workers ls`)."""
    shown = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "workers", "ls", sid,
                            "--url", url, "--json"], env=os.environ, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return {r["name"]: r["pid"] for r in json.loads(shown.stdout)["workers"]
            if r.get("host") != "m"}


def _query(session):
    from tests.sample_selectors import SlowCount

    # 47 packets of 0.1 s on two workers: each surely gets some
    return session.process(SlowCount, dataset=DATASET, inputs={"sleep": 0.1},
                           progress=False, **BASIC)


def wait_for_master(session, old: int) -> None:
    """Until a new master (not pid `old`) counts the workers of both hosts (bounded)."""
    deadline = time.monotonic() + RESTARTED_WITHIN
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            status = session.status()
        except pyproof.ProofError:  # the master restarting: asked again
            status = {}
        if status.get("pid") not in (None, old) and status.get("workers") == [
                "worker-0", "worker-0@h2"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"no new master counting h2's worker within {RESTARTED_WITHIN:g} s "
                         f"(the master was pid {old}); its status: {status}")


# "and master": the session's master is killed with it, so the new master's start is told
# to nobody (MasterRestarted to the dead actor): the new hosts actor asks the session
@pytest.mark.parametrize("killed", ["hosts actor", "hosts actor and master",
                                    "hosts actor frozen"])
def test_a_restarted_hosts_actor_keeps_the_sessions_workers_on_other_hosts(
        netns_hosts: NetnsHosts, killed: str):  # noqa: F811
    hosts = netns_hosts
    url = cluster(hosts, ("m", "h2"), auth.fresh_cluster_secret())
    h2 = hosts.hosts["h2"]
    run_dir = hosts.hosts["m"].home / "sandbox" / f"proofd-{PORT}" / "run"
    before = set(hosts.pids(h2))  # h2's daemon, with no session
    with pyproof.connect(f"{url}?workers=m:1,h2:1") as session:
        check_exact(_query(session))
        workers = remote_pids(url, session.id)
        assert list(workers) == ["worker-0@h2"], workers
        old, master = hosts_actor_pid(url), int(session.status()["pid"])
        assert old is not None
        # frozen: its supervisor's watchdog finds it hung and kills it
        os.kill(old, signal.SIGSTOP if killed == "hosts actor frozen" else signal.SIGKILL)
        if killed == "hosts actor and master":
            os.kill(master, signal.SIGKILL)
            wait_for_master(session, master)
        deadline = time.monotonic() + RESTARTED_WITHIN
        while hosts_actor_pid(url) in (None, old):
            assert time.monotonic() < deadline, "the hosts actor was not restarted"
            time.sleep(0.2)
        for _ in range(2):  # some seconds: h2 checked that the session runs (every 2 s)
            result = _query(session)
            check_exact(result)
            assert {h for h, n in by_host(result).items() if n} == {"m", "h2"}, \
                result.stats.workers
        # the same worker process as before: kept, not started again
        assert remote_pids(url, session.id) == workers
        assert (run_dir / f"spanned-{session.id}.cbor").exists()  # its record, rewritten
    wait_closed_everywhere(lambda: set(hosts.pids(h2)) - before, run_dir)
