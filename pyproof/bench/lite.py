"""Benchmark: a CPU-bound and a read-bound selector, sequential uproot vs the lite cluster.

    python -m pyproof.bench.lite [--events N] [--files F] [--workers 1 2]

The baseline runs in this process: a plain loop over the same files with
uproot, calling the same selector on chunks of the same size. Every run's
result is checked against the baseline (identical histogram counts).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import awkward as ak
import hist
import numpy as np
import uproot

import pyproof
from pyproof.datasets.sources import split_file_tree
from pyproof.demo import pair_mass, write_demo_dataset


class ReadBound(pyproof.Selector):
    """Reads and decompresses every muon branch; almost no arithmetic."""

    branches = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"]

    def begin(self, ctx):
        ctx.outputs["nmuons"] = hist.Hist.new.Integer(0, 8, name="n").Double()

    def process(self, events, ctx):
        ctx.outputs["nmuons"].fill(ak.to_numpy(ak.num(events["Muon_pt"])))


class CpuBound(pyproof.Selector):
    """The dimuon mass, then a deliberately heavy per-event computation."""

    branches = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"]
    rounds = 40

    def begin(self, ctx):
        ctx.outputs["mass"] = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()
        ctx.outputs["smeared"] = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()

    def process(self, events, ctx):
        mass = pair_mass(events)
        ctx.outputs["mass"].fill(mass)
        x = mass.copy()
        for _ in range(self.rounds):  # a stand-in for a fit or a matrix element
            x = np.sqrt(x * x + np.sin(x) ** 2 + np.log1p(np.abs(np.cos(x))))
        ctx.outputs["smeared"].fill(x)


def sequential(selector_cls, specs: list[str], step: int) -> tuple[dict, float, int]:
    """The baseline: one process, a plain uproot loop, the same selector."""
    selector = selector_cls()
    ctx = pyproof.Context(inputs={})
    selector.begin(ctx)
    t0 = time.perf_counter()
    entries = 0
    for spec in specs:
        path, tree_name = split_file_tree(spec)
        with uproot.open(path) as f:
            tree = f[tree_name]
            for start in range(0, tree.num_entries, step):
                stop = min(start + step, tree.num_entries)
                events = tree.arrays(selector_cls.branches, entry_start=start,
                                     entry_stop=stop, library="ak")
                selector.process(events, ctx)
                entries += stop - start
    return ctx.outputs, time.perf_counter() - t0, entries


def run(events: int, files: int, workers: list[int], step: int, directory: str) -> list[dict]:
    specs = write_demo_dataset(directory, files=files, events=events, seed=7)
    rows = []
    for selector_cls in (CpuBound, ReadBound):
        name = selector_cls.__name__
        ref, seconds, n = sequential(selector_cls, specs, step)
        rows.append({"selector": name, "mode": "sequential uproot", "workers": 1,
                     "seconds": seconds, "events_per_s": n / seconds, "speedup": 1.0})
        base = seconds
        for w in workers:
            with pyproof.connect(f"lite://?workers={w}") as session:
                t0 = time.perf_counter()
                result = session.process(selector_cls, dataset=specs, progress=False)
                wall = time.perf_counter() - t0
            for key, h in ref.items():
                if result.outputs[key].values().tolist() != h.values().tolist():
                    raise AssertionError(f"{name}: output {key!r} differs from the baseline")
            rows.append({"selector": name, "mode": "lite cluster", "workers": w,
                         "seconds": wall, "events_per_s": result.stats.entries / wall,
                         "speedup": base / wall})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyproof.bench.lite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--step", type=int, default=50_000,
                        help="entries per chunk of the sequential baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyproof-bench-") as directory:
        rows = run(args.events, args.files, args.workers, args.step, directory)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.events:,} events in {args.files} files, {os.cpu_count()} cores, "
          f"baseline chunks of {args.step:,} entries, adaptive packets on the cluster; "
          "client wall time incl. query set-up")
    print(f"{'selector':10s} {'mode':18s} {'workers':>7s} {'seconds':>8s} "
          f"{'events/s':>12s} {'speedup':>8s}")
    for r in rows:
        print(f"{r['selector']:10s} {r['mode']:18s} {r['workers']:>7d} {r['seconds']:8.2f} "
              f"{r['events_per_s']:12,.0f} {r['speedup']:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
