"""Messages a user can act on, on a real lite cluster: short query errors with the
traceback kept aside, the coffea habit of returning outputs, first= past the end,
merge and encode refusals that list what works, and bytes_read that matches the
bytes uproot really reads (including a NanoAOD-like file)."""

from __future__ import annotations

import json
import os

import awkward as ak
import numpy as np
import pytest
import uproot

import pyproof
from tests.conftest import data_file, zmumu
from tests.sample_selectors import HZZMuons, NanoMuons, ZmumuMass


def test_a_query_error_is_short_and_keeps_the_remote_traceback_aside(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"^ZeroDivisionError: the selector divided by zero\n"
                             r"  in file .*uproot-Zmumu\.root, tree events, entries \[\d+, \d+\), "
                             r"on worker-\d+, stage='process'\n"
                             r"  \(remote traceback: err\.remote\.traceback\)$") as info:
        session.process("tests.sample_selectors:RaisesInProcess", dataset=zmumu(),
                        inputs={"bad_entry": 1000}, packetizer="basic",
                        packetizer_params={"packet_entries": 100})
    assert "Traceback" not in str(info.value)
    assert "the selector divided by zero" in info.value.remote.traceback
    assert "in process" in info.value.remote.traceback


def test_a_selector_that_returns_its_outputs_is_told_to_fill_ctx_outputs(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"SelectorError: ReturnsOutputs\.process returned a dict, but pyproof "
                             r"does not use what process returns: create your outputs in begin .* "
                             r"fill them in process .*ctx\.outputs"):
        session.process("tests.sample_selectors:ReturnsOutputs", dataset=zmumu())
    assert session.process(ZmumuMass, dataset=zmumu()).stats.entries == 2304


def test_first_past_the_end_is_an_error_naming_the_dataset_size(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"first=2304 is past the end of the dataset: it has 2304 entries, "
                             r"numbered from 0 \(give first= below 2304\)"):
        session.process(ZmumuMass, dataset=zmumu(), first=2304)
    with pytest.raises(pyproof.QueryError, match=r"first=5000 .* it has 4608 entries"):
        session.process(ZmumuMass, dataset=[zmumu(), zmumu()], first=5000)
    last = session.process(ZmumuMass, dataset=zmumu(), first=2303)
    assert last.stats.entries == 1


def test_outputs_that_do_not_merge_fail_the_query_listing_what_merges(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"best: objects of type NoneType have neither merge\(\) nor "
                             r"__add__ \(outputs that merge: hist\.Hist and boost-histogram "
                             r"histograms, numpy arrays, awkward arrays \(concatenated\), "
                             r"numbers \(summed\), collections\.Counter, sets \(union\)"):
        session.process("tests.sample_selectors:NoneOutput", dataset=zmumu(),
                        packetizer="basic", packetizer_params={"packet_entries": 100})


def test_outputs_and_inputs_that_cannot_be_sent_list_the_types_that_can(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"thing.*cannot encode object of type 'object'; outputs may hold "
                             r"None, bool, int, float, .*numpy arrays"):
        session.process("tests.sample_selectors:UnsendableOutput", dataset=zmumu(), timeout=60)
    with pytest.raises(pyproof.InputError,
                       match=r"inputs cannot be sent to workers: cut: cannot encode object of "
                             r"type 'object'; inputs may hold None, bool, int, float, "):
        session.process(ZmumuMass, dataset=zmumu(), inputs={"cut": object()})


# -- bytes_read ---------------------------------------------------------------------

BASKET = 1000  # entries per basket of the generated file, and per packet below


def write_nanoaod_like(path: str, entries: int = 5000, seed: int = 7) -> None:
    """A NanoAOD-style tree: collections as counter + jagged branches (`nMuon`,
    `Muon_pt`, ...), many branches, baskets of BASKET entries."""
    rng = np.random.default_rng(seed)

    def collection(counts: np.ndarray, fields: tuple[str, ...]) -> ak.Array:
        total = int(counts.sum())
        return ak.zip({f: ak.unflatten(rng.normal(size=total).astype("f4"), counts)
                       for f in fields})

    with uproot.recreate(path) as f:
        for start in range(0, entries, BASKET):
            n = min(BASKET, entries - start)
            chunk = {
                "run": np.full(n, 1, dtype="i4"),
                "event": np.arange(start, start + n, dtype="i8"),
                "MET_pt": rng.exponential(30, n).astype("f4"),
                "MET_phi": rng.uniform(-3, 3, n).astype("f4"),
                "Muon": collection(rng.integers(0, 4, n),
                                   ("pt", "eta", "phi", "mass", "dxy", "dz", "iso")),
                "Electron": collection(rng.integers(0, 3, n), ("pt", "eta", "phi", "mass")),
                "Jet": collection(rng.integers(0, 9, n),
                                  ("pt", "eta", "phi", "mass", "btag", "qgl", "area")),
            }
            if start == 0:
                f.mktree("Events", chunk)
            else:
                f["Events"].extend(chunk)


