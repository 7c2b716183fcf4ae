"""TPacketizerMulti: several datasets processed one after the other in one query.

Each part (one dataset's work) gets its own packetizer, adaptive by default
or any data kind, with its own parameters; the multi packetizer serves the
parts in order, as PROOF does:

- A worker gets its packets from the lowest part that still has work to
  assign; it moves on to the next part only when that part has nothing left
  to assign to it.
- No packet of part k+1 is handed out while part k has queued entries. That
  is "all of part k assigned", not "processed": a worker that runs dry moves
  on at once while others finish part k's last packets, so the boundary
  costs no idle time. Only a reader cap (`max_readers_per_node`) can leave a
  worker waiting (None) while part k still has queued work; `overlap=True`
  lets such a worker take the next parts' work meanwhile, in order (parts
  are then processed side by side for a while, which PROOF never does).
- Ranges of an earlier part that come back (their worker was lost) are
  served before anything later: a worker in part 2 goes back to part 0.

Element indices are global across parts (an element belongs to one part),
so requeued, poisoned and skipped ranges need no translation. Packet ids are
global too (inner ids are renumbered), and each packet carries its `part`:
the master tells the selector the dataset changed. Exactly-once holds across
parts: an output covering packets of several parts is merged only if every
part accepts its share, and then all of them do.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from pyproof.packetizer.base import (
    Packet,
    PacketizerStatistics,
    PoisonedRange,
    SkippedRange,
    WorkRange,
)
from pyproof.packetizer.common import LedgerPacketizer

PART_KINDS = ("adaptive", "basic", "file")
"""Packetizer kinds a part may use (a part is data; cycles and nesting make no sense)."""


class MultiPacketizer:
    """Parts served one after the other (see the module docstring).

    `parts[k]` is part k's work; every part's packetizer is
    `make_packetizer(part_kind, parts[k], workers=workers, **params, **part_params[k])`
    (a part's own parameters override the shared ones; `element_hosts` may
    simply be shared, since elements are global). Raises ValueError for an
    element in two parts, a `part_kind` not in PART_KINDS, or `part_params` not one
    per part; the parts' packetizers raise for their own bad parameters.
    """

    def __init__(
        self,
        parts: Sequence[Sequence[WorkRange]],
        *,
        workers: int,
        part_kind: str = "adaptive",
        params: Mapping[str, Any] | None = None,
        part_params: Sequence[Mapping[str, Any]] | None = None,
        overlap: bool = False,
    ) -> None:
        from pyproof.packetizer import make_packetizer  # the registry lists this class

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if part_kind not in PART_KINDS:
            raise ValueError(
                f"a part's kind must be one of {', '.join(PART_KINDS)}, got {part_kind!r}"
            )
        if part_params is not None and len(part_params) != len(parts):
            raise ValueError(f"part_params has {len(part_params)} entries for {len(parts)} parts")
        owner: dict[int, int] = {}
        for k, work in enumerate(parts):
            for w in work:
                if owner.setdefault(w.element, k) != k:
                    raise ValueError(f"element {w.element} is in parts {owner[w.element]} and {k}")
        self._parts: list[LedgerPacketizer] = []
        for k, work in enumerate(parts):
            own = part_params[k] if part_params is not None else {}
            inner = make_packetizer(part_kind, work, workers=workers, **{**(params or {}), **own})
            assert isinstance(inner, LedgerPacketizer)
            self._parts.append(inner)
        self._takes_host = [
            "host" in inspect.signature(p.add_worker).parameters for p in self._parts
        ]
        self._overlap = overlap
        self._workers: dict[str, str | None] = {}
        self._lost: set[str] = set()
        self._joined: list[set[str]] = [set() for _ in parts]
        self._ids: dict[int, tuple[int, int]] = {}
        self._poisoned: list[PoisonedRange] = []
        self._skipped: list[SkippedRange] = []
        self._refused = 0

    @property
    def parts(self) -> int:
        return len(self._parts)

    def add_worker(self, worker: str, now: float, *, host: str | None = None) -> None:
        """`worker` joined, on `host` (passed on to parts whose kind knows hosts).

        A part hears of a worker when it first serves it, so a part's planned
        and measured workers are those actually working on it.
        """
        self._lost.discard(worker)
        self._workers[worker] = host if host is not None else self._workers.get(worker)

    def next_packet(self, worker: str, now: float) -> Packet | None:
        if worker in self._lost:
            return None
        if worker not in self._workers:
            self.add_worker(worker, now)
        for k, inner in enumerate(self._parts):
            if not inner.entries_queued:
                continue
            packet = self._serve(k, worker, now)
            if packet is not None or not self._overlap:
                return packet
        return None

    def packet_processed(self, worker: str, packet_id: int, now: float, *, seconds: float) -> None:
        where = self._ids.get(packet_id)
        if where is not None:
            k, inner_id = where
            self._parts[k].packet_processed(worker, inner_id, now, seconds=seconds)

    def accept_output(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """All of `packet_ids` delivered, whichever parts they belong to, or none."""
        shares: dict[int, set[int]] = {}
        for packet_id in packet_ids:
            where = self._ids.get(packet_id)
            if where is None:
                self._refused += 1
                return False
            shares.setdefault(where[0], set()).add(where[1])
        share = {k: frozenset(ids) for k, ids in shares.items()}
        if not share or not all(self._parts[k].would_accept(worker, i) for k, i in share.items()):
            self._refused += 1
            return False
        for k, ids in share.items():
            accepted = self._parts[k].accept_output(worker, ids)
            assert accepted, f"part {k} refused what it would accept"
        return True

    def worker_lost(self, worker: str, now: float, *, reason: str = "",
                    running: Collection[int] | None = None) -> list[WorkRange]:
        """Requeue what `worker` held undelivered in every part; see base.py."""
        self._workers.pop(worker, None)
        self._lost.add(worker)
        requeued: list[WorkRange] = []
        for k, inner in enumerate(self._parts):
            if worker in self._joined[k]:
                self._joined[k].discard(worker)
                before = len(inner.poisoned)
                mine = None if running is None else frozenset(
                    self._ids[i][1] for i in running if i in self._ids and self._ids[i][0] == k)
                requeued += inner.worker_lost(worker, now, reason=reason, running=mine)
                self._poisoned += inner.poisoned[before:]
        return requeued

    def packet_failed(
        self, worker: str, packet_id: int, now: float, *, reason: str, whole_element: bool = True
    ) -> list[SkippedRange]:
        """Skip a packet whose file failed (and the file's queued rest); see base.py."""
        where = self._ids.get(packet_id)
        if where is None:
            return []
        k, inner_id = where
        skipped = self._parts[k].packet_failed(
            worker, inner_id, now, reason=reason, whole_element=whole_element
        )
        self._skipped += skipped
        return skipped

    @property
    def finished(self) -> bool:
        return all(inner.finished for inner in self._parts)

    @property
    def poisoned(self) -> tuple[PoisonedRange, ...]:
        return tuple(self._poisoned)

    @property
    def skipped(self) -> tuple[SkippedRange, ...]:
        return tuple(self._skipped)

    def part_statistics(self) -> tuple[PacketizerStatistics, ...]:
        """Each part's own snapshot (its `workers`: those it has served and not lost)."""
        return tuple(inner.statistics() for inner in self._parts)

    @property
    def entries_queued(self) -> int:
        """Entries not handed out, in every part (read at every grant: no snapshot)."""
        return sum(inner.entries_queued for inner in self._parts)

    def statistics(self) -> PacketizerStatistics:
        """The parts' snapshots summed; `workers` counts the query's workers."""
        total = Counter[str]()
        for stats in self.part_statistics():
            total.update({f.name: getattr(stats, f.name) for f in fields(stats)})
        total["workers"] = len(self._workers)
        total["outputs_refused"] += self._refused
        return PacketizerStatistics(**{f.name: total[f.name] for f in fields(PacketizerStatistics)})

    def validate(self) -> None:
        for inner in self._parts:
            inner.validate()
        assert not self._lost & self._workers.keys(), "a worker is both active and lost"
        for k, joined in enumerate(self._joined):
            assert joined <= self._workers.keys(), f"part {k} serves unknown workers"
        assert len(set(self._ids.values())) == len(self._ids), "two ids for one packet"
        assigned = sum(s.packets_assigned for s in self.part_statistics())
        assert assigned == len(self._ids), "packet ids drifted"
        inner_poisoned = Counter(r for inner in self._parts for r in inner.poisoned)
        assert Counter(self._poisoned) == inner_poisoned, "poisoned list drifted"
        inner_skipped = Counter(r for inner in self._parts for r in inner.skipped)
        assert Counter(self._skipped) == inner_skipped, "skipped list drifted"

    def _serve(self, k: int, worker: str, now: float) -> Packet | None:
        inner = self._parts[k]
        if worker not in self._joined[k]:
            host = self._workers[worker]
            if host is not None and self._takes_host[k]:
                inner.add_worker(worker, now, host=host)  # type: ignore[call-arg]
            else:
                inner.add_worker(worker, now)
            self._joined[k].add(worker)
        packet = inner.next_packet(worker, now)
        if packet is None:
            return None
        packet_id = len(self._ids)
        self._ids[packet_id] = (k, packet.packet_id)
        return replace(packet, packet_id=packet_id, part=k)
