"""Outputs merge by type as physicists expect."""

from __future__ import annotations

import collections

import awkward as ak
import hist
import numpy as np
import pytest

from pyproof.merging import MergeError, merge, merge_outputs


def test_histograms_add():
    a = hist.Hist.new.Reg(4, 0, 4).Double()
    b = hist.Hist.new.Reg(4, 0, 4).Double()
    a.fill([0.5, 1.5])
    b.fill([1.5, 3.5])
    assert merge(a, b).values().tolist() == [1, 2, 0, 1]


def test_arrays_add_elementwise_or_concatenate_when_asked():
    assert merge(np.array([1, 2]), np.array([3, 4])).tolist() == [4, 6]
    assert merge(np.array([1]), np.array([2, 3]), concatenate=True).tolist() == [1, 2, 3]
    with pytest.raises(MergeError, match=r"^x: cannot add arrays of shapes \(1,\) and \(2,\)"):
        merge(np.array([1]), np.array([2, 3]), name="x")


def test_numbers_counters_lists_and_dicts():
    assert merge(1, 2.5) == 3.5
    assert merge(collections.Counter(a=1), collections.Counter(a=2, b=1)) == {"a": 3, "b": 1}
    assert merge([1], [2, 3]) == [1, 2, 3]
    acc = {"n": 1, "h": {"x": 1}}
    assert merge_outputs(acc, {"n": 2, "h": {"x": 2, "y": 5}, "new": 7}) == {
        "n": 3,
        "h": {"x": 3, "y": 5},
        "new": 7,
    }


def test_awkward_arrays_concatenate_and_sets_take_the_union():
    a = ak.Array([[1.0, 2.0], []])
    b = ak.Array([[3.0]])
    assert merge(a, b).tolist() == [[1.0, 2.0], [], [3.0]]
    assert merge({1, 2}, {2, 3}) == {1, 2, 3}
    acc = {"runs": {"a"}, "mu": ak.Array([{"pt": 1.0}])}
    merged = merge_outputs(acc, {"runs": {"b"}, "mu": ak.Array([{"pt": 2.0}])})
    assert merged["runs"] == {"a", "b"} and merged["mu"].pt.tolist() == [1.0, 2.0]


def test_objects_with_merge_or_add():
    class Acc:
        def __init__(self, v):
            self.v = v

        def merge(self, other):
            self.v += other.v

    assert merge(Acc(1), Acc(2)).v == 3


def test_unmergeable_outputs_are_named():
    with pytest.raises(MergeError, match=r"^h: cannot merge str with int \(give the output one "
                                         r"type on every worker; outputs that merge: hist\.Hist "
                                         r"and boost-histogram histograms, numpy arrays, awkward "
                                         r"arrays \(concatenated\), numbers \(summed\), "
                                         r"collections\.Counter, sets \(union\), lists, dicts "
                                         r"of these, or objects with merge\(other\) or "
                                         r"__add__\)$"):
        merge("a", 1, name="h")
    with pytest.raises(MergeError, match=r"^best: objects of type NoneType have neither "
                                         r"merge\(\) nor __add__ \(outputs that merge: "):
        merge(None, None, name="best")
    with pytest.raises(MergeError, match=r"booleans do not merge"):
        merge(True, False, name="flag")
