"""Exactly-once bookkeeping shared by every packetizer: where each range of the work is.

Every entry of the input is, at any moment, in exactly one place: queued (not
yet handed out), assigned to a worker, processed by it (output not yet
merged), delivered (merged), poisoned (given up after it killed workers
`max_strikes` times), or skipped (its file failed). Packetizers decide *what*
to hand out and how big; the ledger decides nothing, it only moves ranges
between those places and refuses any move that would count an entry twice.

It also keeps the indexes packetizers choose from cheaply (O(1) per decision,
for 100,000 files): per storage node, the elements with queued work in
service order, and the subset nobody is reading right now ("idle").
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.packetizer.base import (
    Packet,
    PacketizerStatistics,
    PoisonedRange,
    SkippedRange,
    WorkRange,
)

Node = str | None
"""A storage node (host, or host/disk) holding elements; None: no location, any worker reads it."""


class State(enum.Enum):
    ASSIGNED = "assigned"
    PROCESSED = "processed"
    DELIVERED = "delivered"
    REVOKED = "revoked"


_LIVE = (State.ASSIGNED, State.PROCESSED)
"""Held by a worker, not yet delivered: what an output may deliver and a loss requeues."""


@dataclass(slots=True)
class _Segment:
    """A queued range; `strikes`/`deaths` remember workers that died running it; `suspect`:
    a worker died holding it in flight (see `Ledger.lose`), its packets are `confirm`ed."""

    start: int
    stop: int
    strikes: int = 0
    deaths: tuple[tuple[str, str], ...] = ()
    suspect: bool = False


@dataclass(slots=True)
class Record:
    """One packet handed out, and where it is now."""

    packet: Packet
    worker: str
    state: State
    assigned_at: float
    strikes: int
    deaths: tuple[tuple[str, str], ...]
    reported: bool = False
    """packet_processed was seen (so a duplicated report is not measured twice)."""
    entries: int = 0
    """The packet's entries (kept here: `Packet.entries` is a property, on the hot path)."""
    suspect: bool = False
    """Cut from a suspect segment (the packet is `confirm`ed)."""


