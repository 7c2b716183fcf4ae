"""Workers inflate ZLIB baskets with ISA-L (datasets/inflate.py): uproot's own option, the
same bytes as zlib, about 1.5x faster; a build whose bytes disagree keeps zlib."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import hist
import numpy as np
import pytest
import uproot

import pyproof
from tests.conftest import data_file, zmumu
from tests.sample_selectors import zmumu_mass

pytest.importorskip("isal", reason="isal is not installed here (no wheel for this machine)")

SWITCH = textwrap.dedent("""
    import sys
    import numpy as np
    import uproot, uproot.compression
    from pyproof.datasets.inflate import use_fast_inflate
    if sys.argv[2] == "broken":  # an isal whose inflate gives other bytes
        from isal import isal_zlib
        isal_zlib.decompress = lambda data, **kw: b"not what zlib gives"
    branches = ["E1", "px1", "Q1"]
    before = uproot.open(sys.argv[1])["events"].arrays(branches, library="np")
    chosen = use_fast_inflate()
    assert use_fast_inflate() == chosen  # once per process
    after = uproot.open(sys.argv[1])["events"].arrays(branches, library="np")
    same = all(np.array_equal(before[b], after[b]) for b in branches)
    print(chosen, uproot.compression._DecompressZLIB.library, same)
""")


def switch(mode: str) -> list[str]:
    """Run `use_fast_inflate` in a fresh process (uproot's setting is process-wide)."""
    out = subprocess.run([sys.executable, "-c", SWITCH, data_file("uproot-Zmumu.root"), mode],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_the_switch_makes_uproot_inflate_with_isal_to_the_same_arrays():
    assert uproot.open(data_file("uproot-Zmumu.root")).file.compression.name == "ZLIB"
    assert switch("ok") == ["isal", "isal", "True"]


def test_an_isal_that_inflates_other_bytes_is_not_used():
    assert switch("broken") == ["zlib", "zlib", "True"]


def test_a_lite_query_inflates_zlib_baskets_with_isal_and_its_result_is_exact():
    with pyproof.connect("lite://?workers=2") as session:
        result = session.process("tests.sample_selectors:InflaterSeen", dataset=zmumu(),
                                 progress=False)
    events = uproot.open(data_file("uproot-Zmumu.root"))["events"].arrays(
        ["E1", "px1", "py1", "pz1", "E2", "px2", "py2", "pz2"], library="ak")
    expected = hist.Hist.new.Reg(120, 0, 120, name="mass").Double().fill(zmumu_mass(events))
    assert result.outputs["inflater"] == collections.Counter({"isal": len(events)})
    np.testing.assert_array_equal(result.outputs["mass"].values(flow=True),
                                  expected.values(flow=True))
