"""Equal chunks dealt out in advance: the coffea/Dask-style baseline for the simulator.

Each file is cut into equal chunks of about `chunk_entries` (coffea's default
100,000) and the chunks are dealt round-robin to the planned workers before
anything runs, whatever their speed. A worker that runs out takes only work
nobody else owns: ranges of lost workers and chunks of workers that never
came. Not offered by make_packetizer: it exists to show what adapting buys.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence

from pyproof.packetizer.base import Packet, WorkRange
from pyproof.packetizer.common import LedgerPacketizer
from pyproof.packetizer.ledger import Ledger


def chunks(work: Sequence[WorkRange], chunk_entries: int) -> list[WorkRange]:
    """Each range cut into the fewest equal chunks of at most `chunk_entries` (as coffea)."""
    out = []
    for w in work:
        n = math.ceil(w.entries / chunk_entries)
        bounds = [w.entry_start + w.entries * i // n for i in range(n + 1)]
        out += [
            WorkRange(element=w.element, entry_start=a, entry_stop=b)
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]
    return out


class StaticPacketizer(LedgerPacketizer):
    """Chunks fixed per worker in advance; see the module docstring."""

    def __init__(
        self,
        work: Sequence[WorkRange],
        *,
        workers: int,
        chunk_entries: int = 100_000,
        max_strikes: int = 3,
    ) -> None:
        if chunk_entries < 1:
            raise ValueError(f"chunk_entries must be >= 1, got {chunk_entries}")
        planned = chunks(work, chunk_entries)
        super().__init__(Ledger(planned, max_strikes=max_strikes), workers=workers)
        self._plans: list[deque[WorkRange]] = [deque() for _ in range(workers)]
        for i, chunk in enumerate(planned):
            self._plans[i % workers].append(chunk)
        self._slots: dict[str, int] = {}
        self._free = deque(range(workers))
        self._orphans: deque[WorkRange] = deque()

    def _on_join(self, worker: str, now: float) -> None:
        if self._free:
            self._slots[worker] = self._free.popleft()

    def _next(self, worker: str, now: float) -> Packet | None:
        slot = self._slots.get(worker)
        sources = [self._plans[slot]] if slot is not None else []
        sources += [self._orphans, *(self._plans[s] for s in self._free)]
        for source in sources:
            if source:
                c = source.popleft()
                return self._ledger.cut(worker, c.element, c.entries, now, start=c.entry_start)
        return None

    def worker_lost(self, worker: str, now: float, *, reason: str = "",
                    running: Collection[int] | None = None) -> list[WorkRange]:
        requeued = super().worker_lost(worker, now, reason=reason, running=running)
        self._orphans.extend(requeued)
        slot = self._slots.pop(worker, None)
        if slot is not None:
            self._orphans.extend(self._plans[slot])
            self._plans[slot].clear()
        return requeued