class Ledger:
    """The places of every range; see the module docstring.

    `nodes` maps an element to its storage node (missing: None). Raises
    ValueError for a negative or reversed range, or overlapping ranges of
    one element (an entry listed twice could never be counted once).
    """

    def __init__(
        self,
        work: Sequence[WorkRange],
        *,
        nodes: Mapping[int, str] | None = None,
        max_strikes: int = 3,
    ) -> None:
        if max_strikes < 1:
            raise ValueError(f"max_strikes must be >= 1, got {max_strikes}")
        self.max_strikes = max_strikes
        self._nodes: dict[int, Node] = dict(nodes or {})
        self._segments: dict[int, list[_Segment]] = {}
        self._boundaries: dict[int, tuple[int, ...]] = {}  # basket starts (WorkRange)
        self._pending: dict[Node, OrderedDict[int, None]] = {}
        self._idle: dict[Node, OrderedDict[int, None]] = {}
        self._node_queued: Counter[Node] = Counter()
        self._readers: dict[int, int] = {}  # a plain dict: Counter's Python methods are slow
        self._node_readers: Counter[Node] = Counter()
        self._records: dict[int, Record] = {}
        self._held: dict[str, dict[int, None]] = defaultdict(dict)
        self._poisoned: list[PoisonedRange] = []
        self._skipped: list[SkippedRange] = []
        self.skipped_entries = 0
        self._next_id = 0
        self.queued = self.assigned = self.processed = self.delivered = self.poisoned_entries = 0
        self.packets_delivered = self.packets_requeued = self.outputs_refused = 0
        self._work = self._load(work)
        self.total = self.queued

    def add(self, work: Sequence[WorkRange]) -> int:
        """Queue the ranges of elements that had none (looked up after the start); the
        entries added. ValueError for a bad range, or an element that already had work."""
        known = [w.element for w in work if w.element in self._work]
        if known:
            raise ValueError(f"element {known[0]} already has work: add an element once")
        before = self.queued
        self._work.update(self._load(work))
        added = self.queued - before
        self.total += added
        return added

    def _load(self, work: Sequence[WorkRange]) -> dict[int, list[tuple[int, int]]]:
        by_element: dict[int, list[tuple[int, int]]] = {}
        for w in work:
            if w.entry_start < 0 or w.entry_stop < w.entry_start:
                raise ValueError(f"bad range {w}: need 0 <= entry_start <= entry_stop")
            if w.entries:
                by_element.setdefault(w.element, []).append((w.entry_start, w.entry_stop))
                if w.boundaries:
                    self._boundaries[w.element] = w.boundaries
        for element, ranges in by_element.items():
            ranges.sort()
            for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
                if start < stop:
                    raise ValueError(f"element {element}: ranges overlap at entry {start}")
            for start, stop in ranges:
                self._queue(element, _Segment(start, stop), front=False)
        return by_element

    # -- queries -------------------------------------------------------------------------

    def node_of(self, element: int) -> Node:
        return self._nodes.get(element)

    def nodes_with_work(self) -> Iterable[Node]:
        """Storage nodes that still have queued work."""
        return self._pending.keys()

    def node_queued(self, node: Node) -> int:
        return self._node_queued[node]

    def node_readers(self, node: Node) -> int:
        """Packets of `node` in flight (assigned, not yet processed)."""
        return self._node_readers[node]

    def head_entries(self, element: int) -> int:
        """Entries in the first queued segment of `element` (a packet never spans two)."""
        seg = self._segments[element][0]
        return seg.stop - seg.start

    def head(self, element: int) -> tuple[int, int]:
        """`(start, stop)` of the first queued segment of `element`."""
        seg = self._segments[element][0]
        return seg.start, seg.stop

    def boundaries(self, element: int) -> tuple[int, ...]:
        """Entries of `element` where baskets begin, ascending (empty: unknown)."""
        return self._boundaries.get(element, ())

    def pick(self, node: Node, prefer: int | None = None) -> int | None:
        """An element of `node` to cut from: `prefer` if it has work there, else one nobody
        reads (spreading workers over files), else the first in service order."""
        if prefer is not None and prefer in self._segments and self.node_of(prefer) == node:
            return prefer
        for index in (self._idle, self._pending):
            elements = index.get(node)
            if elements:
                return next(iter(elements))
        return None

    @property
    def poisoned(self) -> tuple[PoisonedRange, ...]:
        return tuple(self._poisoned)

    @property
    def skipped(self) -> tuple[SkippedRange, ...]:
        return tuple(self._skipped)

    @property
    def finished(self) -> bool:
        return self.delivered + self.poisoned_entries + self.skipped_entries == self.total

    def statistics(self, workers: int) -> PacketizerStatistics:
        return PacketizerStatistics(
            entries_total=self.total,
            entries_queued=self.queued,
            entries_assigned=self.assigned,
            entries_processed=self.processed,
            entries_delivered=self.delivered,
            entries_poisoned=self.poisoned_entries,
            packets_assigned=self._next_id,
            packets_delivered=self.packets_delivered,
            packets_requeued=self.packets_requeued,
            outputs_refused=self.outputs_refused,
            workers=workers,
            entries_skipped=self.skipped_entries,
        )

    # -- moves ---------------------------------------------------------------------------

    def cut(
        self, worker: str, element: int, entries: int, now: float, *, start: int | None = None
    ) -> Packet:
        """Assign to `worker` the first `entries` (at least 1) of the queued segment of
        `element` beginning at `start` (default: its first segment)."""
        segments = self._segments[element]
        index = 0
        if start is not None:
            starts = [s.start for s in segments]
            if start not in starts:
                raise ValueError(f"element {element}: no queued segment starts at entry {start}")
            index = starts.index(start)
        seg = segments[index]
        first = seg.start
        stop = min(seg.stop, first + max(1, entries))
        packet_id = self._next_id
        packet = Packet(packet_id=packet_id, element=element, entry_start=first, entry_stop=stop,
                        confirm=seg.suspect)
        self._next_id = packet_id + 1
        self._records[packet_id] = Record(packet, worker, State.ASSIGNED, now, seg.strikes,
                                          seg.deaths, False, stop - first, seg.suspect)
        self._held[worker][packet_id] = None
        node = self._nodes.get(element)
        if stop == seg.stop:
            del segments[index]
        else:
            seg.start = stop
        if not segments:
            del self._segments[element]
            self._unindex(self._pending, node, element)
        size = stop - first
        self._node_queued[node] -= size
        self.queued -= size
        self.assigned += size
        readers = self._readers.get(element, 0)
        self._readers[element] = readers + 1
        self._node_readers[node] += 1
        if not readers:  # it had no reader: it was idle (if it has work left)
            self._unindex(self._idle, node, element)
        return packet

    def mark_processed(self, worker: str, packet_id: int) -> Record | None:
        """The first processed report of `worker`'s own, live packet: its record, else None."""
        rec = self._records.get(packet_id)
        if rec is None or rec.worker != worker or rec.reported or rec.state is State.REVOKED:
            return None
        rec.reported = True
        if rec.state is State.ASSIGNED:
            self._stop_reading(rec)
            rec.state = State.PROCESSED
            self.assigned -= rec.entries
            self.processed += rec.entries
        return rec

    def acceptable(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """Whether `accept` would deliver `packet_ids`: non-empty, all `worker`'s and live."""
        recs = [self._records.get(i) for i in packet_ids]
        return bool(recs) and all(
            r is not None and r.worker == worker and r.state in _LIVE for r in recs
        )

    def accept(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """Deliver all of `packet_ids` (outputs may overtake processed reports) or none."""
        if not self.acceptable(worker, packet_ids):
            self.outputs_refused += 1
            return False
        for rec in (self._records[i] for i in packet_ids):
            self._release(rec)
            rec.state = State.DELIVERED
            self.delivered += rec.entries
            self.packets_delivered += 1
            del self._held[worker][rec.packet.packet_id]
        return True

    def lose(
        self, worker: str, reason: str = "", running: Collection[int] | None = None
    ) -> list[WorkRange]:
        """Requeue every range `worker` held undelivered; return them (poisoned ones excepted).

        Only a range that was running when its worker died takes a strike (and
        the death goes into its report); at `max_strikes` it is poisoned.
        `running`: the ids of the packets that may have been running, as the
        master knows it (see `QueryCore._on_lost`); None: every packet in flight
        (not yet processed) may have been. A packet in flight but not running
        (granted ahead, not started) takes no strike: a worker killed by one
        packet must not poison the next one it held. Every range in flight
        becomes a suspect: its packets are cut `confirm`, so the master knows
        for sure when one starts, and a range that kills every worker it starts
        on takes a strike at each death after its first (poisoned within
        `max_strikes + 1` deaths, whatever the master missed the first time).
        A processed range did not kill anyone: its strikes reset.
        """
        requeued: list[WorkRange] = []
        for packet_id in self._held.pop(worker, {}):
            rec = self._records[packet_id]
            p = rec.packet
            if not self._release(rec):
                strikes, deaths, suspect = 0, (), False
            elif running is None or packet_id in running:
                strikes, deaths, suspect = rec.strikes + 1, (*rec.deaths, (worker, reason)), True
            else:
                strikes, deaths, suspect = rec.strikes, rec.deaths, True
            rec.state = State.REVOKED
            if strikes >= self.max_strikes:
                self._poisoned.append(
                    PoisonedRange(
                        element=p.element,
                        entry_start=p.entry_start,
                        entry_stop=p.entry_stop,
                        workers=tuple(w for w, _ in deaths),
                        reasons=tuple(r for _, r in deaths),
                    )
                )
                self.poisoned_entries += p.entries
                continue
            self._queue(p.element, _Segment(p.entry_start, p.entry_stop, strikes, deaths,
                                            suspect))
            self.packets_requeued += 1
            requeued.append(
                WorkRange(element=p.element, entry_start=p.entry_start, entry_stop=p.entry_stop)
            )
        return requeued

    def fail(
        self, worker: str, packet_id: int, reason: str, *, whole_element: bool = True
    ) -> list[SkippedRange]:
        """Skip `worker`'s live packet (and, with `whole_element`, its element's queue)."""
        rec = self._records.get(packet_id)
        if rec is None or rec.worker != worker or rec.state not in _LIVE:
            return []
        p = rec.packet
        self._release(rec)
        rec.state = State.REVOKED
        del self._held[worker][packet_id]
        spans = [(p.entry_start, p.entry_stop)]
        if whole_element and p.element in self._segments:
            node = self.node_of(p.element)
            for seg in self._segments.pop(p.element):
                spans.append((seg.start, seg.stop))
                self._node_queued[node] -= seg.stop - seg.start
                self.queued -= seg.stop - seg.start
            self._unindex(self._pending, node, p.element)
            self._unindex(self._idle, node, p.element)
        skipped = [
            SkippedRange(element=p.element, entry_start=a, entry_stop=b, reason=reason)
            for a, b in spans
        ]
        self._skipped += skipped
        self.skipped_entries += sum(r.entries for r in skipped)
        return skipped

    # -- internals -----------------------------------------------------------------------

    def _queue(self, element: int, seg: _Segment, *, front: bool = True) -> None:
        """Queue `seg`; requeued work goes to the front so a retry never waits for the end."""
        segments = self._segments.setdefault(element, [])
        segments.append(seg)
        segments.sort(key=lambda s: s.start)
        node = self.node_of(element)
        entries = seg.stop - seg.start
        self._node_queued[node] += entries
        self.queued += entries
        self._index(self._pending, node, element, front)
        if not self._readers.get(element):
            self._index(self._idle, node, element, front)

    def _release(self, rec: Record) -> bool:
        """Take a live record's entries out of `assigned` or `processed` (the caller sets
        its new state); True if it was still in flight (assigned)."""
        if rec.state is State.ASSIGNED:
            self._stop_reading(rec)
            self.assigned -= rec.entries
            return True
        self.processed -= rec.entries
        return False

    def _stop_reading(self, rec: Record) -> None:
        element = rec.packet.element
        node = self._nodes.get(element)
        readers = self._readers[element] - 1
        self._node_readers[node] -= 1
        if readers:
            self._readers[element] = readers
        else:
            del self._readers[element]
            if element in self._segments:
                self._index(self._idle, node, element, front=False)

    @staticmethod
    def _index(
        index: dict[Node, OrderedDict[int, None]], node: Node, element: int, front: bool
    ) -> None:
        elements = index.setdefault(node, OrderedDict())
        elements[element] = None
        if front:
            elements.move_to_end(element, last=False)

    @staticmethod
    def _unindex(index: dict[Node, OrderedDict[int, None]], node: Node, element: int) -> None:
        elements = index.get(node)
        if elements is not None and element in elements:
            del elements[element]
            if not elements:
                del index[node]

    # -- invariants ----------------------------------------------------------------------

    def validate(self) -> None:
        """Assert the places tile the input exactly and every index and counter agrees."""
        pieces: dict[int, list[tuple[int, int]]] = defaultdict(list)
        counts: Counter[State] = Counter()
        readers: Counter[int] = Counter()
        for element, segments in self._segments.items():
            assert segments, f"element {element}: empty segment list kept"
            for seg in segments:
                assert seg.start < seg.stop, f"element {element}: empty segment {seg}"
                pieces[element].append((seg.start, seg.stop))
        for packet_id, rec in self._records.items():
            p = rec.packet
            assert p.packet_id == packet_id and p.entries > 0 and rec.entries == p.entries
            assert p.confirm == rec.suspect, f"packet {packet_id}: confirm drifted"
            held = packet_id in self._held.get(rec.worker, ())
            live = rec.state in _LIVE
            assert held == live, f"packet {packet_id} ({rec.state.value}) held={held}"
            if rec.state is not State.REVOKED:
                pieces[p.element].append((p.entry_start, p.entry_stop))
                counts[rec.state] += p.entries
            if rec.state is State.ASSIGNED:
                readers[p.element] += 1
        for r in (*self._poisoned, *self._skipped):
            pieces[r.element].append((r.entry_start, r.entry_stop))
        tiles = {e: _coalesce(ps) for e, ps in pieces.items()}
        assert tiles == {e: _coalesce(rs) for e, rs in self._work.items()}, "ranges do not tile"
        assert counts[State.ASSIGNED] == self.assigned
        assert counts[State.PROCESSED] == self.processed
        assert counts[State.DELIVERED] == self.delivered
        assert sum(r.entries for r in self._poisoned) == self.poisoned_entries
        queued = sum(s.stop - s.start for segs in self._segments.values() for s in segs)
        assert queued == self.queued
        parts = self.queued + self.assigned + self.processed + self.delivered
        assert sum(r.entries for r in self._skipped) == self.skipped_entries
        assert parts + self.poisoned_entries + self.skipped_entries == self.total
        assert readers == self._readers, "reader counts drifted"
        node_readers = Counter[Node]()
        for e, n in readers.items():
            node_readers[self.node_of(e)] += n
        assert +node_readers == +self._node_readers, "per-node reader counts drifted"
        for node, elements in self._pending.items():
            assert elements and all(self.node_of(e) == node for e in elements)
        pending = {e for elements in self._pending.values() for e in elements}
        assert pending == set(self._segments), "pending index drifted"
        idle = {e for elements in self._idle.values() for e in elements}
        assert idle == {e for e in self._segments if not readers[e]}, "idle index drifted"
        node_queued = Counter[Node]()
        for e, segs in self._segments.items():
            node_queued[self.node_of(e)] += sum(s.stop - s.start for s in segs)
        assert +node_queued == +self._node_queued, "per-node queued entries drifted"


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching neighbours joined; asserts no two overlap."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            assert start == out[-1][1], f"ranges overlap at entry {start}"
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out