def bytes_of_a_sequential_read(path: str, tree: str, branches: list[str],
                               ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """(all bytes uproot requests to open `path` and read `branches` over `ranges`,
    the compressed bytes of the baskets those ranges touch, from the TTree's metadata)."""
    with uproot.open(path) as handle:
        t = handle[tree]
        baskets = 0
        for start, stop in ranges:
            t.arrays(branches, entry_start=start, entry_stop=stop, library="ak")
            for name in branches:
                branch = t[name]
                for i in range(branch.num_baskets):
                    lo, hi = branch.basket_entry_start_stop(i)
                    if lo < stop and hi > start:
                        baskets += branch.basket_compressed_bytes(i)
        return handle.file.source.num_requested_bytes, baskets


@pytest.fixture(scope="module")
def session1():
    with pyproof.connect("lite://?workers=1") as s:
        yield s


@pytest.fixture(scope="module")
def nanoaod_like(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("nano") / "nanoaod_like.root")
    write_nanoaod_like(path)
    return path


def check_bytes_read(session1, selector, path: str, tree: str, entries: int,
                     packet: int) -> int:
    # a multiple of the packet size, so the packets are these ranges
    assert entries % packet == 0
    ranges = [(s, s + packet) for s in range(0, entries, packet)]
    result = session1.process(selector, dataset=f"{path}:{tree}", packetizer="basic",
                              packetizer_params={"packet_entries": packet})
    assert result.stats.entries == entries and result.stats.packets == len(ranges)
    requested, baskets = bytes_of_a_sequential_read(path, tree, selector.branches, ranges)
    # every byte read is counted once: the file's header and the tree's metadata
    # (where unflushed baskets live) on the first packet, then each packet's baskets
    assert result.stats.bytes_read == requested
    assert result.stats.bytes_read > baskets > 0
    assert result.stats.workers["worker-0"].bytes == requested
    return result.stats.bytes_read


def test_bytes_read_counts_what_uproot_reads_from_a_nanoaod_like_file(session1, nanoaod_like):
    check_bytes_read(session1, NanoMuons, nanoaod_like, "Events", 5000, BASKET)


@pytest.mark.parametrize(("name", "selector"), [("uproot-Zmumu.root", ZmumuMass),
                                                ("uproot-HZZ.root", HZZMuons)])
def test_bytes_read_counts_what_uproot_reads_from_real_files(session1, name, selector):
    path = data_file(name)
    with uproot.open(path) as handle:
        entries = handle["events"].num_entries
    nbytes = check_bytes_read(session1, selector, path, "events", entries, entries)
    assert nbytes < 5 * os.path.getsize(path)


# -- shutdown -------------------------------------------------------------------------


def test_an_ordinary_shutdown_logs_no_error(tmp_path):
    with pyproof.connect("lite://?workers=1") as s:
        log_dir = s.log_dir
        assert s.process(ZmumuMass, dataset=zmumu(), progress=False).stats.entries == 2304
    events = []
    for name in sorted(os.listdir(log_dir)):
        if name.endswith(".jsonl"):
            with open(os.path.join(log_dir, name)) as f:
                events += [json.loads(line) for line in f if line.strip()]
    bad = [e for e in events if e.get("level") in ("warning", "error", "critical")]
    assert bad == []
    # close() kills the lite cluster at once after closing the session (client/lite.py):
    # what got logged of the stop before that says "shutdown", never a crash
    stopped = [e for e in events if e["event"] == "child_terminated"]
    assert {e["level"] for e in stopped} <= {"info"}
    assert {e["reason"] for e in stopped} <= {"shutdown"}
    assert any(e["event"] == "worker_started" for e in events)
