"""In-flight work: until when each worker is busy, and how much the cluster has left in hand.

The end-game (see `adaptive`) sizes a packet by the time a worker has left
before the projected common finish. Two things feed it: when the worker will
start the packet (it asks for its next packet while it processes the
current one, so it is busy until its in-flight packets are done), and how
many entries the whole cluster still has in hand (handed out, not yet
processed). Both are estimates from each worker's in-flight entries and rate;
the cluster's sum is kept incrementally (a heap of finish times, stale items
skipped) so a decision costs O(log workers), not O(workers).
"""

from __future__ import annotations

import heapq


class Backlog:
    """Per-worker busy-until estimates and the cluster's in-flight entries left at `now`."""

    def __init__(self) -> None:
        self._packets: dict[int, tuple[str, int]] = {}  # in flight: packet -> (worker, entries)
        self._held: dict[str, int] = {}  # in-flight entries per worker
        self._ends: dict[str, tuple[float, float, int]] = {}  # counted: (busy, rate, version)
        self._heap: list[tuple[float, int, str]] = []
        self._version = 0
        self._sum_rb = 0.0  # sum of rate * busy over counted workers
        self._sum_r = 0.0

    def busy(self, worker: str) -> float:
        """When `worker` should be done with what it holds (-inf: nothing counted)."""
        end = self._ends.get(worker)
        return -float("inf") if end is None else end[0]

    def held(self, worker: str) -> int:
        """Entries handed to `worker` and not yet reported processed (or delivered)."""
        return self._held.get(worker, 0)

    def assign(self, worker: str, packet_id: int, entries: int, rate: float, now: float) -> None:
        """`worker` got `packet_id`; it starts it when done with what it already holds."""
        self._packets[packet_id] = (worker, entries)
        self._held[worker] = self._held.get(worker, 0) + entries
        self._set(worker, max(now, self.busy(worker)) + entries / rate, rate)

    def finish(self, packet_id: int, rate: float, now: float | None) -> None:
        """`packet_id` is out of flight (processed, failed or delivered). With `now` (a
        report), the worker's busy-until is re-estimated from there at `rate`; without
        (an output overtook the report), the packet's time is taken off."""
        entry = self._packets.pop(packet_id, None)
        if entry is None:
            return
        worker, entries = entry
        held = self._held[worker] - entries
        if held:
            self._held[worker] = held
        else:
            del self._held[worker]
        if now is not None:
            self._set(worker, now + held / rate, rate)
        elif worker in self._ends:
            self._set(worker, self._ends[worker][0] - entries / rate, rate)

    def forget(self, worker: str) -> None:
        """`worker` is lost: nothing it held is in flight any more."""
        for packet_id in [i for i, (w, _) in self._packets.items() if w == worker]:
            del self._packets[packet_id]
        self._held.pop(worker, None)
        self._uncount(worker)

    def entries(self, now: float) -> float:
        """In-flight entries the cluster has not processed yet at `now` (an estimate)."""
        heap, ends = self._heap, self._ends
        while heap and heap[0][0] <= now:
            busy, version, worker = heapq.heappop(heap)
            end = ends.get(worker)
            if end is not None and end[2] == version:
                self._uncount(worker)
        return max(0.0, self._sum_rb - now * self._sum_r)

    def _set(self, worker: str, busy: float, rate: float) -> None:
        ends = self._ends
        end = ends.pop(worker, None)  # `_uncount`, inlined: twice per grant
        if end is not None:
            if ends:
                self._sum_rb -= end[1] * end[0]
                self._sum_r -= end[1]
            else:
                self._sum_rb = self._sum_r = 0.0
        self._version += 1
        self._ends[worker] = (busy, rate, self._version)
        self._sum_rb += rate * busy
        self._sum_r += rate
        heapq.heappush(self._heap, (busy, self._version, worker))
        if len(self._heap) > 4 * len(self._ends) + 64:  # drop stale items now and then
            self._heap = [(b, v, w) for w, (b, _, v) in self._ends.items()]
            heapq.heapify(self._heap)

    def _uncount(self, worker: str) -> None:
        end = self._ends.pop(worker, None)
        if end is not None:
            self._sum_rb -= end[1] * end[0]
            self._sum_r -= end[1]
        if not self._ends:
            self._sum_rb = self._sum_r = 0.0  # no float drift survives an empty table

    def validate(self) -> None:
        held: dict[str, int] = {}
        for worker, entries in self._packets.values():
            held[worker] = held.get(worker, 0) + entries
        assert held == self._held, "in-flight entries per worker drifted"
        assert all(entries > 0 for entries in held.values())
