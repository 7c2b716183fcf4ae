"""Benchmark: one worker slowed down (default 3x) on the lite cluster, adaptive vs basic.

    python -m pyproof.bench.straggler [--workers 2] [--factor 3] [--events N]

Each packet sleeps `per_entry` seconds per entry, `factor` times longer on the
slow worker (sleeping, so two cores can host the workers fairly). Prints wall
time, each worker's share and the finish-time spread for each packetizer,
and checks both results against a sequential loop (identical histograms).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import hist

import pyproof
from pyproof.datasets.sources import split_file_tree
from pyproof.demo import DimuonMass, write_demo_dataset


class Straggler(DimuonMass):
    def process(self, events, ctx):
        delay = ctx.inputs["per_entry"] * len(events)
        if ctx.worker == ctx.inputs["slow"]:
            delay *= ctx.inputs["factor"]
        time.sleep(delay)
        super().process(events, ctx)


def reference(specs: list[str]) -> hist.Hist:
    import uproot

    from pyproof.demo import pair_mass

    h = hist.Hist.new.Reg(120, 0, 120, name="mass", label="m(mu mu) [GeV]").Double()
    for spec in specs:
        path, tree = split_file_tree(spec)
        with uproot.open(path) as f:
            h.fill(pair_mass(f[tree].arrays(DimuonMass.branches, library="ak")))
    return h


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyproof-bench-") as directory:
        specs = write_demo_dataset(directory, files=args.files, events=args.events, seed=3)
        ref = reference(specs)
        inputs = {"per_entry": args.per_entry, "factor": args.factor, "slow": "worker-0"}
        with pyproof.connect(f"lite://?workers={args.workers}") as session:
            for kind in ("adaptive", "basic"):
                t0 = time.perf_counter()
                result = session.process(Straggler, dataset=specs, inputs=inputs,
                                         packetizer=kind, progress=False)
                wall = time.perf_counter() - t0
                exact = result.outputs["mass"] == ref
                busy = {w: s.busy_seconds for w, s in result.stats.workers.items()}
                rows.append({"packetizer": kind, "wall": wall, "exact": exact,
                             "packets": result.stats.packets,
                             "entries": {w: s.entries for w, s in result.stats.workers.items()},
                             "busy_spread": max(busy.values()) - min(busy.values())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyproof.bench.straggler")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--per-entry", type=float, default=2e-5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{args.events:,} events, {args.workers} workers, worker-0 slowed {args.factor}x")
        for r in rows:
            shares = " ".join(f"{w}:{n:,}" for w, n in sorted(r["entries"].items()))
            print(f"{r['packetizer']:9s} wall {r['wall']:6.2f} s  packets {r['packets']:4d}  "
                  f"busy spread {r['busy_spread']:5.2f} s  exact {r['exact']}  {shares}")
        base = next(r["wall"] for r in rows if r["packetizer"] == "basic")
        adaptive = next(r["wall"] for r in rows if r["packetizer"] == "adaptive")
        print(f"adaptive / basic wall time: {adaptive / base:.2f}")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
