"""Sessions spread over hosts (network namespaces, one proofd each), the client on a fourth
host (the root namespace): exact results, host loss, hosts and workers added mid-query."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import pyproof
from pyproof.actors.host_links import ClusterClient, ClusterError, cluster_address
from pyproof.hosts.channel import worker_key
from pyproof.transport import auth, sealing
from pyproof.transport.frames import encode_frame
from tests.conftest import data_file
from tests.daemon_helpers import zmumu_reference
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_netns import PORT, registry, start, wait_for

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

DATASET = [f"{data_file('uproot-Zmumu.root')}:events"]
BASIC = {"packetizer": "basic", "packetizer_params": {"packet_entries": 50}}


def cluster(hosts: NetnsHosts, names: tuple[str, ...], secret: bytes) -> str:
    """The first name is the master; each host offers 2 cores; returns the master's URL."""
    master, *others = (hosts.add(n) for n in names)
    start(hosts, master, secret, "--cores", "2")
    url = master.url(PORT)
    for host in others:
        start(hosts, host, secret, "--cores", "2", "--join", url)
    wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive" for n in names),
             f"{names} alive")
    return url


def check_exact(result) -> None:
    n, reference = zmumu_reference()
    assert result.outputs["n"] == n == result.stats.entries
    assert (result.outputs["mass"].values() == reference.values()).all()


def by_host(result) -> dict[str, int]:
    out: dict[str, int] = {}
    for stats in result.stats.workers.values():
        out[stats.host] = out.get(stats.host, 0) + stats.entries
    return out


