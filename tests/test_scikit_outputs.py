"""Outputs of the Scikit-HEP stack's own types (ak.Array, set) on a real lite session."""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

from tests.conftest import data_file
from tests.scikit_selectors import AwkwardAndSetOutputs


def test_awkward_arrays_concatenate_and_sets_unite_across_workers(session):
    path = data_file("uproot-Zmumu.root")
    result = session.process(AwkwardAndSetOutputs, dataset=f"{path}:events", progress=False,
                             packetizer="basic", packetizer_params={"packet_entries": 200})
    events = uproot.open(path)["events"].arrays(["Run", "pt1", "M"])
    expected = np.sort(ak.to_numpy(events.pt1[events.M > 80]))
    got = result.outputs["mu"]
    assert isinstance(got, ak.Array) and got.fields == ["pt", "run"]
    # packets arrive in any order: compare as sorted values
    np.testing.assert_array_equal(np.sort(ak.to_numpy(got.pt)), expected)
    assert result.outputs["runs"] == {int(r) for r in events.Run}
    assert result.stats.workers and len(result.stats.workers) == 2
