"""Benchmark: what an idle lite cluster costs, in % of one core.

    python -m pyproof.bench.idle [--workers 2] [--seconds 10] [--rounds 3]

Starts a lite cluster, runs one tiny query (so master and workers are in the
state they rest in between queries), waits for start-up to settle, then sums
utime+stime (from /proc/<pid>/stat) of every process of the cluster over the
measuring window, and of this client process (its threads: the session's
sockets) apart. Each round prints one line; the last line gives the spread.
The figure is CPU time over wall time: 1.0% means a hundredth of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import pyproof
from pyproof.supervision.process_tree import (
    become_subreaper,
    cmdline,
    cpu_ticks,
    descendants_of,
)

TICKS = os.sysconf("SC_CLK_TCK")


class Nothing(pyproof.Selector):
    """A selector that does nothing: the warm-up query."""

    def process(self, events, ctx):
        pass


def cluster_cpu(pids: list[int]) -> dict[int, int]:
    ticks = {pid: cpu_ticks(pid) for pid in pids}
    return {pid: t for pid, t in ticks.items() if t is not None}


def roles(session: Any) -> dict[int, str]:
    """pid -> role in the supervision tree ('root', 'gateway', 'master', ...), from the
    daemon's live tree; processes not in it (daemon, Thespian admin and logger) unnamed."""
    try:
        tree = session.control.call("tree", deadline=10.0)["tree"]
    except Exception:  # an older daemon, or a gateway that cannot answer: names are optional
        return {}
    found: dict[int, str] = {}

    def walk(node: dict[str, Any], name: str) -> None:
        if node.get("pid"):
            found[node["pid"]] = name
        for child in node.get("children", []):
            if child.get("pid"):
                found[child["pid"]] = child["id"]
            if child.get("tree"):
                walk(child["tree"], child["id"] if child["id"] in ("sessions",)
                     else f"session {child['id'][:8]}")

    walk(tree, "root")
    return found


def measure(seconds: float, names: dict[int, str] | None = None) -> dict[str, Any]:
    """One window: the cluster's and this client's CPU, in % of a core."""
    pids = descendants_of(os.getpid())
    before = cluster_cpu(pids)
    me_before = os.times()
    t0 = time.monotonic()
    time.sleep(seconds)  # the measurement itself: nothing else to wait for
    wall = time.monotonic() - t0
    after = cluster_cpu(pids)
    me_after = os.times()
    per = {pid: after[pid] - before[pid] for pid in after if pid in before}
    used = sum(per.values()) / TICKS
    mine = (me_after.user - me_before.user) + (me_after.system - me_before.system)
    return {"cluster_percent": 100.0 * used / wall, "client_percent": 100.0 * mine / wall,
            "processes": len(after), "seconds": wall,
            "by_process": {f"{pid} {_name(pid, names or {})}": 100.0 * t / TICKS / wall
                           for pid, t in sorted(per.items(), key=lambda kv: -kv[1])}}


def _name(pid: int, names: dict[int, str]) -> str:
    """A tree role, else what the process is (the daemon's main process, Thespian's
    admin and logger are not in the tree)."""
    if pid in names:
        return names[pid]
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return "?"
    return f"not in the tree (parent {ppid}): {cmdline(pid)[:40]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after the warm-up query")
    parser.add_argument("--by-process", action="store_true",
                        help="also print each process's share")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    become_subreaper()  # so every process of the cluster is our descendant
    rounds = []
    with pyproof.connect(f"lite://?workers={args.workers}") as session:
        session.process("pyproof.bench.idle:Nothing", cycles=1, progress=False)
        time.sleep(args.settle)  # let start-up work (imports, logs) finish
        names = roles(session) if args.by_process else {}
        if args.by_process:
            time.sleep(1.0)  # the tree request's own work is not measured
        for i in range(args.rounds):
            r = measure(args.seconds, names)
            rounds.append(r)
            if not args.json:
                print(f"round {i + 1}: cluster {r['cluster_percent']:.2f}% of a core "
                      f"({r['processes']} processes), client {r['client_percent']:.2f}%",
                      flush=True)
                if args.by_process:
                    for name, share in r["by_process"].items():
                        print(f"    {share:5.2f}%  {name}")
    values = sorted(r["cluster_percent"] for r in rounds)
    summary = {"workers": args.workers, "rounds": rounds, "min": values[0],
               "median": values[len(values) // 2], "max": values[-1]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"idle {args.workers}-worker lite cluster: median {summary['median']:.2f}% "
              f"of a core (min {summary['min']:.2f}, max {summary['max']:.2f}, "
              f"{len(rounds)} x {args.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
