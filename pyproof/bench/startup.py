"""Benchmark: how long a lite session takes to start and to close, and where the time goes.

    python -m pyproof.bench.startup [--workers 2] [--cycles 5] [--first-query] [--json]

Runs N connect/close cycles of `lite://?workers=W` and prints the median of
each figure. The start-up is cut into phases by milestones; each phase is the
time from the milestone just before it (in time) to its own, so the phases
add up to the connect time. They are printed in the order they happened, with
when each ended ("at", from the start of `connect`):

- daemon process: the daemon's `main()` runs (interpreter start, imports);
- thespian system: the actor system is up (the admin and logger processes
  started; the admin answers while it loads the actors' modules, and forks the
  root once they are loaded: the rest of that load counts in the next phase);
- root, sessions, gateway: the root supervisor booted its children;
- ready seen: the client saw `ready.json` (then it logs in);
- session supervisor: the session's supervisor runs;
- master: the session's master is up;
- workers ready: every worker is up and the client holds the session.

The daemon opens the client's session while it boots (`--open-session`), so
the session's milestones may come before "root, sessions, gateway" or
"ready seen": the two branches run side by side.

Milestones come from `ready.json` (daemon-side clock readings) and from the
actors' own log records (their timestamps); all are on this host's wall clock.
A milestone an older version does not record is shown as "-" and its time
counted in the next phase. `--first-query` also times one `cycles=1` query
right after connect (what a user waits for before the first answer).

"cluster cpu" is the CPU time (user + system) of every process the cycle
started, collected as they are reaped (this process becomes a subreaper):
wall times on a shared machine swing with its load, CPU time much less.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from typing import Any

import pyproof
from pyproof.logs import read_records
from pyproof.supervision.process_tree import become_subreaper, descendants_of, reap_children

REAP_TIMEOUT = 5.0

PHASES = ("daemon process", "thespian system", "root, sessions, gateway", "ready seen",
          "session supervisor", "master", "workers ready")


class Nothing(pyproof.Selector):
    """The first query's selector: does nothing, so the query measures only overhead."""

    def process(self, events, ctx):
        pass


def _stamp(record: dict[str, Any]) -> float | None:
    text = record.get("timestamp")
    if not isinstance(text, str):
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def milestones(log_dir: str, run_info: dict[str, Any], workers: int) -> dict[str, float | None]:
    """Wall-clock times at which each phase ended (None: not recorded by this version)."""
    at: dict[str, float | None] = dict.fromkeys(PHASES)
    at["daemon process"] = run_info.get("t_main")
    at["thespian system"] = run_info.get("t_system")
    booted = [r for r in read_records(log_dir) if r.get("event") == "daemon_booted"]
    at["root, sessions, gateway"] = run_info.get("t_booted") or (
        _stamp(booted[0]) if booted else None)
    started: dict[str, float] = {}
    for record in read_records(log_dir):
        if record.get("event") != "child_started" or (t := _stamp(record)) is None:
            continue
        started.setdefault(f"{record.get('actor')}/{record.get('child_id')}", t)
    at["session supervisor"] = next(
        (t for key, t in started.items() if key.startswith("sessions/")), None)
    at["master"] = started.get("session/master")
    worker_times = [started.get(f"session/worker-{i}") for i in range(workers)]
    if all(t is not None for t in worker_times):
        at["workers ready"] = max(worker_times)  # type: ignore[type-var]
    return at


def one_cycle(workers: int, first_query: bool) -> dict[str, Any]:
    """Connect, (optionally) run a trivial query, close; the figures of this cycle."""
    cpu0 = _children_cpu()
    t0 = time.time()
    session = pyproof.connect(f"lite://?workers={workers}")
    t_connected = time.time()
    try:
        cluster = session.cluster
        assert cluster is not None
        log_dir = cluster.log_dir
        run_info = dict(getattr(cluster, "ready_info", {}) or {})
        t_ready_seen = getattr(cluster, "t_ready_seen", None)
        query = None
        if first_query:
            q0 = time.perf_counter()
            session.process(Nothing, cycles=1, progress=False)
            query = time.perf_counter() - q0
    finally:
        c0 = time.perf_counter()
        session.close()
        close = time.perf_counter() - c0
    deadline = time.monotonic() + REAP_TIMEOUT
    while descendants_of(os.getpid()) and time.monotonic() < deadline:
        reap_children()  # close() killed them all: only zombies are left to collect
        time.sleep(0.01)
    reap_children()
    cpu = _children_cpu() - cpu0
    at = milestones(log_dir, run_info, workers)
    at["ready seen"] = t_ready_seen
    at["workers ready"] = t_connected  # the client holds the session: the end of start-up
    phases: dict[str, float | None] = dict.fromkeys(PHASES)
    offsets: dict[str, float | None] = dict.fromkeys(PHASES)
    previous = t0
    for t, name in sorted((t, name) for name, t in at.items()
                          if t is not None and t0 <= t <= t_connected):
        phases[name], offsets[name] = t - previous, t - t0
        previous = t
    return {"connect": t_connected - t0, "close": close, "first_query": query,
            "cluster_cpu": cpu, "phases": phases, "at": offsets}


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def run(workers: int = 2, cycles: int = 5, first_query: bool = False) -> dict[str, Any]:
    become_subreaper()  # so the CPU time of every process of the cluster comes back to us
    rows = [one_cycle(workers, first_query) for _ in range(cycles)]

    # here, not at the top: this module is the first query's selector module, which a
    # worker imports (sent), and an import of a module it has not loaded waits for its
    # warm-up (actors/import_guard.py), as a user's cycles-only selector's would not
    import statistics

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "workers": workers, "cycles": cycles, "cpus": os.cpu_count(),
        "connect": median([r["connect"] for r in rows]),
        "connect_min": min(r["connect"] for r in rows),
        "connect_max": max(r["connect"] for r in rows),
        "close": median([r["close"] for r in rows]),
        "close_max": max(r["close"] for r in rows),
        "first_query": median([r["first_query"] for r in rows]),
        "cluster_cpu": median([r["cluster_cpu"] for r in rows]),
        "phases": {name: median([r["phases"][name] for r in rows]) for name in PHASES},
        "at": {name: median([r["at"][name] for r in rows]) for name in PHASES},
        "rows": rows,
    }


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value * 1000:7.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyproof.bench.startup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--first-query", action="store_true",
                        help="also time one cycles=1 query right after connect")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.workers, args.cycles, args.first_query)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    load = os.getloadavg()[0]
    print(f"lite session start-up, {args.workers} workers, median of {args.cycles} cycles "
          f"({report['cpus']} cpus, load {load:.1f}); ms")
    at = report["at"]
    for name in sorted(PHASES, key=lambda n: (at[n] is None, at[n] or 0.0)):
        print(f"  {name:26s} {_ms(report['phases'][name])}   (at {_ms(at[name]).strip()})")
    print(f"  {'connect (total)':26s} {_ms(report['connect'])}   "
          f"(min {_ms(report['connect_min']).strip()}, max {_ms(report['connect_max']).strip()})")
    if args.first_query:
        print(f"  {'first cycles=1 query':26s} {_ms(report['first_query'])}")
    print(f"  {'cluster cpu (whole cycle)':26s} {_ms(report['cluster_cpu'])}")
    print(f"  {'close':26s} {_ms(report['close'])}   (max {_ms(report['close_max']).strip()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