class Running:
    """A query in a thread (bounded join), so a test can act while it runs."""

    def __init__(self, session, **inputs) -> None:
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(session, inputs), daemon=True)
        self.thread.start()

    def _run(self, session, inputs) -> None:
        try:
            from tests.sample_selectors import SlowCount

            self.result = session.process(SlowCount, dataset=DATASET, inputs=inputs,
                                          progress=False, **BASIC)
        except BaseException as exc:
            self.error = exc

    def get(self, timeout: float = 120.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the query did not end within {timeout:g} s"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.mark.parametrize("connection", ["callback", "dial"])
def test_a_sessions_workers_spread_over_three_hosts_give_the_exact_result(
        netns_hosts: NetnsHosts, connection: str):  # noqa: F811
    from tests.sample_selectors import SlowCount

    url = cluster(netns_hosts, ("m", "h2", "h3"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=6&connection={connection}") as session:
        assert sorted(session.workers) == ["worker-0", "worker-0@h2", "worker-0@h3",
                                           "worker-1", "worker-1@h2", "worker-1@h3"]
        rows = {h["name"]: h for h in registry(url)["hosts"]}
        assert {n: rows[n]["workers"] for n in ("m", "h2", "h3")} == {"m": 2, "h2": 2, "h3": 2}
        result = session.process(SlowCount, dataset=DATASET, inputs={"sleep": 0.02},
                                 progress=False, **BASIC)
        check_exact(result)
        assert {w: s.host for w, s in result.stats.workers.items()} == {
            w: w.partition("@")[2] or "m" for w in session.workers}
        spread = by_host(result)
        assert set(spread) == {"m", "h2", "h3"} and all(spread.values()), spread
        # host:count names the hosts; more than a host's cores is refused, saying so
        with pytest.raises(pyproof.ProofError, match=r"host 'h3' has room for 0 more "
                                                     r"workers \(2 cores, 2 in use\), not 1"):
            pyproof.connect(f"{url}?workers=h3:1")


def test_a_host_killed_mid_query_is_lost_its_ranges_requeued_and_it_rejoins(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2", "h3"), secret)
    with pyproof.connect(f"{url}?workers=h2:2,h3:2") as session:
        query = Running(session, sleep=0.15)
        deadline = time.monotonic() + 30
        while not (session.status().get("master") or {}).get("query", {}) or (
                session.status()["master"]["query"]["processed"] < 400):
            assert time.monotonic() < deadline, "the query made no progress"
            time.sleep(0.1)
        hosts.kill(hosts.hosts["h3"])  # every process of the host, mid-query
        result = query.get()
        check_exact(result)
        requeued = [r for r in result.lineage["requeued"] if "@h3#" in r["worker"]]
        assert requeued and all(r["reason"] == "worker lost" for r in requeued), \
            result.lineage["requeued"]
        assert wait_for(url, lambda r: r["h3"]["state"] == "lost", "h3 lost")["h2"][
            "state"] == "alive"
        # the host restarted rejoins and is usable again by the running session
        start(hosts, hosts.hosts["h3"], secret, "--cores", "2", "--join", url)
        wait_for(url, lambda r: r["h3"]["state"] == "alive", "h3 rejoined")
        assert session.add_workers(2, host="h3") == ["worker-2@h3", "worker-3@h3"]
        # enough work that h2's two warm workers alone need some 6 s: the new workers (each
        # loads uproot before its first packet, seconds on a loaded machine) surely take part
        result = session.process("tests.sample_selectors:SlowCount", dataset=DATASET,
                                 inputs={"sleep": 0.25}, progress=False, **BASIC)
        check_exact(result)
        assert by_host(result).get("h3", 0) > 0, by_host(result)


def test_a_host_joining_mid_query_is_given_to_the_running_session(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2"), secret)
    new = hosts.add("h3")
    with pyproof.connect(f"{url}?workers=2") as session:
        query = Running(session, sleep=0.4)  # 46 packets: some 9 s on two workers
        start(hosts, new, secret, "--cores", "2", "--join", url)
        wait_for(url, lambda r: r.get("h3", {}).get("state") == "alive", "h3 joined")
        added = session.add_workers(2, host="h3")
        assert added == ["worker-0@h3", "worker-1@h3"]
        shown = subprocess.run([sys.executable, "-m", "pyproof.cli.main", "workers", "ls",
                                session.id, "--url", url, "--json"], env=os.environ,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert '"host": "h3"' in shown.stdout
        # one of them removed mid-query: what it had not delivered goes back to the queue
        time.sleep(1.0)
        assert session.remove_workers(["worker-1@h3"]) == ["worker-1@h3"]
        assert "worker-1@h3" not in session.workers
        result = query.get()
        check_exact(result)
        assert by_host(result).get("h3", 0) > 0, by_host(result)


def test_no_secret_no_cluster_and_a_session_hears_only_its_own_workers(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2"), secret)
    m, h2 = hosts.hosts["m"], hosts.hosts["h2"]
    # without the secret: not admitted by the master nor by a worker's host (so it can
    # neither join, nor start workers, nor get a frame out of anyone)
    for host in (m, h2):
        stranger = ClusterClient(cluster_address(host.url(PORT)), "h9",
                                 auth.fresh_cluster_secret(), timeout=5.0)
        try:
            with pytest.raises(ClusterError, match=r"refused to admit this host \(wrong "
                                                   r"secret\)"):
                stranger.call("start_workers", {"session": "a" * 12, "worker_ids": []})
        finally:
            stranger.close()
    with pyproof.connect(f"{url}?workers=h2:1") as a, \
            pyproof.connect(f"{url}?workers=h2:1") as b:
        frame = encode_frame("next", {"worker": "worker-0@h2", "pid": 1, "query": "q"},
                             session=a.id)
        member = ClusterClient(cluster_address(url), "h2", secret, timeout=5.0)
        other = ClusterClient(cluster_address(url), "h9", secret, timeout=5.0)
        try:
            # a worker of session b cannot talk to a's master: b's key is not a's
            kind, body = member.call("data", {"session": a.id, "sealed": sealing.seal(
                worker_key(secret, b.id), frame)})
            assert (kind, body["message"]) == (
                "refused", f"frame not sealed with session {a.id}'s worker key")
            # a cluster member with no worker of the session is not heard either
            kind, body = other.call("data", {"session": a.id, "sealed": sealing.seal(
                worker_key(secret, a.id), frame)})
            assert (kind, body["message"]) == (
                "refused", f"session {a.id!r} has no workers on host 'h9'")
            # and a's own key, from a's host, reaches a's master
            kind, body = member.call("data", {"session": a.id, "sealed": sealing.seal(
                worker_key(secret, a.id), frame)})
            assert kind == "data"
        finally:
            member.close()
            other.close()


def test_with_tls_the_cluster_port_speaks_only_tls_and_sessions_still_span_hosts(
        netns_hosts: NetnsHosts, tmp_path, monkeypatch):  # noqa: F811
    import shutil

    from tests.test_transport_tls import make_ca, make_cert

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    hosts = netns_hosts
    make_ca(tmp_path, "ca")
    secret = auth.fresh_cluster_secret()
    made = []
    for name in ("m", "h2"):
        address = f"{hosts.subnet}.{len(hosts.hosts) + 2}"
        make_cert(tmp_path, name, "ca", f"IP:{address}")
        made.append(hosts.add(name, env={"PYPROOF_TLS_CA": str(tmp_path / "ca.crt"),
                                         "PYPROOF_TLS_CERT": str(tmp_path / f"{name}.crt"),
                                         "PYPROOF_TLS_KEY": str(tmp_path / f"{name}.key")}))
        assert made[-1].address == address
    m, h2 = made
    monkeypatch.setenv("PYPROOF_TLS_CA", str(tmp_path / "ca.crt"))  # the client trusts the CA
    start(hosts, m, secret, "--cores", "2")
    url = m.url(PORT)
    start(hosts, h2, secret, "--cores", "2", "--join", url)
    wait_for(url, lambda r: r.get("h2", {}).get("state") == "alive", "h2 joined over TLS")
    # plain TCP to the cluster port gets nothing, even with the secret
    monkeypatch.delenv("PYPROOF_TLS_CA")
    plain = ClusterClient(cluster_address(url), "h9", secret, timeout=2.0)
    try:
        with pytest.raises(ClusterError, match="no answer from the cluster endpoint"):
            plain.call("heartbeat", {})
    finally:
        plain.close()
    monkeypatch.setenv("PYPROOF_TLS_CA", str(tmp_path / "ca.crt"))
    with pyproof.connect(f"{url}?workers=h2:2&connection=dial") as session:
        from tests.sample_selectors import SlowCount

        result = session.process(SlowCount, dataset=DATASET, inputs={"sleep": 0.0},
                                 progress=False, **BASIC)
        check_exact(result)
        assert set(by_host(result)) == {"h2"}


def test_workers_dying_on_another_host_are_restarted_there_and_their_work_requeued(
        netns_hosts: NetnsHosts):  # noqa: F811
    url = cluster(netns_hosts, ("m", "h2"), auth.fresh_cluster_secret())
    with pyproof.connect(f"{url}?workers=h2:2") as session:
        result = session.process("tests.sample_selectors:DiesOnEntry", dataset=DATASET,
                                 inputs={"deadly": 1000}, on_missing="skip", progress=False,
                                 packetizer="basic", packetizer_params={"packet_entries": 100})
        poisoned = result.lineage["poisoned"]  # a packet prefetched by a dying worker, too
        # the deadly entry's packet, (1000, 1100), or a piece of it: requeued near the end,
        # a range is cut again in the end-game's smaller packets (seen: (1000, 1031))
        assert any(p["entry_start"] <= 1000 < p["entry_stop"] <= 1100 for p in poisoned), \
            poisoned
        assert all(len(p["workers"]) == 3 and all("@h2#" in w for w in p["workers"])
                   for p in poisoned)
        lost = sum(p["entry_stop"] - p["entry_start"] for p in poisoned)
        assert result.stats.entries == result.outputs["n"] == 2304 - lost
        # the restarted workers (new processes on h2) run the next query
        result = session.process("tests.sample_selectors:SlowCount", dataset=DATASET,
                                 inputs={"sleep": 0.0}, progress=False, **BASIC)
        check_exact(result)
        assert set(by_host(result)) == {"h2"}


def test_a_zip_package_runs_by_name_on_three_hosts_new_versions_and_late_hosts_too(
        netns_hosts: NetnsHosts, tmp_path):  # noqa: F811
    """Hosts without the client's files (nor the master's cache) get the session's enabled
    packages from the master's host, by hash, before their first packet."""
    from tests.package_helpers import write_package, zip_dir

    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    url = cluster(hosts, ("m", "h2", "h3"), secret)

    def upload(session, factor: int) -> None:
        source = write_package(str(tmp_path / f"src{factor}"), "hostpkg", factor=factor,
                               version=factor)
        archive = zip_dir(source, str(tmp_path / f"hostpkg{factor}.zip"))
        assert session.upload_package(archive) == "hostpkg"

    def versions_on(name: str) -> set[str]:
        root = hosts.hosts[name].home / "sandbox" / "packages"
        return {p.name for p in root.glob("*/versions/*")}

    with pyproof.connect(f"{url}?workers=6") as session:
        upload(session, 3)
        session.enable_package("hostpkg")
        assert not versions_on("h2") and not versions_on("h3")  # nothing there yet
        result = session.process("hostpkg.selectors:Scale", cycles=600, inputs={"sleep": 0.3},
                                 progress=False, packetizer="basic",
                                 packetizer_params={"packet_entries": 20})
        assert result.outputs["x"] == 3 * 600
        done = {w.partition("@")[2] or "m" for w, s in result.stats.workers.items()
                if s.packets}
        assert done == {"m", "h2", "h3"}, result.stats.workers
        first = versions_on("m")
        assert versions_on("h2") == versions_on("h3") == first and len(first) == 1
        # a new version: the next query runs it on every host
        upload(session, 5)
        result = session.process("hostpkg.selectors:Scale", cycles=600, inputs={"sleep": 0.3},
                                 progress=False, packetizer="basic",
                                 packetizer_params={"packet_entries": 20})
        assert result.outputs["x"] == 5 * 600
        assert len(versions_on("h2")) == len(versions_on("h3")) == 2
        # a host that joins afterwards gets it before its worker's first packet
        new = hosts.add("h4")
        start(hosts, new, secret, "--cores", "2", "--join", url)
        wait_for(url, lambda r: r.get("h4", {}).get("state") == "alive", "h4 joined")
        assert session.add_workers(1, host="h4") == ["worker-0@h4"]
        result = session.process("hostpkg.selectors:Scale", cycles=600, inputs={"sleep": 0.3},
                                 progress=False, packetizer="basic",
                                 packetizer_params={"packet_entries": 20})
        assert result.outputs["x"] == 5 * 600
        assert result.stats.workers["worker-0@h4"].packets > 0, result.stats.workers
        assert versions_on("h4") == versions_on("m") - first
