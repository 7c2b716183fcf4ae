"""A look-up file by file on a real lite cluster: one file is on a slow web server (its
first requests, the master's look-up, each wait), the others are local. Packets of the
local files are granted and processed before the slow file's look-up ends, and the
result equals a sequential uproot loop over every file."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

import pyproof
from tests.http_range_server import RangeServer

SLOW_REQUESTS, SLOW_SECONDS = 4, 0.5  # the look-up of the slow file takes >= 2 s


def write(path, start: int, n: int) -> str:
    with uproot.recreate(path) as f:
        f["t"] = {"x": np.arange(start, start + n, dtype=np.int64)}
    return str(path)


@pytest.fixture
def files(tmp_path):
    local = [write(tmp_path / f"local{i}.root", 10_000 * i, 3000 + i) for i in range(3)]
    served = tmp_path / "served"
    served.mkdir()
    slow = write(served / "slow.root", 90_000, 2500)
    server = RangeServer(str(served), slow={"slow.root": (SLOW_REQUESTS, SLOW_SECONDS)})
    yield local, slow, server
    server.close()


def test_packets_of_local_files_are_processed_while_a_slow_file_is_looked_up(session, files):
    local, slow, server = files
    dataset = [f"{p}:t" for p in local] + [f"{server.url('slow.root')}:t"]
    result = session.process("tests.sample_selectors:EntryList", dataset=dataset,
                             progress=False)
    reference = np.sort(np.concatenate(
        [uproot.open(p)["t"]["x"].array(library="np") for p in [*local, slow]]))
    assert np.array_equal(np.sort(result.outputs["x"]), reference)  # each entry once
    assert result.stats.entries == len(reference) == 9003 + 2500
    timing = result.lineage["lookup"]
    assert timing["file_by_file"] is True
    assert timing["lookup_seconds"] >= SLOW_REQUESTS * SLOW_SECONDS * 0.9
    assert timing["first_packet_seconds"] < timing["lookup_seconds"]
    assert timing["packets_before_lookup_done"] > 0
    assert timing["entries_processed_before_lookup_done"] > 0
    assert [e["file"] for e in result.lineage["elements"]] == dataset_files(dataset)


def dataset_files(dataset: list[str]) -> list[str]:
    return [d.rsplit(":", 1)[0] for d in dataset]


def test_a_file_that_cannot_be_looked_up_still_fails_or_is_skipped(session, files):
    local, _, server = files
    dataset = [f"{p}:t" for p in local] + [f"{server.url('absent.root')}:t"]
    with pytest.raises(pyproof.QueryError, match=r"absent\.root"):
        session.process("tests.sample_selectors:EntryList", dataset=dataset, progress=False)
    result = session.process("tests.sample_selectors:EntryList", dataset=dataset,
                             progress=False, on_missing="skip")
    assert result.stats.entries == 9003
    [missing] = result.missing
    assert missing["file"] == server.url("absent.root")


def test_packets_of_files_looked_up_one_by_one_start_and_end_on_baskets(session, tmp_path):
    """The look-up passes each file's basket boundaries to the packetizer with its entries:
    no packet edge falls inside a basket (both packets would decompress all of it)."""
    paths = []
    for i in range(3):
        path = str(tmp_path / f"baskets{i}.root")
        with uproot.recreate(path) as f:
            f.mktree("t", {"M": np.float64})
            for _ in range(30):  # one basket of 1000 entries per extend
                f["t"].extend({"M": np.full(1000, 91.0)})
        paths.append(path)
    result = session.process("tests.sample_selectors:PacketLog", dataset=[f"{p}:t" for p in paths],
                             inputs={"sleep_per_entry": 2e-6}, progress=False)
    assert result.lineage["lookup"]["file_by_file"] is True
    packets = result.outputs["packets"]
    assert len(packets) > 6 and result.outputs["n"] == 90_000
    assert [p for p in packets if p[2] % 1000 or p[3] % 1000] == []
