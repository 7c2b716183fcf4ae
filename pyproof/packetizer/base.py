"""The packetizer contract: what every packetizer takes and hands out.

A packetizer is a pure state machine (no sockets, no clock, no randomness of
its own): the master feeds it events (a worker asks for work, a worker
reports a packet processed, a worker's outputs arrived, a worker was lost)
with the current time passed in, and it answers with packets.

Exactly-once bookkeeping lives here too, because only the packetizer knows
which ranges are where. A packet moves through

    queued -> assigned(worker) -> processed(worker) -> delivered
                  \\________________________/
                   worker lost: the range goes back to the queue as a new
                   packet; the old id is revoked and outputs covering it
                   are refused (they would count the range twice).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import field
from typing import Protocol

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

CYCLES = -1
"""The `element` of a packet of cycle numbers (pure CPU work, no file)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkRange:
    """A half-open entry range of one element (or of cycles) to be processed.

    `boundaries`: entries of the element where a basket (cluster) of every
    branch begins, ascending, when the look-up knows them (else empty). A
    packet edge inside a basket makes both packets read and decompress the
    whole basket, so packetizers that size packets freely (adaptive) put edges
    on them. Not part of a range's identity (equality, repr).
    """

    element: int
    entry_start: int
    entry_stop: int
    boundaries: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def entries(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """A unit of work handed to one worker: `[entry_start, entry_stop)` of `element`.

    Entry numbers are local to the element (the file's tree), as uproot's
    `entry_start`/`entry_stop`; for cycles they are cycle numbers. `part` is
    the index of the dataset the element belongs to when one query processes
    several in turn (`MultiPacketizer`), 0 otherwise: the master tells the
    selector the dataset changed (`ctx.dataset`) when it differs from the
    worker's previous packet.

    `confirm`: a worker died holding this range in flight before (it may have
    been what killed it). The worker tells the master it starts the packet and
    waits for the answer before it starts it, so that a death while it runs is
    known to be this packet's (`Ledger.lose`). It is always the last packet of
    a grant that is not the query's last (`Grant.last`).
    """

    packet_id: int
    element: int
    entry_start: int
    entry_stop: int
    part: int = 0
    confirm: bool = False

    @property
    def entries(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True, slots=True, kw_only=True)
class PoisonedRange:
    """A range given up on: `max_strikes` workers died while running it.

    `workers` and `reasons` are parallel: who died running it, and why (as the
    master told `worker_lost`); a worker that died holding it granted ahead,
    not started, is not named. The range is neither requeued nor delivered;
    the result reports it instead of retrying it forever.
    """

    element: int
    entry_start: int
    entry_stop: int
    workers: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def entries(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedRange:
    """A range not processed because its file failed (unreadable, corrupt): `result.missing`."""

    element: int
    entry_start: int
    entry_stop: int
    reason: str

    @property
    def entries(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketizerStatistics:
    """A snapshot of where the entries are (what `proofctl status` and the lineage show).

    `entries_queued + entries_assigned + entries_processed + entries_delivered
    + entries_poisoned + entries_skipped == entries_total` at every moment.
    """

    entries_total: int
    entries_queued: int
    entries_assigned: int
    entries_processed: int
    entries_delivered: int
    entries_poisoned: int
    packets_assigned: int
    packets_delivered: int
    packets_requeued: int
    outputs_refused: int
    workers: int
    entries_skipped: int = 0


class Packetizer(Protocol):
    """What the master calls. Every method is synchronous and pure."""

    def add_worker(self, worker: str, now: float) -> None:
        """A worker joined (at query start or later); it may ask for work at once."""

    def next_packet(self, worker: str, now: float) -> Packet | None:
        """The next packet for `worker`, or None when nothing is left to assign now.

        None does not mean finished: a lost worker's packets may come back.
        """

    def packet_processed(self, worker: str, packet_id: int, now: float, *, seconds: float) -> None:
        """`worker` finished processing `packet_id` in `seconds` (rate measurement)."""

    def accept_output(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """Outputs of `worker` covering `packet_ids` arrived: True if they are to be merged.

        False (and nothing changes) when any id is unknown, revoked, not this
        worker's, or already delivered: merging them would count twice.
        """

    def worker_lost(self, worker: str, now: float, *, reason: str = "",
                    running: Collection[int] | None = None) -> list[WorkRange]:
        """`worker` is gone: every range it held but had not delivered is queued again.

        `reason` (why it was lost) goes into the reports of ranges it poisons.
        Only packets in `running` (None: every packet not processed) take a
        strike; see `Ledger.lose`.
        """

    @property
    def finished(self) -> bool:
        """True when every range has been delivered exactly once."""

    def validate(self) -> None:
        """Raise AssertionError if the internal state is inconsistent (tests call this)."""

    # Additions (the original contract above is unchanged).

    def statistics(self) -> PacketizerStatistics:
        """A frozen snapshot of the bookkeeping counters."""

    @property
    def entries_queued(self) -> int:
        """`statistics().entries_queued`, without the snapshot (read at every grant)."""

    @property
    def poisoned(self) -> tuple[PoisonedRange, ...]:
        """Ranges declared poisoned (they killed `max_strikes` workers), oldest first."""

    @property
    def skipped(self) -> tuple[SkippedRange, ...]:
        """Ranges given up because their file failed (see `packet_failed`), oldest first."""

    def packet_failed(
        self, worker: str, packet_id: int, now: float, *, reason: str, whole_element: bool = True
    ) -> list[SkippedRange]:
        """`worker` could not process `packet_id` (file unreadable or corrupt): skip it.

        With `whole_element`, the element's queued ranges are skipped too (the
        file will not get better). Ranges other workers hold stay theirs. An
        unknown, revoked, delivered or foreign id changes nothing (returns []).
        """
