"""Locality on real hosts: each host (a network namespace with its own proofd) holds its own
files under its `--data-path`; its workers read those first, and the result is exact."""

from __future__ import annotations

import shutil
from collections import defaultdict

import hist
import numpy as np
import uproot

import pyproof
from pyproof.transport import auth
from tests.conftest import data_file
from tests.netns_hosts import NetnsHosts, netns_hosts  # noqa: F401 (the fixture)
from tests.test_hosts_netns import PORT, start, wait_for

NAMES = ("m", "h2", "h3")


def reference(paths: list[str]) -> tuple[int, hist.Hist]:
    """The sequential answer, with uproot alone."""
    h = hist.Hist.new.Reg(100, 0, 200, name="M").Double()
    n = 0
    for path in paths:
        m = uproot.open(path)["events"]["M"].array(library="np")
        h.fill(np.asarray(m))
        n += len(m)
    return n, h


def test_each_hosts_workers_read_the_files_under_its_data_path_first_and_the_result_is_exact(
        netns_hosts: NetnsHosts):  # noqa: F811
    hosts = netns_hosts
    secret = auth.fresh_cluster_secret()
    local: dict[str, set[str]] = {}
    for name in NAMES:  # two files per host, under its own data path
        host = hosts.add(name)
        root = host.home / "data"
        root.mkdir()
        local[name] = set()
        for k in range(2):
            path = root / f"zmumu-{name}-{k}.root"
            shutil.copyfile(data_file("uproot-Zmumu.root"), path)
            local[name].add(str(path))
    m = hosts.hosts["m"]
    start(hosts, m, secret, "--cores", "2", "--data-path", str(m.home / "data"))
    url = m.url(PORT)
    for name in NAMES[1:]:
        host = hosts.hosts[name]
        start(hosts, host, secret, "--cores", "2", "--join", url,
              "--data-path", str(host.home / "data"))
    wait_for(url, lambda r: all(r.get(n, {}).get("state") == "alive" for n in NAMES),
             "three hosts alive")
    # the files interleaved, so that reading in dataset order would mix the hosts
    files = [sorted(local[n])[k] for k in range(2) for n in NAMES]
    with pyproof.connect(f"{url}?workers=6") as session:
        # every worker ready (it has run a packet) before the query whose order is checked
        warm = session.process("tests.sample_selectors:Cycles", cycles=60, progress=False,
                               packetizer="basic", packetizer_params={"packet_entries": 1})
        assert warm.outputs["count"] == 60
        result = session.process("tests.sample_selectors:PacketLog",
                                 dataset=[f"{f}:events" for f in files],
                                 inputs={"sleep_per_entry": 0.001}, progress=False)
    n, expected = reference(files)
    assert result.outputs["n"] == n == result.stats.entries == 6 * 2304
    assert (result.outputs["mass"].values() == expected.values()).all()
    # each (file, range) once, and together they cover every file
    packets = result.outputs["packets"]
    ranges = sorted((f, start_, stop) for _, f, start_, stop, _ in packets)
    assert len(set(ranges)) == len(ranges)
    covered: dict[str, int] = defaultdict(int)
    for f, start_, stop in ranges:
        covered[f] += stop - start_
    assert covered == {f: 2304 for f in files}
    # every worker's first packet is a file of its own host, and most of what each host's
    # workers read is its own (the rest: helping a host that lags, near the end)
    by_worker: dict[str, list] = defaultdict(list)
    for row in packets:
        by_worker[row[0].partition("#")[0]].append(row)
    assert set(by_worker) == set(session.workers), by_worker.keys()
    read: dict[str, dict[bool, int]] = {name: {True: 0, False: 0} for name in NAMES}
    for worker, rows in by_worker.items():
        host = worker.partition("@")[2] or "m"
        assert result.stats.workers[worker].host == host
        rows.sort(key=lambda r: r[4])
        assert rows[0][1] in local[host], (worker, rows[0])
        for _, f, start_, stop, _ in rows:
            read[host][f in local[host]] += stop - start_
    for name in NAMES:
        assert read[name][True] >= 3 * read[name][False], read
