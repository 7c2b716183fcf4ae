"""Selectors of the Scikit-HEP habits (awkward and set outputs, prints, logging, schemas).

Workers import them by name (`tests.scikit_selectors:...`).
"""

from __future__ import annotations

import collections
import json
import logging
import sys

import awkward as ak

import pyproof


class DatasetNames(pyproof.Selector):
    """Entries per ctx.dataset, and each dataset's ctx.metadata (as sorted JSON)."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["entries"] = collections.Counter()
        ctx.outputs["metadata"] = collections.Counter()

    def process(self, events, ctx):
        ctx.outputs["entries"][ctx.dataset] += len(events)
        ctx.outputs["metadata"][f"{ctx.dataset}={json.dumps(ctx.metadata, sort_keys=True)}"] = 1


class AwkwardAndSetOutputs(pyproof.Selector):
    """Keeps the selected muons' pt as an ak.Array and the runs seen as a set."""

    branches = ["Run", "pt1", "M"]

    def begin(self, ctx):
        ctx.outputs["runs"] = set()

    def process(self, events, ctx):
        heavy = events[events.M > 80]
        mu = ak.zip({"pt": heavy.pt1, "run": heavy.Run})
        old = ctx.outputs.get("mu")
        ctx.outputs["mu"] = mu if old is None else ak.concatenate([old, mu])
        ctx.outputs["runs"] |= {int(r) for r in events.Run}


class Chatty(pyproof.Selector):
    """Prints, writes to stderr and logs once per packet."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        print(f"hello from {ctx.worker} packet [{ctx.entry_start}, {ctx.entry_stop})")
        print(f"warned on stderr [{ctx.entry_start}", file=sys.stderr)
        logging.getLogger("analysis").warning("a logged warning at %d", ctx.entry_start)
        ctx.outputs["n"] += len(events)
        if ctx.inputs.get("fail_at") is not None and \
                ctx.entry_start <= ctx.inputs["fail_at"] < ctx.entry_stop:
            print("about to fail: the last words")
            raise ValueError("failing on purpose")


class NanoRecords(pyproof.Selector):
    """Reads NanoAOD-style branches as records: events.Muon.pt (Selector.schema)."""

    schema = "nanoaod"
    branches = ["nMuon", "Muon_pt", "Muon_eta", "run"]

    def begin(self, ctx):
        ctx.outputs["muons"] = 0
        ctx.outputs["sum_pt"] = 0.0
        ctx.outputs["datasets"] = set()
        ctx.outputs["xsec"] = set()

    def process(self, events, ctx):
        ctx.outputs["muons"] += int(ak.sum(ak.num(events.Muon.pt)))
        ctx.outputs["sum_pt"] += float(ak.sum(events.Muon.pt))
        ctx.outputs["datasets"].add(f"{ctx.dataset}|{events.metadata['dataset']}")
        ctx.outputs["xsec"].add(ctx.metadata.get("xsec"))


try:
    from coffea import processor as _coffea_processor
except ImportError:  # the coffea tests say so; the other selectors here do not need it
    _coffea_processor = None

if _coffea_processor is not None:
    import hist

    class DimuonProcessor(_coffea_processor.ProcessorABC):
        """A plain coffea processor, with configuration, as users write them."""

        def __init__(self, pt_cut: float = 5.0, bins: int = 60) -> None:
            self.pt_cut = pt_cut
            self.bins = bins

        def process(self, events):
            dataset = events.metadata["dataset"]
            muons = events.Muon[events.Muon.pt > self.pt_cut]
            pairs = ak.combinations(muons, 2)
            mass = (pairs["0"] + pairs["1"]).mass
            h = hist.Hist.new.Reg(self.bins, 0, 120, name="mass").Double()
            h.fill(mass=ak.flatten(mass))
            return {dataset: {"entries": len(events), "muons": int(ak.sum(ak.num(muons))),
                              "mass": h},
                    "runs": set(ak.to_list(events.run)),
                    "xsec": {events.metadata.get("xsec")}}

        def postprocess(self, accumulator):
            for out in accumulator.values():
                if isinstance(out, dict):
                    out["muons_per_event"] = out["muons"] / out["entries"]
            return accumulator
