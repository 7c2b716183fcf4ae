"""Selectors of the warm-up tests whose module imports nothing but pyproof: a worker
loads them without waiting for its warm-up (actors/import_guard.py)."""

from __future__ import annotations

import pyproof
from pyproof.actors.warmup import warming_up


class Warming(pyproof.Selector):
    """Cycles: counts them, and the workers that ran while their warm-up still did."""

    def begin(self, ctx):
        ctx.outputs["count"] = 0
        ctx.outputs["workers"] = 1
        ctx.outputs["warming"] = int(warming_up())

    def process(self, cycles, ctx):
        ctx.outputs["count"] += len(cycles)
