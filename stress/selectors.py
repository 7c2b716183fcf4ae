"""Selectors the stress harness runs (workers import them as `stress.selectors:Name`).

Every output is an exact integer quantity (counts, unweighted histogram
bins, integer sums), so a result either matches its reference bit for bit
or it is wrong: no floating tolerance to hide a packet counted twice.
`inputs['sleep']` seconds per packet make a query last long enough for the
harness to hit it with a fault.
"""

from __future__ import annotations

import time

import awkward as ak
import hist
import numpy as np

import pyproof

MASS_BINS = (100, 0.0, 200.0)
PT_BINS = (50, 0.0, 200.0)


def mass_hist() -> hist.Hist:
    return hist.Hist.new.Reg(*MASS_BINS, name="M").Double()


def pt_hist() -> hist.Hist:
    return hist.Hist.new.Reg(*PT_BINS, name="pt").Double()


def muon_pt(px, py) -> np.ndarray:
    return ak.to_numpy(ak.flatten(np.sqrt(px**2 + py**2)))


class MassCount(pyproof.Selector):
    """Z->mumu: entries, the histogram of M, and the sum of the charges Q1+Q2."""

    branches = ["M", "Q1", "Q2"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0
        ctx.outputs["mass"] = mass_hist()
        ctx.outputs["charge"] = 0

    def process(self, events, ctx):
        time.sleep(ctx.inputs.get("sleep", 0.0))
        ctx.outputs["n"] += len(events)
        ctx.outputs["mass"].fill(ak.to_numpy(events["M"]))
        ctx.outputs["charge"] += int(ak.sum(events["Q1"] + events["Q2"]))


class MuonCount(pyproof.Selector):
    """H->ZZ (jagged branches): events, muons, and the histogram of muon pt."""

    branches = ["Muon_Px", "Muon_Py"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0
        ctx.outputs["muons"] = 0
        ctx.outputs["pt"] = pt_hist()

    def process(self, events, ctx):
        time.sleep(ctx.inputs.get("sleep", 0.0))
        ctx.outputs["n"] += len(events)
        ctx.outputs["muons"] += int(ak.sum(ak.num(events["Muon_Px"])))
        ctx.outputs["pt"].fill(muon_pt(events["Muon_Px"], events["Muon_Py"]))


class CycleSum(pyproof.Selector):
    """Pure CPU work with a closed form: count N and sum N(N-1)/2 of cycles 0..N-1."""

    def begin(self, ctx):
        ctx.outputs["n"] = 0
        ctx.outputs["sum"] = 0

    def process(self, cycles, ctx):
        time.sleep(ctx.inputs.get("sleep", 0.0))
        ctx.outputs["n"] += len(cycles)
        ctx.outputs["sum"] += sum(cycles)


# -- selectors that fault (chaos's selector faults): each must cost its query only -----

class ExitsWorker(MassCount):
    """os._exit(1) in the packet holding entry `inputs['deadly']`."""

    def process(self, events, ctx):
        import os

        if ctx.entry_start <= ctx.inputs["deadly"] < ctx.entry_stop:
            os._exit(1)
        super().process(events, ctx)


class Segfaults(MassCount):
    """A segmentation fault in the packet holding entry `inputs['deadly']`."""

    def process(self, events, ctx):
        import ctypes

        if ctx.entry_start <= ctx.inputs["deadly"] < ctx.entry_stop:
            ctypes.string_at(0)
        super().process(events, ctx)


class HangsInBegin(MassCount):
    """Hangs in begin() (bounded by the query's packet_timeout)."""

    def begin(self, ctx):
        time.sleep(600)
        super().begin(ctx)


class HugeOutput(MassCount):
    """Adds an output of `inputs['mb']` MiB (over the query's max_output_bytes in chaos)."""

    def begin(self, ctx):
        super().begin(ctx)
        ctx.outputs["huge"] = np.zeros(int(ctx.inputs["mb"] * 2**20) // 8)
