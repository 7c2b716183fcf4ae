"""TPacketizerFile: whole files as packets, for per-file tasks.

File generation, dataset verification, cache release: the unit of work is a
file, not entries, so a packet is an element's whole queued range (the
caller gives each file the entries it wants counted, PROOF uses 1). A worker
takes files of its own host first, then files with no host, then (unlike
PROOF, which would wait forever for a host without workers) the node with
the most queued work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyproof.packetizer.base import Packet, WorkRange
from pyproof.packetizer.common import LedgerPacketizer
from pyproof.packetizer.ledger import Ledger


class FilePacketizer(LedgerPacketizer):
    """One packet per file (per queued range of it); see the module docstring."""

    def __init__(
        self,
        work: Sequence[WorkRange],
        *,
        workers: int,
        element_hosts: Mapping[int, str] | None = None,
        worker_hosts: Mapping[str, str] | None = None,
        max_strikes: int = 3,
    ) -> None:
        ledger = Ledger(work, nodes=element_hosts, max_strikes=max_strikes)
        super().__init__(ledger, workers=workers)
        self._worker_hosts = dict(worker_hosts or {})

    def add_worker(self, worker: str, now: float, *, host: str | None = None) -> None:
        """`worker` joined, on `host` (default: `worker_hosts[worker]`, else no host)."""
        if host is not None:
            self._worker_hosts[worker] = host
        super().add_worker(worker, now)

    def _next(self, worker: str, now: float) -> Packet | None:
        ledger = self._ledger
        host = self._worker_hosts.get(worker)
        element = ledger.pick(host) if host is not None else None
        if element is None:
            element = ledger.pick(None)
        if element is None:
            busiest = max(ledger.nodes_with_work(), key=ledger.node_queued)
            element = ledger.pick(busiest)
        assert element is not None
        return ledger.cut(worker, element, ledger.head_entries(element), now)
