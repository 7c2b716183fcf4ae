"""Simulate a cluster on a virtual clock, driving a real packetizer: does it finish together?

`python -m pyproof.packetizer.simulate --workers 100 --speed-spread 3
--stragglers 0.01 --straggler-slowdown 10 --packetizer adaptive --json`

Workers have speeds (entries/s) drawn log-uniform over `[speed, speed *
speed_spread]`, a fraction of them `straggler_slowdown` times slower; files
have sizes and, with `--hosts`, a host (remote reads `remote_slowdown` times
slower); with `--parts N` they form N datasets processed in turn (the
"multi" packetizer over parts of the chosen kind). Each packet costs
`overhead` seconds on top (request, file open). With `--prefetch` a worker
asks for its next packet when it starts one, as the real worker loop does
(the request's round trip hides behind the processing). With `--batches` a
request is answered as the master does (`next_packets`: several short packets
at once, see packetizer/common.py); the worker queues them and, with
`--prefetch`, asks again as it starts the last one. Workers may die or
join mid-run. The report compares the makespan with the
ideal (total entries / total speed of the starting workers, no overhead) and
gives the spread of the workers' finish times and the packetizer's own CPU
time per `next_packet` decision.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyproof.packetizer import make_packetizer
from pyproof.packetizer.base import Packet, Packetizer, WorkRange
from pyproof.packetizer.static import StaticPacketizer

PACKETIZERS = ("adaptive", "basic", "static")
"""What `--packetizer` may name (static chunks are a baseline, not a make_packetizer kind)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What to simulate; defaults are the issue's reference case without stragglers."""

    workers: int = 100
    files: int = 1000
    entries: int = 100_000
    entries_spread: float = 0.5
    speed: float = 10_000.0
    speed_spread: float = 3.0
    stragglers: float = 0.0
    straggler_slowdown: float = 10.0
    hosts: int = 0
    remote_slowdown: float = 1.0
    reader_cap: int | None = None
    deaths: int = 0
    joins: int = 0
    overhead: float = 0.005
    flush_every: int = 1
    prefetch: bool = False
    batches: bool = False
    packet_entries: int | None = None  # basic: a fixed packet size (None: its default)
    parts: int = 1
    packetizer: str = "adaptive"
    seed: int = 0


