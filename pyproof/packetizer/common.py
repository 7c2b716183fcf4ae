"""The Packetizer protocol methods every packetizer shares, over one Ledger.

A subclass says only how to choose and size the next packet (`_next`) and
what to learn from events (the `_on_*` hooks); worker membership and the
exactly-once moves are the same everywhere and live here once, as does
`with_rest`, the end-of-file rule the data packetizers share.

Batches (`next_packets`): one request per packet costs the master about
100-150 us of CPU (nng's threads, the codec, the core), so a master answering
one packet per request tops out near 5,000 packets/s. When packets are short
(a fast worker, small fixed packets: under half of `batch_seconds` by the
worker's measured speed) a request is answered with several, up to
`batch_seconds` of work and `max_batch` packets, which the worker keeps in a
small local queue. A packet is cut only while the batch is under the budget
(by the size of the one before it), so the last one cut may end past it: a
file's short tail followed by the next file's first, ordinary packet; that
packet is the one the worker's next request would get. Never for a worker not
measured yet (its first packet learns its speed), nor in the end-game (less
than `endgame_seconds` of queued work per worker by the cluster's speed),
where packets must shrink and be spread so that every worker finishes within
~50 ms of the others. Batched packets are ordinary ledger packets: a loss
requeues each exactly once, an output must name each.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence

from pyproof.packetizer.base import (
    Packet,
    PacketizerStatistics,
    PoisonedRange,
    SkippedRange,
    WorkRange,
)
from pyproof.packetizer.ledger import Ledger, Record

BATCH_SECONDS = 0.03
"""At most this much work (by the worker's speed) in one answer of several packets."""
MAX_BATCH = 32
"""At most this many packets in one answer."""
ENDGAME_SECONDS = 0.25
"""Below this much queued work (per worker, at the cluster's speed): one packet per answer."""
_SPEED_WEIGHT = 0.3  # weight of the newest report in a worker's speed (a moving average)


def with_rest(head: int, entries: int, factor: float = 1.5) -> int:
    """`entries`, or all of `head` when what would be left is too small to be worth a packet."""
    return head if head < factor * entries else entries


def on_boundary(boundaries: Sequence[int], start: int, stop: int, size: int,
                slack: float = 0.5) -> int:
    """`size`, changed so that a packet `[start, start + size)` of a segment
    `[start, stop)` ends where a basket begins (or at `stop`), if one is within
    `slack * size` entries of its end; else `size` unchanged.

    Why: uproot reads and decompresses whole baskets, so an edge inside a basket
    makes the two packets on either side of it both pay for it (10k-entry
    baskets and 20 packets: 10% more decompression than aligned chunks). The
    slack keeps the packetizer's sizing (learning packets, the end-game) within
    a factor 1.5 of what it asked; a packet smaller than half a basket stays a
    cut inside it.
    """
    end = start + size
    if not boundaries or end >= stop:
        return size
    best, distance = stop, stop - end
    i = bisect_left(boundaries, end)
    for b in boundaries[max(0, i - 1):i + 1]:
        if start < b < stop and abs(b - end) < distance:
            best, distance = b, abs(b - end)
    return best - start if distance <= slack * size else size


class LedgerPacketizer:
    """Base of the concrete packetizers (see the module docstring).

    Workers that `next_packet` has not heard of are added on the spot; a lost
    worker gets None until it is added again (a late request from a dead
    worker must not take work nobody will process).
    """

    def __init__(self, ledger: Ledger, *, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ledger = ledger
        self._planned = workers
        self._workers: dict[str, None] = {}
        self._lost: set[str] = set()
        self._expected: float | None = None  # entries still being looked up (estimate)
        # the batch policy (see the module docstring): attributes, so that tests and the
        # simulator may change them on one packetizer
        self.batch_seconds = BATCH_SECONDS
        self.max_batch = MAX_BATCH
        self.endgame_seconds = ENDGAME_SECONDS
        self._speed: dict[str, float] = {}  # worker -> entries/s (moving average of reports)
        self._speed_sum = 0.0

    @property
    def worker_count(self) -> int:
        """Workers to share the work among: the planned number, or more if more joined."""
        return max(self._planned, len(self._workers))

    def add_worker(self, worker: str, now: float) -> None:
        self._lost.discard(worker)
        if worker not in self._workers:
            self._workers[worker] = None
            self._on_join(worker, now)

    def next_packet(self, worker: str, now: float) -> Packet | None:
        if worker in self._lost:
            return None
        if worker not in self._workers:
            self.add_worker(worker, now)
        if not self._ledger.queued:
            return None
        return self._next(worker, now)

    def next_packets(self, worker: str, now: float) -> list[Packet]:
        """The next packets for `worker`: one, or several short ones (a batch; see the
        module docstring); [] when nothing is left to assign now (as `next_packet`'s None).

        The batch is cut packet by packet with `next_packet`, so each is sized as the
        packetizer would size it knowing the worker holds the ones before it."""
        first = self.next_packet(worker, now)
        if first is None:
            return []
        batch = [first]
        speed = self._speed.get(worker)
        if speed is None or self.max_batch <= 1 or first.confirm:
            return batch
        seconds = (first.entry_stop - first.entry_start) / speed
        budget = self.batch_seconds
        if 2 * seconds > budget:
            return batch  # long packets: the request's cost does not matter
        cluster = self._speed_sum + (self.worker_count - len(self._speed)) * (
            self._speed_sum / len(self._speed))
        left = (self._ledger.queued + (self._expected or 0.0)) / cluster
        if left < self.endgame_seconds:
            return batch  # the end-game: packets are spread, not queued at one worker
        last = seconds
        budget *= 1 + 1e-9  # three 10 ms packets fill 30 ms, whatever the rounding
        while len(batch) < self.max_batch and seconds + last <= budget:
            packet = self.next_packet(worker, now)
            if packet is None:
                break
            last = (packet.entry_stop - packet.entry_start) / speed
            seconds += last
            batch.append(packet)
            if packet.confirm:
                break  # the worker confirms it as it starts it: nothing may follow it
        return batch

    def packet_processed(self, worker: str, packet_id: int, now: float, *, seconds: float) -> None:
        record = self._ledger.mark_processed(worker, packet_id)
        if record is not None and worker in self._workers:
            speed = record.entries / max(seconds, 1e-6)
            old = self._speed.get(worker)
            if old is not None:
                speed = old + _SPEED_WEIGHT * (speed - old)
            self._speed[worker] = speed
            self._speed_sum += speed - (old or 0.0)
            self._on_processed(worker, record, now, seconds)

    def accept_output(self, worker: str, packet_ids: frozenset[int]) -> bool:
        return self._ledger.accept(worker, frozenset(packet_ids))

    def would_accept(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """What `accept_output` would answer, changing nothing (a multi-part output is
        checked in every part before any part delivers)."""
        return self._ledger.acceptable(worker, frozenset(packet_ids))

    @property
    def entries_queued(self) -> int:
        """Entries not handed out (cheaper than `statistics()` on a hot path)."""
        return self._ledger.queued

    def worker_lost(self, worker: str, now: float, *, reason: str = "",
                    running: Collection[int] | None = None) -> list[WorkRange]:
        """Requeue what `worker` held undelivered; `reason` goes into poisoned reports; only
        `running` packets (None: all in flight) take a strike (`Ledger.lose`)."""
        if worker in self._workers:
            del self._workers[worker]
            self._on_lost(worker, now)
        speed = self._speed.pop(worker, None)
        if speed is not None:
            self._speed_sum = self._speed_sum - speed if self._speed else 0.0
        self._lost.add(worker)
        return self._ledger.lose(worker, reason, running)

    def packet_failed(
        self, worker: str, packet_id: int, now: float, *, reason: str, whole_element: bool = True
    ) -> list[SkippedRange]:
        """Skip a packet whose file failed (and the file's queued rest); see base.py."""
        skipped = self._ledger.fail(worker, packet_id, reason, whole_element=whole_element)
        if skipped and worker in self._workers:
            self._on_failed(worker, packet_id, now)
        return skipped

    def add_work(self, work: Sequence[WorkRange], now: float) -> None:
        """Ranges of elements not known so far (their look-up ended after the start).

        Work may be handed out while the rest of the input is still being looked
        up; `expect` says how much more is coming. ValueError as `Ledger.add`.
        """
        self._ledger.add(work)

    def expect(self, entries: float | None) -> None:
        """Entries still being looked up (an estimate, for planning), or None: the input
        is complete. The packetizer is not `finished` until told None."""
        self._expected = entries

    @property
    def expected(self) -> float:
        """Entries still being looked up (0 when the input is complete)."""
        return self._expected or 0.0

    @property
    def finished(self) -> bool:
        """Every entry delivered exactly once, or poisoned or skipped and reported,
        and no more input coming."""
        return self._expected is None and self._ledger.finished

    @property
    def skipped(self) -> tuple[SkippedRange, ...]:
        return self._ledger.skipped

    @property
    def poisoned(self) -> tuple[PoisonedRange, ...]:
        return self._ledger.poisoned

    def statistics(self) -> PacketizerStatistics:
        return self._ledger.statistics(len(self._workers))

    def validate(self) -> None:
        self._ledger.validate()
        assert not self._lost & self._workers.keys(), "a worker is both active and lost"
        assert self._speed.keys() <= self._workers.keys(), "a lost worker's speed is counted"
        assert abs(self._speed_sum - sum(self._speed.values())) <= 1e-6 * (1 + self._speed_sum)

    # -- hooks for subclasses ------------------------------------------------------------

    def _next(self, worker: str, now: float) -> Packet | None:
        raise NotImplementedError

    def _on_join(self, worker: str, now: float) -> None:
        """`worker` joined."""

    def _on_processed(self, worker: str, record: Record, now: float, seconds: float) -> None:
        """`worker` processed `record` (first report only) in `seconds`."""

    def _on_failed(self, worker: str, packet_id: int, now: float) -> None:
        """`worker`'s packet `packet_id` failed and was skipped."""

    def _on_lost(self, worker: str, now: float) -> None:
        """`worker` was lost (called before its ranges are requeued)."""
