"""TPacketizerUnit: cycles of a pure CPU task, shared in proportion to measured speed.

There are no files, so no locality; what matters is that a fast worker is
not left idle while a slow one grinds through an equal share. Each worker
first gets a small calibration packet; afterwards a packet takes a fraction
(`packet_time_fraction`, 4) of the time the cluster needs for what is queued
(`queued / sum(rates)`), at the worker's own rate, clamped between
`min_packet_time` (0.05 s: a request is a round trip on a socket) and
`max_packet_time` (3 s): big packets while much is left, smaller and smaller
ones near the end, so the workers finish within about one `min_packet_time`
of each other. (It used to be the worker's whole share of what is left, at
least 1 s: a query under 1 s per worker went to the first worker that asked,
and the end was balanced only as well as the calibration packet measured the
rates; under load one worker idled up to a second at the end.)
"""

from __future__ import annotations

from pyproof.packetizer.base import CYCLES, Packet, WorkRange
from pyproof.packetizer.common import LedgerPacketizer
from pyproof.packetizer.ledger import Ledger, Record
from pyproof.packetizer.rates import RateTable


class UnitPacketizer(LedgerPacketizer):
    """Packets of cycle numbers `[start, stop)` with `element == CYCLES`.

    `fixed=True` gives every worker `cycles // workers` per packet regardless of
    speed (PROOF_PacketizerFixedNum). Rates come from `packet_processed`
    seconds over each worker's last `window` packets.
    """

    def __init__(
        self,
        cycles: int,
        *,
        workers: int,
        min_packet_time: float = 0.05,
        max_packet_time: float = 3.0,
        packet_time_fraction: float = 4.0,
        calibration_fraction: float = 0.01,
        fixed: bool = False,
        window: int = 5,
        max_strikes: int = 3,
    ) -> None:
        if cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {cycles}")
        if not 0 < min_packet_time <= max_packet_time:
            raise ValueError(
                f"need 0 < min_packet_time <= max_packet_time, "
                f"got {min_packet_time} and {max_packet_time}"
            )
        if packet_time_fraction < 1:
            raise ValueError(f"packet_time_fraction must be >= 1, got {packet_time_fraction}")
        if not 0 < calibration_fraction <= 1:
            raise ValueError(f"calibration_fraction must be in (0, 1], got {calibration_fraction}")
        work = [WorkRange(element=CYCLES, entry_start=0, entry_stop=cycles)]
        super().__init__(Ledger(work, max_strikes=max_strikes), workers=workers)
        self._cycles = cycles
        self._min_time = min_packet_time
        self._max_time = max_packet_time
        self._fraction = packet_time_fraction
        self._calibration = calibration_fraction
        self._fixed = fixed
        self._rates = RateTable(window)

    def _next(self, worker: str, now: float) -> Packet | None:
        queued = self._ledger.queued
        share = self._cycles / self.worker_count
        rate = self._rates.rate(worker)
        if self._fixed:
            size = share
        elif rate is None:
            size = self._calibration * share
        else:
            left = queued / self._rates.cluster(self.worker_count)  # the cluster's seconds
            size = rate * min(max(left / self._fraction, self._min_time), self._max_time)
        size = max(1, min(int(size), queued))
        return self._ledger.cut(worker, CYCLES, size, now)

    def _on_processed(self, worker: str, record: Record, now: float, seconds: float) -> None:
        self._rates.record(worker, record.packet.entries, seconds)

    def _on_lost(self, worker: str, now: float) -> None:
        self._rates.forget(worker)
