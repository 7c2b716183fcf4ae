"""End to end on a real lite cluster: real actors, real nng sockets, real ROOT files.

Every result is compared with a sequential uproot loop over the same files.
"""

from __future__ import annotations

import collections
import os

import awkward as ak
import hist
import numpy as np
import pytest
import uproot

import pyproof
from tests.conftest import data_file
from tests.sample_selectors import HZZMuons, ZmumuMass, zmumu_mass


def reference_zmumu(paths: list[str], cut: float = 0.0) -> dict:
    mass_h = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()
    wmass_h = hist.Hist.new.Reg(60, 0, 120, name="mass").Weight()
    n, charges, total = 0, collections.Counter(), 0.0
    for path in paths:
        events = uproot.open(path)["events"].arrays(ZmumuMass.branches, library="ak")
        mass = zmumu_mass(events)
        selected = mass[mass > cut]
        mass_h.fill(selected)
        wmass_h.fill(selected, weight=0.5 + selected / 100.0)
        n += len(events)
        charges.update(int(x) for x in ak.to_numpy(events["Q1"] + events["Q2"]))
        total += selected.sum()
    return {"mass": mass_h, "wmass": wmass_h, "n": n, "charges": charges, "sum_mass": total}


def assert_same_zmumu(outputs: dict, ref: dict) -> None:
    np.testing.assert_array_equal(outputs["mass"].values(flow=True), ref["mass"].values(flow=True))
    np.testing.assert_allclose(outputs["wmass"].values(flow=True),
                               ref["wmass"].values(flow=True), rtol=1e-12)
    np.testing.assert_allclose(outputs["wmass"].variances(flow=True),
                               ref["wmass"].variances(flow=True), rtol=1e-12)
    assert outputs["n"] == ref["n"]
    assert outputs["charges"] == ref["charges"]
    np.testing.assert_allclose(outputs["sum_mass"], [ref["sum_mass"]], rtol=1e-12)


@pytest.fixture(scope="module")
def session2():
    with pyproof.connect("lite://?workers=2") as session:
        yield session


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_zmumu_histograms_match_a_sequential_uproot_loop(workers):
    paths = [data_file("uproot-Zmumu.root"), data_file("uproot-Zmumu-zstd.root")]
    with pyproof.connect(f"lite://?workers={workers}") as session:
        result = session.process(ZmumuMass, dataset=[f"{p}:events" for p in paths],
                                 inputs={"cut": 20.0}, packetizer="basic",
                                 packetizer_params={"packet_entries": 300})
    assert_same_zmumu(result.outputs, reference_zmumu(paths, cut=20.0))
    assert result.stats.entries == 2 * 2304
    assert set(result.stats.workers) == {f"worker-{i}" for i in range(workers)}
    assert sum(w.entries for w in result.stats.workers.values()) == 2 * 2304


def test_differently_compressed_twins_give_identical_results(session2):
    zlib = session2.process(ZmumuMass, dataset=data_file("uproot-Zmumu.root") + ":events")
    zstd = session2.process(ZmumuMass, dataset={data_file("uproot-Zmumu-zstd.root"): "events"})
    assert zlib.outputs["mass"] == zstd.outputs["mass"]
    hzz = session2.process(HZZMuons, dataset=data_file("uproot-HZZ.root") + ":events")
    hzz_lz4 = session2.process(HZZMuons, dataset=data_file("uproot-HZZ-lz4.root") + ":events")
    # weighted: equal up to floating-point summation order (packets differ run to run)
    np.testing.assert_allclose(hzz.outputs["pt"].values(flow=True),
                               hzz_lz4.outputs["pt"].values(flow=True), rtol=1e-12)
    np.testing.assert_allclose(hzz.outputs["pt"].variances(flow=True),
                               hzz_lz4.outputs["pt"].variances(flow=True), rtol=1e-12)
    assert hzz.outputs["nmuons"] == hzz_lz4.outputs["nmuons"] > 0


def test_jagged_hzz_weighted_sums_match_a_sequential_loop(session2):
    path = data_file("uproot-HZZ.root")
    result = session2.process(HZZMuons, dataset=f"{path}:events",
                              packetizer="basic", packetizer_params={"packet_entries": 200})
    events = uproot.open(path)["events"].arrays(HZZMuons.branches, library="ak")
    pt = np.sqrt(events["Muon_Px"] ** 2 + events["Muon_Py"] ** 2)
    w = ak.broadcast_arrays(events["EventWeight"], pt)[0]
    ref = hist.Hist.new.Reg(50, 0, 200, name="pt").Weight()
    ref.fill(ak.to_numpy(ak.flatten(pt)), weight=ak.to_numpy(ak.flatten(w)))
    np.testing.assert_allclose(result.outputs["pt"].values(flow=True), ref.values(flow=True),
                               rtol=1e-9)
    assert result.outputs["nmuons"] == int(ak.sum(ak.num(pt)))
    assert result.stats.entries == 2421
    assert result.stats.bytes_read > 0


