"""A selector whose module imports awkward and hist when it is imported: as a session's
first query, its worker imports them while its warm-up may be importing them too
(actors/warmup.py, actors/import_guard.py)."""

from __future__ import annotations

import awkward as ak
import hist
from awkward.operations import ak_num  # noqa: F401  (a submodule, in a from list)

import pyproof


class CyclesInAwkward(pyproof.Selector):
    """Cycles, summed through an awkward array and histogrammed with hist."""

    def begin(self, ctx):
        ctx.outputs["sum"] = 0
        ctx.outputs["h"] = hist.Hist.new.Reg(10, 0, 100, name="x").Double()

    def process(self, cycles, ctx):
        array = ak.Array([list(cycles)])
        ctx.outputs["sum"] += int(ak.sum(array))
        ctx.outputs["h"].fill(ak.to_numpy(ak.flatten(array)))