class _Cluster:
    """The virtual cluster: workers, files and an event heap over one packetizer."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        rng = random.Random(s.seed)
        lo, hi = 1 - s.entries_spread, 1 + s.entries_spread
        self.work = [
            WorkRange(element=i, entry_start=0, entry_stop=int(s.entries * rng.uniform(lo, hi)))
            for i in range(s.files)
        ]
        names = [f"w{i}" for i in range(s.workers + s.joins)]
        self.speed = {w: s.speed * s.speed_spread ** rng.random() for w in names}
        for w in rng.sample(names[: s.workers], round(s.stragglers * s.workers)):
            self.speed[w] /= s.straggler_slowdown
        self.worker_host = {w: f"h{i % s.hosts}" for i, w in enumerate(names)} if s.hosts else {}
        self.file_host = (
            {i: f"h{rng.randrange(s.hosts)}" for i in range(s.files)} if s.hosts else {}
        )
        self.total = sum(w.entries for w in self.work)
        self.ideal = self.total / sum(self.speed[w] for w in names[: s.workers])
        self.packetizer = self._make()
        self.events: list[tuple[float, int, str, str, tuple[Packet, float] | None]] = []
        self.seq = 0
        for w in names[: s.workers]:
            self._push(0.0, "join", w)
        for w in names[s.workers :]:
            self._push(rng.uniform(0.05, 0.5) * self.ideal, "join", w)
        for w in rng.sample(names[: s.workers], s.deaths):
            self._push(rng.uniform(0.05, 0.8) * self.ideal, "die", w)
        self.alive: set[str] = set()
        self.idle: set[str] = set()
        self.outputs: dict[str, list[int]] = {}
        self.last_done: dict[str, float] = {}
        self.packets: dict[str, int] = {}
        self.queue: dict[str, list[Packet]] = {}  # granted (a batch, or prefetched), not started
        self.requests = 0
        self.cpu: list[float] = []
        self.makespan = 0.0

    def _make(self) -> Packetizer:
        s = self.s
        if s.packetizer == "static":
            return StaticPacketizer(self.work, workers=s.workers)
        params: dict[str, Any] = {}
        if s.packetizer == "basic" and s.packet_entries is not None:
            params["packet_entries"] = s.packet_entries
        if s.packetizer == "adaptive":
            params = {"element_hosts": self.file_host, "worker_hosts": self.worker_host}
            params["max_readers_per_node"] = s.reader_cap
        if s.parts > 1:
            bounds = [s.files * k // s.parts for k in range(s.parts + 1)]
            parts = [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
            return make_packetizer(
                "multi",
                self.work,
                workers=s.workers,
                parts=parts,
                part_kind=s.packetizer,
                params=params,
            )
        return make_packetizer(s.packetizer, self.work, workers=s.workers, **params)

    def _push(
        self, t: float, kind: str, worker: str, job: tuple[Packet, float] | None = None
    ) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, worker, job))

    def run(self) -> None:
        while self.events and not self.packetizer.finished:
            t, _, kind, worker, job = heapq.heappop(self.events)
            if kind == "join":
                self.alive.add(worker)
                self.packetizer.add_worker(worker, t)
                self._ask(worker, t)
            elif worker not in self.alive:
                continue
            elif kind == "ask":
                self._ask(worker, t)
            elif kind == "done":
                assert job is not None
                self._done(worker, *job, t)
            elif kind == "die":
                self.alive.discard(worker)
                self.idle.discard(worker)
                self.outputs.pop(worker, None)
                self.queue.pop(worker, None)
                self.packetizer.worker_lost(worker, t)
                self._wake(t)
        if not self.packetizer.finished:
            raise RuntimeError(f"simulation stalled: {self.packetizer.statistics()}")

    def _grant(self, worker: str, t: float) -> list[Packet]:
        """One request: a packet, or a batch with `batches` (empty: nothing now)."""
        self.requests += 1
        start = time.process_time()
        many = getattr(self.packetizer, "next_packets", None) if self.s.batches else None
        if many is not None:
            packets = many(worker, t)
        else:
            packet = self.packetizer.next_packet(worker, t)
            packets = [] if packet is None else [packet]
        self.cpu.append(time.process_time() - start)
        return packets

    def _ask(self, worker: str, t: float) -> None:
        queue = self.queue.pop(worker, None) or self._grant(worker, t)
        if not queue:
            self._flush(worker, t)
            self.idle.add(worker)
            return
        packet = queue.pop(0)
        self.idle.discard(worker)
        host = self.file_host.get(packet.element)
        slowdown = self.s.remote_slowdown if host and host != self.worker_host[worker] else 1.0
        seconds = self.s.overhead + packet.entries * slowdown / self.speed[worker]
        self._push(t + seconds, "done", worker, (packet, seconds))
        if not queue and self.s.prefetch:  # it starts its last packet: it asks ahead
            queue = self._grant(worker, t)
        if queue:
            self.queue[worker] = queue

    def _done(self, worker: str, packet: Packet, seconds: float, t: float) -> None:
        self.packetizer.packet_processed(worker, packet.packet_id, t, seconds=seconds)
        self.outputs.setdefault(worker, []).append(packet.packet_id)
        self.last_done[worker] = t
        self.packets[worker] = self.packets.get(worker, 0) + 1
        if len(self.outputs[worker]) >= self.s.flush_every:
            self._flush(worker, t)
        self._ask(worker, t)
        if self.s.reader_cap is not None:
            self._wake(t)  # a reader slot was freed

    def _flush(self, worker: str, t: float) -> None:
        ids = self.outputs.pop(worker, None)
        if ids:
            assert self.packetizer.accept_output(worker, frozenset(ids))
            if self.packetizer.finished:
                self.makespan = t

    def _wake(self, t: float) -> None:
        """Idle workers ask again when work may have come back (a loss, a freed reader slot)."""
        if self.idle and self.packetizer.statistics().entries_queued:
            for worker in sorted(self.idle):
                self._push(t, "ask", worker)
            self.idle.clear()

    def report(self) -> dict[str, Any]:
        finishers = [self.last_done[w] for w in self.alive if w in self.last_done]
        cpu = sorted(self.cpu)
        counts = [self.packets.get(w, 0) for w in sorted(self.alive)]
        stats = self.packetizer.statistics()
        return {
            "scenario": asdict(self.s),
            "entries": self.total,
            "makespan": self.makespan,
            "ideal": self.ideal,
            "makespan_over_ideal": self.makespan / self.ideal if self.ideal else 1.0,
            "finish_spread": max(finishers) - min(finishers) if finishers else 0.0,
            "packets": stats.packets_assigned,
            "packets_per_worker": {
                "min": min(counts, default=0),
                "mean": sum(counts) / len(counts) if counts else 0.0,
                "max": max(counts, default=0),
            },
            "requeued_packets": stats.packets_requeued,
            "requests": self.requests,
            "packets_per_request": stats.packets_assigned / max(1, self.requests),
            "decision_cpu_us": {
                "mean": 1e6 * sum(cpu) / len(cpu) if cpu else 0.0,
                "p99": 1e6 * cpu[int(0.99 * (len(cpu) - 1))] if cpu else 0.0,
                "max": 1e6 * cpu[-1] if cpu else 0.0,
                "decisions": len(cpu),
                # the packetizer alone; bench.transport measures the whole query core
                "per_cpu_second": len(cpu) / sum(cpu) if sum(cpu) > 0 else 0.0,
            },
        }


def simulate(scenario: Scenario) -> dict[str, Any]:
    """Run `scenario` to the end; the report as a JSON-ready dict."""
    if scenario.packetizer not in PACKETIZERS:
        raise ValueError(
            f"unknown packetizer {scenario.packetizer!r}; valid: {', '.join(PACKETIZERS)}"
        )
    if scenario.parts < 1 or (scenario.parts > 1 and scenario.packetizer == "static"):
        raise ValueError(f"parts must be >= 1 (1 for static), got {scenario.parts}")
    cluster = _Cluster(scenario)
    gc.collect()
    gc.freeze()  # the set-up's objects need no scanning: decision times without their GC
    try:
        cluster.run()
    finally:
        gc.unfreeze()
    return cluster.report()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyproof.packetizer.simulate", description=__doc__.splitlines()[0]
    )
    d = Scenario()
    add = parser.add_argument
    add("--workers", type=int, default=d.workers, help="workers at the start")
    add("--files", type=int, default=d.files)
    add("--entries", type=int, default=d.entries, help="mean entries per file")
    add("--entries-spread", type=float, default=d.entries_spread, help="sizes mean*(1 +- X)")
    add("--speed", type=float, default=d.speed, help="entries/s of the slowest normal worker")
    add("--speed-spread", type=float, default=d.speed_spread, help="fastest / slowest")
    add("--stragglers", type=float, default=d.stragglers, help="fraction of workers")
    add("--straggler-slowdown", type=float, default=d.straggler_slowdown)
    add("--hosts", type=int, default=d.hosts, help="0: no locality")
    add("--remote-slowdown", type=float, default=d.remote_slowdown)
    add("--reader-cap", type=int, default=d.reader_cap, help="max readers per storage node")
    add("--deaths", type=int, default=d.deaths, help="workers that die mid-run")
    add("--joins", type=int, default=d.joins, help="workers that join mid-run")
    add("--overhead", type=float, default=d.overhead, help="seconds per packet")
    add("--flush-every", type=int, default=d.flush_every, help="packets per output")
    add("--prefetch", action="store_true", help="ask for the next packet when starting one")
    add("--batches", action="store_true", help="several short packets per request")
    add("--packet-entries", type=int, default=d.packet_entries, help="basic: packet size")
    add("--parts", type=int, default=d.parts, help="datasets in turn (multi packetizer)")
    add("--packetizer", choices=PACKETIZERS, default=d.packetizer)
    add("--seed", type=int, default=d.seed)
    add("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    as_json = args.pop("json")
    report = simulate(Scenario(**args))
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    cpu, per = report["decision_cpu_us"], report["packets_per_worker"]
    print(f"packetizer           {args['packetizer']}")
    print(
        f"makespan / ideal     {report['makespan']:.2f} s / {report['ideal']:.2f} s"
        f" = {report['makespan_over_ideal']:.3f}"
    )
    print(f"finish spread        {report['finish_spread']:.2f} s")
    print(
        f"packets              {report['packets']}"
        f" (per worker {per['min']}..{per['max']}, mean {per['mean']:.1f});"
        f" requeued {report['requeued_packets']}"
    )
    print(
        f"requests             {report['requests']}"
        f" ({report['packets_per_request']:.2f} packets per request)"
    )
    print(
        f"decision CPU         mean {cpu['mean']:.1f} us, p99 {cpu['p99']:.1f} us,"
        f" max {cpu['max']:.1f} us over {cpu['decisions']} decisions"
        f" ({cpu['per_cpu_second']:.0f} per CPU second)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