def test_first_and_entries_select_a_global_half_open_range(session2):
    paths = [data_file("uproot-Zmumu.root"), data_file("uproot-Zmumu-zstd.root")]
    result = session2.process(ZmumuMass, dataset=[f"{p}:events" for p in paths],
                              first=2000, entries=1000)
    assert result.stats.entries == 1000
    assert result.outputs["n"] == 1000
    # reference: entries 2000..2303 of file 0 and 0..695 of file 1
    a = uproot.open(paths[0])["events"].arrays(ZmumuMass.branches, entry_start=2000)
    b = uproot.open(paths[1])["events"].arrays(ZmumuMass.branches, entry_stop=696)
    ref = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()
    ref.fill(np.concatenate([zmumu_mass(a), zmumu_mass(b)]))
    assert result.outputs["mass"] == ref


def test_cycles_run_pure_cpu_work_exactly_once(session2):
    result = session2.process("tests.sample_selectors:Cycles", cycles=100_000)
    assert result.outputs["count"] == 100_000
    assert result.outputs["sum"] == sum(range(100_000))
    assert result.stats.entries == 100_000


def test_generated_uneven_files_with_an_empty_tree_and_a_single_entry(tmp_path, session2):
    sizes = [0, 1, 7, 5000, 123]
    specs, offset = [], 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"gen{i}.root"
        with uproot.recreate(path) as f:
            f["t"] = {"x": np.arange(offset, offset + n, dtype=np.int64)}
        specs.append(f"{path}:t")
        offset += n
    result = session2.process("tests.sample_selectors:EntryList", dataset=specs,
                              packetizer="basic", packetizer_params={"packet_entries": 97})
    x = np.sort(result.outputs["x"])
    np.testing.assert_array_equal(x, np.arange(offset))
    assert result.outputs["count"] == offset == result.stats.entries


def test_selector_given_as_a_file_path(tmp_path, session2):
    source = tmp_path / "my_analysis.py"
    source.write_text(
        "import pyproof\n"
        "class Count(pyproof.Selector):\n"
        "    branches = ['M']\n"
        "    def begin(self, ctx):\n"
        "        ctx.outputs['n'] = 0\n"
        "    def process(self, events, ctx):\n"
        "        ctx.outputs['n'] += len(events)\n"
    )
    result = session2.process(f"{source}:Count",
                              dataset=data_file("uproot-Zmumu.root") + ":events")
    assert result.outputs["n"] == 2304


def test_terminate_runs_on_the_client_after_the_merge(session2):
    result = session2.process("tests.test_lite:MeanMass",
                              dataset=data_file("uproot-Zmumu.root") + ":events")
    assert 80 < result.outputs["mean"] < 100


class MeanMass(pyproof.Selector):
    branches = ZmumuMass.branches

    def begin(self, ctx):
        ctx.outputs["sum"] = 0.0
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        mass = zmumu_mass(events)
        ctx.outputs["sum"] += float(mass.sum())
        ctx.outputs["n"] += len(mass)

    def terminate(self, outputs):
        return {"mean": outputs["sum"] / outputs["n"]}


def test_closing_the_session_leaves_no_run_directory(tmp_path):
    session = pyproof.connect("lite://?workers=1")
    run_dir = session.cluster.run_dir
    log_dir = session.log_dir
    assert os.path.isdir(run_dir)
    session.close()
    assert not os.path.exists(run_dir)
    assert os.path.exists(os.path.join(log_dir, "master.jsonl"))


def test_a_large_output_travels_in_chunks_and_arrives_whole(session2):
    result = session2.process("tests.sample_selectors:BigOutput",
                              dataset=data_file("uproot-Zmumu.root") + ":events",
                              packetizer="basic", packetizer_params={"packet_entries": 500})
    big = result.outputs["big"]
    assert big.shape == (3_000_000,)
    assert result.outputs["n"] == 2304
    # entry j of a packet adds 1 at index j: each entry is counted once, near the front
    assert big.sum() == 2304 and big[500:].sum() == 0
