"""`result.save(path)` and `pyproof.load(path)`: a file users keep, outputs of the stack's
types (hist.Hist, numpy, ak.Array, sets, Counters), stats and lineage round-trip."""

from __future__ import annotations

import collections

import awkward as ak
import hist
import numpy as np
import pytest

import pyproof
from pyproof.client import result as result_module
from pyproof.client.result import FORMAT, MAGIC, Result, Stats, WorkerStats
from tests.conftest import data_file
from tests.sample_selectors import ZmumuMass
from tests.scikit_selectors import AwkwardAndSetOutputs


def test_a_real_querys_result_round_trips(session, tmp_path):
    path = data_file("uproot-Zmumu.root")
    result = session.process(AwkwardAndSetOutputs, dataset=f"{path}:events", progress=False,
                             packetizer="basic", packetizer_params={"packet_entries": 500})
    mass = session.process(ZmumuMass, dataset=f"{path}:events", progress=False)
    for original in (result, mass):
        saved = original.save(tmp_path / f"{original.query}.pyproof")
        loaded = pyproof.load(saved)
        assert loaded.query == original.query
        assert loaded.stats == original.stats
        assert loaded.lineage == original.lineage
        assert loaded.outputs.keys() == original.outputs.keys()
    loaded = pyproof.load(tmp_path / f"{result.query}.pyproof")
    assert isinstance(loaded.outputs["mu"], ak.Array)
    assert ak.to_list(loaded.outputs["mu"]) == ak.to_list(result.outputs["mu"])
    assert loaded.outputs["runs"] == result.outputs["runs"] and isinstance(
        loaded.outputs["runs"], set)
    h = pyproof.load(tmp_path / f"{mass.query}.pyproof").outputs["mass"]
    assert isinstance(h, hist.Hist) and h == mass.outputs["mass"]
    assert sum(w.entries for w in loaded.stats.workers.values()) == 2304
    assert loaded.stats.workers == result.stats.workers


def test_numpy_counters_and_histograms_with_weights_round_trip(tmp_path):
    h = hist.Hist.new.Reg(10, 0, 1, name="x", label="$x$").Weight()
    h.fill(x=np.linspace(0, 1, 50), weight=np.full(50, 0.5))
    original = Result(
        query="q-7",
        outputs={"h": h, "a": np.arange(12, dtype="f4").reshape(3, 4),
                 "c": collections.Counter(a=3), "t": (1, "x"), "n": None, "f": 1.5},
        stats=Stats(entries=50, bytes_read=1000, wall_time=0.5, packets=2,
                    workers={"worker-1": WorkerStats(entries=50, packets=2, bytes=1000,
                                                     busy_seconds=0.25, host="h")}),
        lineage={"elements": [{"file": "a.root", "tree": "t"}], "stopped": False})
    loaded = pyproof.load(original.save(str(tmp_path / "r.pyproof")))
    assert loaded.outputs["h"] == h and loaded.outputs["h"].axes[0].label == "$x$"
    np.testing.assert_array_equal(loaded.outputs["a"], original.outputs["a"])
    assert loaded.outputs["a"].dtype == np.dtype("f4")
    assert loaded.outputs["c"] == collections.Counter(a=3)
    assert isinstance(loaded.outputs["c"], collections.Counter)
    assert loaded.outputs["t"] == (1, "x")
    assert loaded.stats == original.stats and loaded.lineage == original.lineage
    assert loaded.stats.events_per_second == 100.0
    data = (tmp_path / "r.pyproof").read_bytes()
    assert data.startswith(MAGIC) and len(MAGIC) == 16


def _one(tmp_path) -> str:
    return Result(query="q-1", outputs={"x": 1},
                  stats=Stats(entries=1, bytes_read=0, wall_time=1.0, packets=1),
                  lineage={}).save(tmp_path / "one.pyproof")


def test_files_that_are_not_results_are_named(tmp_path):
    other = tmp_path / "hist.root"
    other.write_bytes(b"root\x00\x00\x00")
    with pytest.raises(pyproof.InputError,
                       match=r"hist\.root is not a saved pyproof result \(no pyproof header\)"):
        pyproof.load(other)
    path = _one(tmp_path)
    with open(path, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.pyproof"
    cut.write_bytes(data[:-3])
    with pytest.raises(pyproof.InputError, match=r"cut\.pyproof is a damaged pyproof result"):
        pyproof.load(cut)
    with pytest.raises(pyproof.InputError, match=r"cannot load a result from .*nowhere"):
        pyproof.load(tmp_path / "nowhere")


def test_a_newer_format_says_upgrade(tmp_path, monkeypatch):
    monkeypatch.setattr(result_module, "FORMAT", FORMAT + 1)
    path = _one(tmp_path)
    monkeypatch.setattr(result_module, "FORMAT", FORMAT)
    with pytest.raises(pyproof.InputError,
                       match=rf"saved in result format {FORMAT + 1} by pyproof .*reads format "
                             rf"{FORMAT} and older: upgrade pyproof"):
        pyproof.load(path)


def test_an_output_that_cannot_be_saved_is_named(tmp_path):
    bad = Result(query="q-2", outputs={"obj": object()},
                 stats=Stats(entries=0, bytes_read=0, wall_time=0.0, packets=0), lineage={})
    with pytest.raises(pyproof.InputError, match=r"cannot save the result of query q-2 to "):
        bad.save(tmp_path / "bad.pyproof")
    assert not list(tmp_path.iterdir())
