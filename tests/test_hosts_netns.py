"""Many hosts, each a network namespace with its own proofd: joining, discovery, loss.

The client (this test) is a fourth host: the root namespace, on the bridge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from pyproof.client.control import dial_daemon
from pyproof.transport import auth
from tests.netns_hosts import Host, NetnsHosts, netns_hosts  # noqa: F401 (the fixture)

PORT = 1093  # every namespace has its own ports
FAST = ["--heartbeat", "0.3", "--lost-after", "1.5"]


def start(hosts: NetnsHosts, host: Host, secret: bytes, *extra: str) -> None:
    path = host.home / "cluster.secret"
    if not path.exists():  # a restarted host keeps its file
        auth.write_secret(path, secret)
    hosts.proofctl(host, "daemon", "start", "--host", host.address, "--port", str(PORT),
                   "--name", host.name, "--cluster-secret", str(path), *FAST, *extra)


def registry(url: str) -> dict[str, Any]:
    control = dial_daemon(url, attempt_timeout=2.0, connect_within=5.0)
    try:
        return control.call("hosts", deadline=10.0)
    finally:
        control.close()


def wait_for(url: str, check, what: str, timeout: float = 20.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = {h["name"]: h for h in registry(url)["hosts"]}
        if check(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}; hosts: {rows}")
        time.sleep(0.2)


def test_hosts_join_are_listed_lost_when_killed_rejoin_and_survive_a_master_restart(
        netns_hosts: NetnsHosts, tmp_path):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    m, h2, h3 = hosts.add("m"), hosts.add("h2"), hosts.add("h3")
    listed = tmp_path / "proof.conf"
    listed.write_text("h9 proof://198.19.0.9:1093 cores=16 labels=gpu  # never started\n")
    start(hosts, m, secret, "--hosts", str(listed), "--labels", "master")
    url = m.url(PORT)
    for host in (h2, h3):
        start(hosts, host, secret, "--join", url, "--data-path", "/data/" + host.name)
    rows = wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive"
                                       for n in ("m", "h2", "h3")), "three hosts alive")
    assert rows["h2"]["address"] == h2.url(PORT)
    assert rows["h2"]["data_paths"] == ["/data/h2"]
    assert rows["m"]["labels"] == ["master"]
    assert (rows["h9"]["state"], rows["h9"]["cores"], rows["h9"]["last_heard"]) == (
        "listed", 16, None)

    # proofctl hosts, from the client's host (the root namespace)
    env = {**os.environ, "PYPROOF_URL": url}
    shown = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "hosts"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["host", "address", "state", "cores", "workers", "last",
                                "heard"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["h2", h2.url(PORT), "alive"], ["h3", h3.url(PORT), "alive"],
        ["h9", "proof://198.19.0.9:1093", "listed"], ["m", url, "alive"]]
    as_json = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "hosts", "--json",
                              "--url", url], env=os.environ, capture_output=True, text=True,
                             timeout=60)
    assert {h["name"] for h in json.loads(as_json.stdout)["hosts"]} == {"m", "h2", "h3", "h9"}

    # a whole host killed (every process in its namespace): lost within a few heartbeats
    hosts.kill(h3)
    lost_at = time.monotonic()
    rows = wait_for(url, lambda r: r["h3"]["state"] == "lost", "h3 lost")
    assert time.monotonic() - lost_at < 6.0
    assert rows["h2"]["state"] == "alive"
    # restarted, it rejoins
    start(hosts, h3, secret, "--join", url)
    rows = wait_for(url, lambda r: r["h3"]["state"] == "alive", "h3 rejoined")
    assert rows["h3"]["joins"] == 2

    # the master restarted (killed outright): both hosts announce themselves again
    hosts.kill(m)
    start(hosts, m, secret)
    wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive"
                                for n in ("m", "h2", "h3")), "hosts re-announced")


def test_a_host_without_the_cluster_secret_cannot_join(netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    m, bad = hosts.add("m"), hosts.add("bad")
    start(hosts, m, auth.fresh_cluster_secret())
    url = m.url(PORT)
    start(hosts, bad, auth.fresh_cluster_secret(), "--join", url)  # another cluster's secret
    deadline = time.monotonic() + 10.0
    while True:  # the impostor says why it is not admitted
        joined = registry(bad.url(PORT))["joined"]
        if "refused to admit" in joined["error"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert joined["state"] == "joining"
    assert "refused to admit this host (wrong secret): check that both use the same " \
           "--cluster-secret file" in joined["error"]
    status = registry(url)
    assert [h["name"] for h in status["hosts"]] == ["m"]
    assert status["channel"]["refusals"].get("wrong secret", 0) >= 1
    assert status["channel"]["channels"] == 0
