"""coffea habits on a real lite session: filesets, NanoEvents records, processors unchanged.

The NanoAOD file is coffea's own test sample (tests/data/coffea-nano_dy.root);
a larger NanoAOD-like file is written with uproot here.
"""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema

import pyproof
from pyproof.coffea_processor import CoffeaMissing, prepare
from pyproof.filesets import parse_fileset
from pyproof.nanoevents import group_by_prefix
from tests.conftest import data_file
from tests.scikit_selectors import DimuonProcessor, NanoRecords

# coffea is in the test extra (pip install -e '.[test]'): missing, these tests fail, not skip

NANO = data_file("coffea-nano_dy.root")


@pytest.fixture(scope="module")
def nano_like(tmp_path_factory):
    """Two NanoAOD-like files: nMuon with jagged Muon_pt, _eta, _phi, _mass, _charge; ids."""
    rng = np.random.default_rng(16)
    paths = []
    for i in range(2):
        n = 3000
        counts = rng.integers(0, 4, n)
        path = tmp_path_factory.mktemp("nano") / f"nano{i}.root"
        data = {
            "Muon": ak.zip({
                "pt": ak.unflatten(rng.exponential(20, counts.sum()), counts),
                "eta": ak.unflatten(rng.normal(0, 1.5, counts.sum()), counts),
                "phi": ak.unflatten(rng.uniform(-3, 3, counts.sum()), counts),
                "mass": ak.unflatten(np.full(counts.sum(), 0.105), counts),
                "charge": ak.unflatten(rng.choice([-1, 1], counts.sum()).astype("i4"), counts),
            }),
            "run": np.full(n, 1 + i, dtype=np.uint32),
            "luminosityBlock": np.full(n, 1, dtype=np.uint32),
            "event": np.arange(n, dtype=np.uint64),
        }
        with uproot.recreate(path) as f:
            # mktree names a record's branches as NanoAOD does: nMuon, Muon_pt, Muon_eta
            f.mktree("Events", {k: v.type.content if isinstance(v, ak.Array) else v.dtype
                                for k, v in data.items()})
            f["Events"].extend(data)
        paths.append(str(path))
    return paths


def test_a_fileset_gives_short_dataset_names_and_metadata_to_a_nanoaod_selector(
        session, nano_like):
    fileset = {"ttbar": [nano_like[0]],
               "dy": {"files": {nano_like[1]: "Events"}, "metadata": {"xsec": 5.5}}}
    result = session.process(NanoRecords, dataset=fileset, progress=False,
                             packetizer="basic", packetizer_params={"packet_entries": 500})
    ref_muons, ref_pt = 0, 0.0
    for path in nano_like:
        events = uproot.open(path)["Events"].arrays(["nMuon", "Muon_pt"])
        ref_muons += int(ak.sum(events.nMuon))
        ref_pt += float(ak.sum(events.Muon_pt))
    assert result.outputs["muons"] == ref_muons
    assert result.outputs["sum_pt"] == pytest.approx(ref_pt, rel=1e-12)
    # ctx.dataset and events.metadata["dataset"] are the user's short names
    assert result.outputs["datasets"] == {"ttbar|ttbar", "dy|dy"}
    assert result.outputs["xsec"] == {None, 5.5}


def test_a_coffea_processor_runs_unchanged_and_equals_coffeas_iterative_executor(session):
    fileset = {"DYJets": {"files": [NANO], "treename": "Events", "metadata": {"xsec": 6025.2}}}
    ours = session.process(DimuonProcessor(pt_cut=3.0, bins=40), dataset=fileset,
                           schema=NanoAODSchema, progress=False, packetizer="basic",
                           packetizer_params={"packet_entries": 7})
    runner = coffea_processor.Runner(executor=coffea_processor.IterativeExecutor(),
                                     schema=NanoAODSchema, chunksize=10)
    with warnings.catch_warnings():  # coffea warns of cross-references the sample lacks
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = runner(fileset, processor_instance=DimuonProcessor(pt_cut=3.0, bins=40),
                        treename="Events")
    assert set(ours.outputs) == set(theirs) == {"DYJets", "runs", "xsec"}
    assert ours.outputs["runs"] == theirs["runs"] and ours.outputs["xsec"] == {6025.2}
    mine, ref = ours.outputs["DYJets"], theirs["DYJets"]
    assert mine["entries"] == ref["entries"] == 40
    assert mine["muons"] == ref["muons"] > 0
    assert mine["muons_per_event"] == ref["muons_per_event"]  # postprocess ran here
    np.testing.assert_array_equal(mine["mass"].values(flow=True), ref["mass"].values(flow=True))
    assert mine["mass"].sum() > 0
    assert ours.stats.entries == 40 and ours.stats.packets >= 6  # pyproof's packets


def test_group_by_prefix_makes_records_without_coffea():
    flat = ak.Array({"nMuon": [2, 0], "Muon_pt": [[1.0, 2.0], []], "Muon_eta": [[0.1, 0.2], []],
                     "MET_pt": [5.0, 6.0], "MET_phi": [0.5, 0.6], "run": [1, 1]})
    events = group_by_prefix(flat)
    assert events.Muon.pt.tolist() == [[1.0, 2.0], []]
    assert events.MET.phi.tolist() == [0.5, 0.6]
    assert events.run.tolist() == [1, 1] and events.nMuon.tolist() == [2, 0]


def test_fileset_forms_are_parsed_and_bad_ones_named(tmp_path):
    fs = parse_fileset({"a": ["x.root", "y.root:T"], "b": {"files": {"z.root": None},
                                                           "metadata": {"k": 1}}},
                       default_tree="Events")
    assert [e[1] for e in fs.elements] == ["Events", "T", "Events"]
    assert [n[2] for n in fs.names] == ["a", "a", "b"] and fs.metadata == {"a": {}, "b": {"k": 1}}
    with pytest.raises(pyproof.ProofError, match=r"^fileset entry 'b' must be a list of files "
                                                 r"or a dict with 'files' \(and optionally "
                                                 r"'metadata', 'treename'\); unknown keys: "
                                                 r"fils$"):
        parse_fileset({"b": {"fils": ["x.root"]}})
    with pytest.raises(pyproof.ProofError, match=r"is in datasets 'a' and 'b' of the fileset"):
        parse_fileset({"a": ["x.root"], "b": ["x.root"]})


def test_a_processor_without_coffea_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_coffea(name, *args, **kwargs):
        if name.startswith(("coffea", "cloudpickle")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_coffea)
    with pytest.raises(CoffeaMissing, match=r"^DimuonProcessor looks like a coffea processor, "
                                            r"but coffea is not installed: "
                                            r"pip install 'pyproof\[coffea\]'$"):
        prepare(DimuonProcessor(), {})
