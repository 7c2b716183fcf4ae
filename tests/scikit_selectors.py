"""Selectors of the Scikit-HEP habits (awkward and set outputs, prints, logging, schemas).

Workers import them by name (`tests.scikit_selectors:...`).
"""

from __future__ import annotations

import logging
import sys

import awkward as ak

import pyproof


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
