"""Benchmark: how long a warm session takes to answer a trivial query, and where the time goes.

    python -m pyproof.bench.latency [--queries N] [--workers 2] [--files 8] [--json]

One lite session; after `--warm` queries to warm it up, `--queries` of each
kind, one after the other: `cycles=1`, and 1,000 events of a generated
8-file dataset (the same files every query: their look-ups are cached). It
prints the median wall time the client sees, and a per-phase breakdown (medians
over the queries) from the client's clock and the timestamps of the master's
and workers' log events (one machine, one clock):

    submit    client call -> master logs `query_accepted` (client, gateway, master)
    look-up   accepted -> `query_prepared` (files looked up, packetizer made)
    begin     accepted -> the first worker's `query_started` (RunQuery reached it)
    process   prepared -> the last worker's `outputs_sent` (packets, processing, outputs)
    finish    last outputs -> `query_finished` (merge, the result frame sent)
    back      `query_finished` -> the client holds the Result

The phases overlap (look-up and begin run side by side), so they do not add
up to the wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from typing import Any

import pyproof
from pyproof.demo import write_demo_dataset

PHASES = ("submit", "look-up", "begin", "process", "finish", "back")


class Nothing(pyproof.Selector):
    """Counts calls: the least a selector can do."""

    def begin(self, ctx):
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        ctx.outputs["n"] += 1


class Count(pyproof.Selector):
    """Reads one branch and counts events."""

    branches = ["Muon_pt"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        ctx.outputs["n"] += len(events)


def _stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_events(log_dir: str) -> dict[str, list[tuple[float, str, str]]]:
    """Per query id: its (time, actor, event) log lines from the master's and workers' logs."""
    by_query: dict[str, list[tuple[float, str, str]]] = {}
    for name in os.listdir(log_dir):
        if not (name.startswith("master") or name.startswith("worker")) or \
                not name.endswith(".jsonl"):
            continue
        with open(os.path.join(log_dir, name), encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                query = row.get("query")
                if isinstance(query, str) and "timestamp" in row:
                    by_query.setdefault(query, []).append(
                        (_stamp(row["timestamp"]), str(row.get("actor")), str(row.get("event"))))
    return by_query


def phases(t_submit: float, t_back: float, events: list[tuple[float, str, str]]
           ) -> dict[str, float]:
    """One query's phases in seconds (see the module docstring); missing ones are left out."""
    def first(actor: str, event: str) -> float | None:
        times = [t for t, a, e in events if a.startswith(actor) and e == event]
        return min(times) if times else None

    def last(actor: str, event: str) -> float | None:
        times = [t for t, a, e in events if a.startswith(actor) and e == event]
        return max(times) if times else None

    accepted = first("master", "query_accepted")
    prepared = first("master", "query_prepared")
    started = first("worker", "query_started")
    outputs = last("worker", "outputs_sent")
    finished = first("master", "query_finished")
    out: dict[str, float] = {}
    pairs = {"submit": (t_submit, accepted), "look-up": (accepted, prepared),
             "begin": (accepted, started), "process": (prepared, outputs),
             "finish": (outputs, finished), "back": (finished, t_back)}
    for name, (a, b) in pairs.items():
        if a is not None and b is not None:
            out[name] = b - a
    return out


def measure(session: Any, label: str, run: Any, queries: int, warm: int) -> dict[str, Any]:
    """`warm` + `queries` runs of `run(session)`; the medians of the last `queries`."""
    walls: list[float] = []
    marks: list[tuple[str, float, float]] = []
    for i in range(warm + queries):
        t0 = time.time()
        handle = run(session)
        handle.result(timeout=60)
        t1 = time.time()
        if i >= warm:
            walls.append(t1 - t0)
            marks.append((handle.query, t0, t1))
    events = read_events(session.log_dir)
    per_phase: dict[str, list[float]] = {name: [] for name in PHASES}
    for query, t0, t1 in marks:
        for name, seconds in phases(t0, t1, events.get(query, [])).items():
            per_phase[name].append(seconds)
    return {"query": label, "queries": queries, "median_ms": 1000 * statistics.median(walls),
            "min_ms": 1000 * min(walls),
            "phases_ms": {n: 1000 * statistics.median(v) for n, v in per_phase.items() if v}}


def run(queries: int, warm: int, workers: int, files: int, directory: str) -> list[dict]:
    specs = write_demo_dataset(directory, files=files, events=2000, seed=7)
    with pyproof.connect(f"lite://?workers={workers}") as session:
        return [
            measure(session, "cycles=1",
                    lambda s: s.submit(Nothing, cycles=1), queries, warm),
            measure(session, f"1,000 events of {files} files",
                    lambda s: s.submit(Count, dataset=specs, entries=1000), queries, warm),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyproof.bench.latency")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyproof-bench-") as directory:
        rows = run(args.queries, args.warm, args.workers, args.files, directory)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"warm lite session, {args.workers} workers, medians of {args.queries} queries (ms)")
    print(f"{'query':26s}{'wall':>7s}{'min':>7s}" + "".join(f"{p:>9s}" for p in PHASES))
    for r in rows:
        print(f"{r['query']:26s}{r['median_ms']:7.1f}{r['min_ms']:7.1f}" + "".join(
            f"{r['phases_ms'].get(p, float('nan')):9.1f}" for p in PHASES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
