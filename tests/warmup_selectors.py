"""Selectors of the warm-up tests whose module imports nothing but pyproof: a worker
loads them without waiting for its warm-up (actors/import_guard.py)."""

from __future__ import annotations

import sys

import pyproof
from pyproof.actors.warmup import DATA_MODULES, started_warmup, warming_up


class Warming(pyproof.Selector):
    """Cycles: counts them, and the workers that ran while their warm-up still did, that
    started one, that had the data modules loaded."""

    def begin(self, ctx):
        ctx.outputs["count"] = 0
        ctx.outputs["workers"] = 1
        ctx.outputs["warming"] = int(warming_up())
        ctx.outputs["warmed"] = int(started_warmup())  # this worker started a warm-up
        ctx.outputs["loaded"] = int(all(name in sys.modules for name in DATA_MODULES))

    def process(self, cycles, ctx):
        ctx.outputs["count"] += len(cycles)
