"""PROOF's classic TPacketizer, without hosts: fixed-size packets, shrinking at the end.

The baseline the adaptive packetizer is measured against, and the choice when
rates cannot be measured. Each worker keeps reading its own file while it
lasts and a newcomer opens a file nobody reads, so files are spread over
workers as TPacketizer spreads them over nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyproof.packetizer.base import Packet, WorkRange
from pyproof.packetizer.common import LedgerPacketizer, with_rest
from pyproof.packetizer.ledger import Ledger

PACKET_AS_A_FRACTION = 20
"""PROOF_PacketAsAFraction of TPacketizer: about 20 packets per worker."""


class BasicPacketizer(LedgerPacketizer):
    """Packets of `packet_entries` (default: total / (20 * workers)), never across files.

    Near the end (fewer than workers * size entries queued) packets shrink to
    queued / (2 * workers), at least 1, so the last ones are spread over every
    worker; the rest of a file goes in one packet when it is under 1.5 sizes.
    """

    def __init__(
        self,
        work: Sequence[WorkRange],
        *,
        workers: int,
        packet_entries: int | None = None,
        max_strikes: int = 3,
    ) -> None:
        if packet_entries is not None and packet_entries < 1:
            raise ValueError(f"packet_entries must be >= 1, got {packet_entries}")
        super().__init__(Ledger(work, max_strikes=max_strikes), workers=workers)
        self._packet_entries = packet_entries
        self._current: dict[str, int] = {}

    @property
    def packet_entries(self) -> int:
        """The base packet size; recomputed when more workers join than planned (as PROOF)."""
        if self._packet_entries is not None:
            return self._packet_entries
        total = self._ledger.total + int(self._expected or 0)  # what is still looked up too
        return max(1, total // (PACKET_AS_A_FRACTION * self.worker_count))

    def _next(self, worker: str, now: float) -> Packet | None:
        element = self._ledger.pick(None, self._current.get(worker))
        if element is None:
            return None
        size, workers, queued = self.packet_entries, self.worker_count, self._ledger.queued
        if queued < workers * size:
            size = max(1, min(size, queued // (2 * workers)))
        size = with_rest(self._ledger.head_entries(element), size)
        self._current[worker] = element
        return self._ledger.cut(worker, element, size, now)

    def _on_lost(self, worker: str, now: float) -> None:
        self._current.pop(worker, None)
