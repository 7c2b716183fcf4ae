"""`QueryCore`: one query on the master as a pure state machine (events in, instructions out).

The master's data plane (a thin shell, `actors/master_query.py`) decodes what
workers and the actor thread say, feeds it here as events, and carries out the
instructions returned, in order. The core never reads a clock (every event
that needs the time carries `now`), never touches a socket, a thread or a
file: it decides, the shell does.

What it decides:

* the packets (it owns the packetizer, and through it the exactly-once ledger
  of `packetizer/ledger.py`): who gets which range, which outputs are merged
  (`Merge`, carried out by the shell off the socket thread and confirmed with
  `Merged`) and which are refused (a duplicate, a revoked packet);
* when the query ends: `Finish` once every range is delivered and every merge
  done (or, after `StopRequested`, once no packet is in flight: PROOF's
  StopProcess(abort=false), a partial result covering exactly the merged
  ranges), `Fail` on an error or `AbortRequested` (StopProcess(abort=true));
* what the client hears meanwhile: `SendProgress` every `PROGRESS_PERIOD`,
  `SendFeedback` every `spec.feedback_interval` when something new was merged.

States (`QueryState`) move only forward:

    PREPARING -> RUNNING -> STOPPING -> FINISHING -> FINISHED | STOPPED
         \\__________\\__________\\___________\\______> FAILED | ABORTED

`validate()` checks the bookkeeping (tests call it after every event), and a
bounded event log answers `story(worker)` when debugging.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import field
from enum import StrEnum
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.packetizer import make_packetizer
from pyproof.packetizer.base import CYCLES, Packet, Packetizer, WorkRange
from pyproof.query.spec import QuerySpec
from pyproof.transport.codec import RemoteError

PROGRESS_PERIOD = 0.25
STORY_LENGTH = 2000

__all__ = [
    "QueryCore", "QueryState", "Report",
    # events
    "LookupDone", "LookupBegun", "ElementFound", "ElementMissing", "LookupFailed",
    "WorkerJoined", "WorkerLost", "PacketRequested",
    "OutputArrived", "WorkerFailed", "Merged", "Finished", "StopRequested", "AbortRequested",
    "Tick",
    # instructions
    "Grant", "Wait", "Done", "Refuse", "Ack", "Merge", "SendProgress", "SendFeedback",
    "Finish", "Fail",
]


class QueryState(StrEnum):
    PREPARING = "preparing"
    """Looking up the input (files, catalog) off the data thread; workers are told to wait."""
    RUNNING = "running"
    STOPPING = "stopping"
    """Stop asked: no new packets; the ones in flight are finished and merged."""
    FINISHING = "finishing"
    """`Finish` issued: the shell keeps output files, sends the result, says `Finished`."""
    FINISHED = "finished"
    STOPPED = "stopped"
    """Finished after a stop: the result is partial (its lineage lists the covered ranges)."""
    FAILED = "failed"
    ABORTED = "aborted"


ACTIVE = (QueryState.PREPARING, QueryState.RUNNING, QueryState.STOPPING, QueryState.FINISHING)
ENDED = (QueryState.FINISHED, QueryState.STOPPED, QueryState.FAILED, QueryState.ABORTED)


# -- events ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A worker processed `packet` (`entries` entries, `bytes` read, in `seconds`)."""

    packet: int
    entries: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupDone:
    """The input is known: `work` ranges for a `kind` packetizer over `elements`.

    `elements` are opaque to the core except for `path`/`tree` (used to name
    ranges in errors and lineage); `missing` are files left out (on_missing='skip').
    """

    work: tuple[WorkRange, ...]
    kind: str
    params: dict[str, Any]
    elements: tuple[Any, ...] = ()
    missing: tuple[dict[str, Any], ...] = ()
    lookups: dict[str, int] = field(default_factory=dict)  # files opened, cached, from catalog
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupBegun:
    """The look-up goes file by file: packets may go out before it ends.

    `elements` are every file the query may read, in order (their entries are
    not known yet); each gets exactly one `ElementFound` or `ElementMissing`,
    in any order, then `LookupDone` (its `work` empty) says the input is
    complete, or `LookupFailed` fails the query. Workers are served from the
    files found so far meanwhile.
    """

    kind: str
    params: dict[str, Any]
    elements: tuple[Any, ...]
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ElementFound:
    """The look-up of `element` ended: its `work` ranges may be handed out."""

    element: int
    work: tuple[WorkRange, ...]
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ElementMissing:
    """The look-up of `element` failed and the query skips it (on_missing='skip')."""

    element: int
    missing: dict[str, Any]
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupFailed:
    error: RemoteError
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJoined:
    worker: str
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLost:
    worker: str
    now: float
    how: str = ""  # how it died, from its supervisor (e.g. "killed by signal SIGSEGV")
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketRequested:
    """NEXT: `worker` wants work; `reports` are packets it processed since it last asked."""

    worker: str
    reports: tuple[Report, ...] = ()
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputArrived:
    """OUTPUTS: `worker` sends the merged outputs of `packet_ids` (the shell keeps them)."""

    worker: str
    packet_ids: frozenset[int]
    reports: tuple[Report, ...] = ()
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerFailed:
    """FAILED (the selector raised), or the shell found a worker's request unusable."""

    worker: str
    error: RemoteError
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Merged:
    """The shell merged what `Merge(token)` named (or could not: `error`)."""

    token: int
    error: RemoteError | None = None
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The shell carried out `Finish`: the result is sent, or `error` says why it could not be."""

    error: RemoteError | None = None
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequested:
    reason: str = "stopped by the user"
    now: float
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortRequested:
    reason: str = "aborted by the user"
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    now: float
    cause: str = ""


Event = (LookupDone | LookupBegun | ElementFound | ElementMissing | LookupFailed | WorkerJoined
         | WorkerLost | PacketRequested | OutputArrived
         | WorkerFailed | Merged | Finished | StopRequested | AbortRequested | Tick)


# -- instructions ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """Answer `worker`: process `packets`, in order (one, or a batch of short ones).

    The worker keeps a batch in a local queue and asks again (ahead) when it
    starts the last one; every packet of it is the worker's until its outputs
    arrive (`outstanding`), and a loss requeues each exactly once. `last`:
    nothing is left to hand out, so the worker does not ask ahead but sends its
    outputs once done (never for a grant whose last packet is `confirm`).
    """

    worker: str
    packets: tuple[Packet, ...]
    last: bool = False
    cause: str = ""

    @property
    def packet(self) -> Packet:
        """The first packet (the only one unless the grant is a batch)."""
        return self.packets[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Answer `worker`: nothing now, ask again.

    `hold`: the shell may hold the request until work appears. Not when the
    worker itself has packets whose outputs it has not sent: it asked ahead (it
    asks for its next packet before processing the current one), and the end of
    the query waits for its outputs, so it must be told at once to send them
    (`flush`), or the query would wait for the hold's bound.
    """

    worker: str
    hold: bool = True
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Answer `worker`: no more packets for you in this query; send what you hold."""

    worker: str
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Answer `worker`: this query is over for you (failed, aborted, or you were lost).

    `ended`: over for every worker (failed or aborted), not only for this one: a worker
    that starts later need not be given it (actors/remote_session.py)."""

    worker: str
    reason: str
    cause: str = ""
    ended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """Answer `worker`'s outputs: `accepted` (merged) or not (they would count twice)."""

    worker: str
    accepted: bool
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Merge:
    """Merge the outputs `worker` sent for `packet_ids` (off the socket thread), then `Merged`.

    `first` is the smallest (element, entry_start) they cover: where kept output
    files sort.
    """

    worker: str
    token: int
    packet_ids: frozenset[int]
    first: tuple[int, int]
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendProgress:
    entries: int
    total: int
    bytes: int
    workers: dict[str, int]
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFeedback:
    """Send the client a snapshot of the outputs `names` as merged so far."""

    names: tuple[str, ...]
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """Every merge is done: keep the output files, send the result, then say `Finished`."""

    stopped: bool
    cause: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """Send the client `error` (the query is over); `aborted` if the user asked for it."""

    error: RemoteError
    aborted: bool = False
    cause: str = ""


Instruction = (Grant | Wait | Done | Refuse | Ack | Merge | SendProgress | SendFeedback | Finish
               | Fail)
ANSWERS = (Grant, Wait, Done, Refuse, Ack)
"""Instructions that answer a worker's request (every request gets exactly one)."""


@dataclass(slots=True)
class WorkerTally:
    entries: int = 0
    packets: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "packets": self.packets,
                "bytes": self.bytes, "busy_seconds": self.seconds}


def worker_id(incarnation: str) -> str:
    """'worker-0#1234' -> 'worker-0': statistics are per worker, not per process."""
    return incarnation.partition("#")[0]


@dataclass(slots=True)
class _Pending:
    worker: str
    packet_ids: frozenset[int]


# -- the core -------------------------------------------------------------------------------

class QueryCore:
    """One query's decisions; see the module docstring. Not thread-safe: one caller at a time."""

    def __init__(self, *, query_id: str, spec: QuerySpec, workers: Sequence[str] = (),
                 now: float) -> None:
        self.query_id = query_id
        self.spec = spec
        self.state = QueryState.PREPARING
        self.started = now
        self.ended_at: float | None = None
        # ordered, O(1) membership and removal: checked on every request (1,000s of workers)
        self.workers: dict[str, None] = dict.fromkeys(workers)
        self.lost: set[str] = set()
        self.packetizer: Packetizer | None = None
        self.elements: tuple[Any, ...] = ()
        self.missing: tuple[dict[str, Any], ...] = ()
        self.lookups: dict[str, int] = {}  # look-up statistics (files opened, cached, cataloged)
        # a look-up file by file (LookupBegun): elements not yet found or missing, and the
        # entries of those found (to estimate what is still coming)
        self.incremental = False
        self.looking_up: set[int] = set()
        self._found = [0, 0]  # elements found, their entries
        self._missing_elements: set[int] = set()
        self.lookup_done_at: float | None = None
        self.first_packet_at: float | None = None
        self.packets_before_lookup = 0  # granted while the look-up was still running
        self.processed_before_lookup = 0  # entries reported processed meanwhile
        self.packets: dict[int, tuple[int, int, int]] = {}  # id -> (element, start, stop)
        self.batches = 0  # grants of several packets
        self.outstanding: dict[str, set[int]] = {}  # worker -> granted ids, outputs not sent
        # which packet a dying worker may have been running (`_on_lost`): per worker its
        # granted packets not reported processed, in grant order; the one it said it starts
        # (asked ahead); packets it starts without a word first (`_silent`); `confirm` ones
        self._unreported: dict[str, dict[int, None]] = {}
        self._starting: dict[str, int] = {}
        self._silent: set[int] = set()
        self._confirm: set[int] = set()
        self.total = 0
        self.processed = 0  # entries reported processed (progress)
        self.delivered = 0  # entries whose outputs were accepted for merging (exactly once)
        self.bytes = 0
        self.duplicates = 0
        self.requeued: list[dict[str, Any]] = []
        self.covered: list[tuple[int, int, int]] = []  # (element, start, stop) accepted
        self.tally: dict[str, WorkerTally] = {worker_id(w): WorkerTally() for w in self.workers}
        self._tallies: dict[str, WorkerTally] = {}  # incarnation -> its worker's tally (cache)
        self.error: RemoteError | None = None
        self.stop_reason = ""
        self._merging: dict[int, _Pending] = {}
        self._tokens = 0
        self._merged_since_feedback = False
        self._last_progress: float | None = None
        self._last_feedback = now
        self._out: list[Instruction] = []
        self._log: deque[tuple[Event, tuple[Instruction, ...]]] = deque(maxlen=STORY_LENGTH)

    # -- the one entry point ------------------------------------------------------------
    def handle(self, *events: Event) -> list[Instruction]:
        """Feed events in order; the instructions to carry out, in order."""
        if len(events) == 1:  # the usual case, kept cheap: one event per request
            ev = events[0]
            self._out = out = []
            _HANDLERS[type(ev)](self, ev)
            self._log.append((ev, tuple(out)))
            return out
        out = []
        for ev in events:
            self._out = []
            _HANDLERS[type(ev)](self, ev)
            self._log.append((ev, tuple(self._out)))
            out.extend(self._out)
        return out

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def merging(self) -> int:
        """Merges handed out (`Merge`) and not yet confirmed (`Merged`)."""
        return len(self._merging)

    @property
    def busy(self) -> bool:
        """Still running (the session's next query waits for it)."""
        return self.state in ACTIVE

    def story(self, worker: str | None = None) -> list[tuple[Event, tuple[Instruction, ...]]]:
        """The remembered events (and what they caused), those about `worker` if given."""
        if worker is None:
            return list(self._log)
        return [(ev, ins) for ev, ins in self._log
                if getattr(ev, "worker", None) == worker
                or any(getattr(i, "worker", None) == worker for i in ins)]

    # -- handlers ------------------------------------------------------------------------
    def _on_lookup_begun(self, ev: LookupBegun) -> None:
        if self.state != QueryState.PREPARING:
            return
        if not self._make_packetizer(ev.kind, (), ev.params, ev.cause):
            return
        assert self.packetizer is not None
        if not hasattr(self.packetizer, "add_work"):
            self._fail(RemoteError(
                type="QuerySpecError", message=f"the {ev.kind!r} packetizer cannot take files "
                "looked up one by one", traceback="", context={}), ev.cause)
            return
        self.incremental = True
        self.elements = ev.elements
        self.looking_up = set(range(len(ev.elements)))
        self.packetizer.expect(0.0)  # not finished: the input is coming
        for w in self.workers:
            self.packetizer.add_worker(w, ev.now)
        self.state = QueryState.RUNNING

    def _on_element_found(self, ev: ElementFound) -> None:
        if not self._take_element(ev.element):
            return
        assert self.packetizer is not None
        entries = sum(w.entries for w in ev.work)
        try:
            self.packetizer.add_work(ev.work, ev.now)  # type: ignore[attr-defined]
        except ValueError as exc:
            self._fail(RemoteError.from_exception(exc, stage="lookup"), ev.cause)
            return
        self.total += entries
        self._found[0] += 1
        self._found[1] += entries
        self._expect()

    def _on_element_missing(self, ev: ElementMissing) -> None:
        if not self._take_element(ev.element):
            return
        self._missing_elements.add(ev.element)
        self.missing = (*self.missing, ev.missing)
        self._expect()

    def _take_element(self, element: int) -> bool:
        """Whether an element's look-up result is to be used (once, while running)."""
        if not self.incremental or element not in self.looking_up or self.packetizer is None \
                or self.state not in (QueryState.RUNNING, QueryState.STOPPING):
            return False
        self.looking_up.discard(element)
        return True

    def _expect(self) -> None:
        """Tell the packetizer the entries still coming: the files not looked up yet at
        the mean of those found (an estimate it plans on, corrected as counts arrive)."""
        assert self.packetizer is not None
        found, entries = self._found
        self.packetizer.expect(len(self.looking_up) * entries / found if found else 0.0)

    def _make_packetizer(self, kind: str, work: tuple[WorkRange, ...], params: dict[str, Any],
                         cause: str) -> bool:
        try:
            self.packetizer = make_packetizer(kind, list(work),
                                              workers=max(1, len(self.workers)), **params)
        except (TypeError, ValueError) as exc:
            self._fail(RemoteError.from_exception(exc, stage="lookup"), cause)
            return False
        return True

    def _on_lookup_done(self, ev: LookupDone) -> None:
        if self.incremental:  # the end of a look-up file by file: the input is complete
            if self.state in (QueryState.RUNNING, QueryState.STOPPING) \
                    and self.lookup_done_at is None:
                assert self.packetizer is not None
                if self.looking_up:  # never silently short: every file is found or missing
                    names = [self.elements[i].path for i in sorted(self.looking_up)[:3]]
                    self._fail(RemoteError(
                        type="DatasetError", message=f"the look-up ended without "
                        f"{len(self.looking_up)} file(s): {', '.join(names)}", traceback="",
                        context={"file": names[0]}), ev.cause)
                    return
                self.lookup_done_at = ev.now
                self.lookups = dict(ev.lookups)
                if ev.missing:  # the shell's list, in the dataset's order
                    self.missing = ev.missing
                self.packetizer.expect(None)
                self._maybe_finish(ev.cause)
            return
        if self.state != QueryState.PREPARING:
            return  # stopped or aborted while looking up
        self.lookup_done_at = ev.now
        if not self._make_packetizer(ev.kind, ev.work, ev.params, ev.cause):
            return
        assert self.packetizer is not None
        self.elements, self.missing = ev.elements, ev.missing
        self.lookups = dict(ev.lookups)
        self.total = sum(w.entries for w in ev.work)
        for w in self.workers:
            self.packetizer.add_worker(w, ev.now)
        self.state = QueryState.RUNNING
        self._maybe_finish(ev.cause)

    def _on_lookup_failed(self, ev: LookupFailed) -> None:
        if self.state == QueryState.PREPARING or (
                self.state == QueryState.RUNNING and self.incremental
                and self.lookup_done_at is None):
            self._fail(ev.error, ev.cause)

    def _on_joined(self, ev: WorkerJoined) -> None:
        self._join(ev.worker, ev.now)

    def _join(self, worker: str, now: float) -> None:
        if worker in self.workers or worker in self.lost:
            return
        self.workers[worker] = None
        self.tally.setdefault(worker_id(worker), WorkerTally())
        if self.packetizer is not None:
            self.packetizer.add_worker(worker, now)

    def _on_lost(self, ev: WorkerLost) -> None:
        self.lost.add(ev.worker)
        self.outstanding.pop(ev.worker, None)
        self.workers.pop(ev.worker, None)
        running = self._running(ev.worker)
        if self.packetizer is None or self.state not in (QueryState.RUNNING,
                                                         QueryState.STOPPING):
            return
        reason = f"{ev.worker} died" + (f" ({ev.how})" if ev.how else "")
        for r in self.packetizer.worker_lost(ev.worker, ev.now, reason=reason,
                                             running=running):
            self.requeued.append({"worker": ev.worker, "element": r.element,
                                  "entry_start": r.entry_start, "entry_stop": r.entry_stop,
                                  "reason": "worker lost"})
        if self.packetizer.poisoned and self.spec.on_missing != "skip" \
                and self.state == QueryState.RUNNING:
            self._fail_poisoned(ev.cause)  # the first poisoned packet fails the query at once
            return
        self._maybe_finish(ev.cause)

    def _gate(self, worker: str, cause: str) -> bool:
        """Answer a request the query cannot serve; True if it was answered."""
        if self.state in (QueryState.FAILED, QueryState.ABORTED):
            self._emit(Refuse(worker=worker, reason=f"query {self.query_id} {self.state}",
                              cause=cause, ended=True))
        elif self.state in (QueryState.FINISHING, QueryState.FINISHED, QueryState.STOPPED):
            self._emit(Done(worker=worker, cause=cause))
        elif worker in self.lost:
            self._emit(Refuse(worker=worker, reason=f"{worker} was declared lost", cause=cause))
        elif self.state == QueryState.PREPARING:
            self._emit(Wait(worker=worker, cause=cause))
        else:
            return False
        return True

    def _on_request(self, ev: PacketRequested) -> None:
        # the hot path (every grant): a running query and a worker it knows
        if self.state is not QueryState.RUNNING or ev.worker not in self.workers:
            if self._gate(ev.worker, ev.cause):
                return
            self._join(ev.worker, ev.now)  # it may ask before the master heard it joined
        assert self.packetizer is not None
        if ev.reports:
            self._reports(ev.worker, ev.reports, ev.now)
        # a worker asks ahead as it starts the last packet it was granted, having reported
        # every one before it (it runs them in grant order): its oldest unreported packet
        confirm = False
        unreported = self._unreported.get(ev.worker)
        if unreported:
            starting = self._starting[ev.worker] = next(iter(unreported))
            # it waits for this answer before it starts a `confirm` packet: what the answer
            # grants must not start without a word either (one packet, not the last grant)
            confirm = starting in self._confirm
        if self.state is QueryState.STOPPING:
            self._emit(Done(worker=ev.worker, cause=ev.cause))
            return
        if confirm:
            one = self.packetizer.next_packet(ev.worker, ev.now)
            batch = [] if one is None else [one]
        else:
            batch = self._next_packets(ev.worker, ev.now)
        if not batch:
            self._maybe_finish(ev.cause)
            if self.state == QueryState.RUNNING:  # a lost worker's packets may come back
                self._emit(Wait(worker=ev.worker, hold=not self.outstanding.get(ev.worker),
                                cause=ev.cause))
            elif not self._gate(ev.worker, ev.cause):
                self._emit(Done(worker=ev.worker, cause=ev.cause))
            return
        held = self.outstanding.get(ev.worker)
        if held is None:
            held = self.outstanding[ev.worker] = set()
        if unreported is None:
            unreported = self._unreported[ev.worker] = {}
        last = not confirm and not batch[-1].confirm and self._nothing_left()
        packets = self.packets
        silent = len(batch) - (not last)  # started without a request first: all but the
        for index, packet in enumerate(batch):  # last, unless the worker will not ask ahead
            packet_id = packet.packet_id
            packets[packet_id] = (packet.element, packet.entry_start, packet.entry_stop)
            held.add(packet_id)
            unreported[packet_id] = None
            if index < silent:
                self._silent.add(packet_id)
            if packet.confirm:
                self._confirm.add(packet_id)
        self.batches += len(batch) > 1
        if self.first_packet_at is None:
            self.first_packet_at = ev.now
        if self.incremental and self.lookup_done_at is None:
            self.packets_before_lookup += len(batch)
        self._out.append(Grant(worker=ev.worker, packets=tuple(batch), last=last,
                               cause=ev.cause))

    def _nothing_left(self) -> bool:
        """No packet is left to hand out once this grant is made (every file looked up, no
        range queued): the worker sends its outputs the moment it is done rather than ask
        ahead for a packet (answered "flush": a round trip more at every query's end). A
        lost worker's ranges may still come back: the worker then asks with its outputs."""
        if self.packetizer is None or self.incremental and self.lookup_done_at is None:
            return False
        return self.packetizer.entries_queued == 0

    def _next_packets(self, worker: str, now: float) -> list[Packet]:
        """One packet, or a batch of short ones when the packetizer cuts batches."""
        assert self.packetizer is not None
        many = getattr(self.packetizer, "next_packets", None)
        if many is not None:
            return many(worker, now)
        packet = self.packetizer.next_packet(worker, now)
        return [] if packet is None else [packet]

    def _on_outputs(self, ev: OutputArrived) -> None:
        if self._gate(ev.worker, ev.cause):
            return
        assert self.packetizer is not None
        self._join(ev.worker, ev.now)
        self._reports(ev.worker, ev.reports, ev.now)
        accepted = bool(ev.packet_ids) and self.packetizer.accept_output(ev.worker,
                                                                          ev.packet_ids)
        # sent (accepted or refused as duplicates): the worker holds them no longer
        self.outstanding.get(ev.worker, set()).difference_update(ev.packet_ids)
        unreported = self._unreported.get(ev.worker)
        if unreported:
            for packet_id in ev.packet_ids:
                self._forget(unreported, packet_id)
        if accepted:
            self._tokens += 1
            ranges = [self.packets[i] for i in ev.packet_ids]
            self._merging[self._tokens] = _Pending(worker=ev.worker, packet_ids=ev.packet_ids)
            for element, start, stop in ranges:
                self.delivered += stop - start
                self.covered.append((element, start, stop))
            self._emit(Merge(worker=ev.worker, token=self._tokens, packet_ids=ev.packet_ids,
                             first=min((e, s) for e, s, _ in ranges), cause=ev.cause))
        else:
            self.duplicates += 1
        self._emit(Ack(worker=ev.worker, accepted=accepted, cause=ev.cause))

    def _on_failed(self, ev: WorkerFailed) -> None:
        if self.state == QueryState.PREPARING and ev.worker not in self.lost:
            # a worker whose selector fails (say, does not import) before the look-up is
            # done: fail now. Telling it to wait would lose the error, and with every
            # worker gone the query would wait for ever.
            self._fail(ev.error, ev.cause)
            self._emit(Refuse(worker=ev.worker, reason="query failed", cause=ev.cause,
                              ended=True))
            return
        if self._gate(ev.worker, ev.cause):
            return
        self._fail(ev.error, ev.cause)
        self._emit(Refuse(worker=ev.worker, reason="query failed", cause=ev.cause,
                              ended=True))

    def _on_merged(self, ev: Merged) -> None:
        if self._merging.pop(ev.token, None) is None or self.ended:
            return
        if ev.error is not None:
            self._fail(ev.error, ev.cause)
            return
        self._merged_since_feedback = True
        self._maybe_finish(ev.cause)

    def _on_finished(self, ev: Finished) -> None:
        if self.state != QueryState.FINISHING:
            return
        if ev.error is not None:
            self._fail(ev.error, ev.cause)
            return
        self.state = QueryState.STOPPED if self.stop_reason else QueryState.FINISHED
        self.ended_at = ev.now

    def _on_stop(self, ev: StopRequested) -> None:
        if self.state not in (QueryState.PREPARING, QueryState.RUNNING):
            return
        self.stop_reason = ev.reason
        self.state = QueryState.STOPPING
        self._maybe_finish(ev.cause)

    def _on_abort(self, ev: AbortRequested) -> None:
        if self.ended:
            return
        self._fail(RemoteError(type="QueryAborted", message=ev.reason, traceback="",
                               context={}), ev.cause, aborted=True)

    def _on_tick(self, ev: Tick) -> None:
        if self.state not in (QueryState.RUNNING, QueryState.STOPPING):
            return
        if self._last_progress is None or ev.now - self._last_progress >= PROGRESS_PERIOD:
            self._last_progress = ev.now
            self._emit(SendProgress(entries=self.processed, total=self.total, bytes=self.bytes,
                                    workers={w: t.entries for w, t in self.tally.items()},
                                    cause=ev.cause))
        if (self.spec.feedback and self._merged_since_feedback
                and ev.now - self._last_feedback >= self.spec.feedback_interval):
            self._last_feedback = ev.now
            self._merged_since_feedback = False
            self._emit(SendFeedback(names=self.spec.feedback, cause=ev.cause))

    # -- helpers -------------------------------------------------------------------------
    def _reports(self, worker: str, reports: Sequence[Report], now: float) -> None:
        assert self.packetizer is not None
        tally = self._tallies.get(worker)
        if tally is None:
            tally = self._tallies[worker] = self.tally.setdefault(worker_id(worker),
                                                                  WorkerTally())
        processed = self.packetizer.packet_processed
        unreported = self._unreported.get(worker)
        for r in reports:
            processed(worker, r.packet, now, seconds=r.seconds)
            if unreported:
                self._forget(unreported, r.packet)
            tally.entries += r.entries
            tally.packets += 1
            tally.bytes += r.bytes
            tally.seconds += r.seconds
            self.processed += r.entries
            self.bytes += r.bytes
        if self.incremental and self.lookup_done_at is None:
            self.processed_before_lookup += sum(r.entries for r in reports)

    def _forget(self, unreported: dict[int, None], packet_id: int) -> None:
        """`packet_id` was reported processed or sent: it is not running any more."""
        if packet_id in unreported:
            del unreported[packet_id]
            self._silent.discard(packet_id)
            self._confirm.discard(packet_id)

    def _running(self, worker: str) -> frozenset[int]:
        """The packet `worker` (just lost) may have been running, if the master can tell.

        It runs its packets in grant order and asks ahead as it starts the last of
        a grant (`Grant`), with the reports of all before it: it may be running
        the packet it said it starts, or one it starts without a word (a batch's,
        not last). If exactly one is left unreported, that one; if several (a
        batch, or a report that was on its way), none: they all become suspects
        (`Ledger.lose`), confirmed when they run again. A packet granted ahead
        and not said to start is not running (a request lost as the worker died
        may hide that it was: it is then a suspect too, struck next time).
        """
        unreported = self._unreported.pop(worker, {})
        starting = self._starting.pop(worker, None)
        candidates = [i for i in unreported if i == starting or i in self._silent]
        self._silent.difference_update(unreported)
        self._confirm.difference_update(unreported)
        return frozenset(candidates) if len(candidates) == 1 else frozenset()

    def _in_flight(self) -> int:
        assert self.packetizer is not None
        stats = self.packetizer.statistics()
        return stats.entries_assigned + stats.entries_processed

    def _maybe_finish(self, cause: str) -> None:
        if self._merging:
            return
        if self.state == QueryState.STOPPING and (self.packetizer is None
                                                  or self._in_flight() == 0):
            self.state = QueryState.FINISHING
            self._emit(Finish(stopped=True, cause=cause))
        elif self.state == QueryState.RUNNING and self.packetizer is not None \
                and self.packetizer.finished:
            if self.packetizer.poisoned and self.spec.on_missing != "skip":
                self._fail_poisoned(cause)
                return
            self.state = QueryState.FINISHING
            self._emit(Finish(stopped=False, cause=cause))

    def _fail_poisoned(self, cause: str) -> None:
        assert self.packetizer is not None
        poisoned = self.packetizer.poisoned
        worst = poisoned[0]
        self._fail(RemoteError(
            type="PoisonedPacket",
            message=f"{len(poisoned)} packet(s) killed the worker that processed them "
                    f"{len(worst.workers)} times and were given up (poisoned); run "
                    "with on_missing='skip' to get the rest; reasons: "
                    f"{', '.join(sorted(set(worst.reasons)))}",
            traceback="", context=self.range_dict(worst)), cause)

    def _fail(self, error: RemoteError, cause: str, *, aborted: bool = False) -> None:
        if self.ended:
            return
        self.state = QueryState.ABORTED if aborted else QueryState.FAILED
        self.error = error
        self._emit(Fail(error=error, aborted=aborted, cause=cause))

    def _emit(self, instruction: Instruction) -> None:
        self._out.append(instruction)

    # -- views ---------------------------------------------------------------------------
    def range_dict(self, r: Any) -> dict[str, Any]:
        """A range as the user reads it: entries, and the file and tree when it has one."""
        where: dict[str, Any] = {"entry_start": r.entry_start, "entry_stop": r.entry_stop}
        if r.element != CYCLES and r.element < len(self.elements):
            where["file"] = self.elements[r.element].path
            where["tree"] = self.elements[r.element].tree
        return where

    def covered_ranges(self) -> list[dict[str, Any]]:
        """The merged entry ranges, adjacent ones joined, in element and entry order."""
        joined: list[list[int]] = []
        for element, start, stop in sorted(self.covered):
            if joined and joined[-1][0] == element and joined[-1][2] == start:
                joined[-1][2] = stop
            else:
                joined.append([element, start, stop])
        return [self.range_dict(WorkRange(element=e, entry_start=s, entry_stop=t))
                for e, s, t in joined]

    def stats(self, now: float) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else now
        return {"entries": self.delivered, "bytes_read": self.bytes,
                "wall_time": end - self.started, "packets": len(self.packets),
                "packet_batches": self.batches,
                **self.lookups,
                "workers": {w: t.as_dict() for w, t in self.tally.items()}}

    def lookup_timing(self) -> dict[str, Any]:
        """When the first packet went out and the look-up ended (seconds from the start);
        with a look-up file by file, what was granted and processed before it ended."""
        timing: dict[str, Any] = {"file_by_file": self.incremental}
        if self.first_packet_at is not None:
            timing["first_packet_seconds"] = self.first_packet_at - self.started
        if self.lookup_done_at is not None:
            timing["lookup_seconds"] = self.lookup_done_at - self.started
        if self.incremental:
            timing["packets_before_lookup_done"] = self.packets_before_lookup
            timing["entries_processed_before_lookup_done"] = self.processed_before_lookup
        return timing

    def lineage(self) -> dict[str, Any]:
        poisoned = self.packetizer.poisoned if self.packetizer else ()
        lineage = {
            "entries_requested": self.total, "entries_processed": self.delivered,
            "missing": list(self.missing) + [
                self.range_dict(r) | {"reason": "poisoned: killed its workers"}
                for r in poisoned],
            "packets": len(self.packets), "duplicates_dropped": self.duplicates,
            "requeued": list(self.requeued),
            "poisoned": [self.range_dict(r) | {"workers": list(r.workers),
                                               "reasons": list(r.reasons)}
                         for r in poisoned],
            "elements": [{"file": e.path, "tree": e.tree, "entries": e.entries,
                          "dataset": e.dataset} for i, e in enumerate(self.elements)
                         if i not in self._missing_elements],
            "stopped": bool(self.stop_reason),
            "lookup": self.lookup_timing(),
        }
        if self.stop_reason:
            lineage["stop_reason"] = self.stop_reason
            lineage["covered"] = self.covered_ranges()
        return lineage

    def summary(self, now: float) -> dict[str, Any]:
        """What `session.queries()` and `proofctl queries` show of this query."""
        end = self.ended_at if self.ended_at is not None else now
        return {"id": self.query_id, "state": str(self.state), "processed": self.processed,
                "delivered": self.delivered, "total": self.total,
                "wall_time": end - self.started}

    def validate(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (tests call this)."""
        assert isinstance(self.state, QueryState)
        covered = sum(stop - start for _, start, stop in self.covered)
        assert covered == self.delivered, (covered, self.delivered)
        by_element: dict[int, list[tuple[int, int]]] = {}
        for element, start, stop in self.covered:
            by_element.setdefault(element, []).append((start, stop))
        for element, ranges in by_element.items():
            ranges.sort()
            for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
                assert start >= stop, f"element {element}: entry {start} merged twice"
        if self.packetizer is not None:
            self.packetizer.validate()
            assert self.packetizer.statistics().entries_delivered == self.delivered
        else:
            assert self.delivered == 0 and not self._merging
        if self.state == QueryState.FINISHED:
            assert self.packetizer is not None and self.packetizer.finished
            assert not self._merging
        if self.state in (QueryState.FINISHING, QueryState.STOPPED):
            assert not self._merging
        assert not set(self.workers) & self.lost
        for worker, unreported in self._unreported.items():
            assert unreported.keys() <= self.outstanding.get(worker, set()), worker
        assert self._silent | self._confirm <= {
            i for u in self._unreported.values() for i in u}, "a forgotten packet is tracked"


_HANDLERS: dict[type, Any] = {
    LookupDone: QueryCore._on_lookup_done, LookupFailed: QueryCore._on_lookup_failed,
    LookupBegun: QueryCore._on_lookup_begun, ElementFound: QueryCore._on_element_found,
    ElementMissing: QueryCore._on_element_missing,
    WorkerJoined: QueryCore._on_joined, WorkerLost: QueryCore._on_lost,
    PacketRequested: QueryCore._on_request, OutputArrived: QueryCore._on_outputs,
    WorkerFailed: QueryCore._on_failed, Merged: QueryCore._on_merged,
    Finished: QueryCore._on_finished, StopRequested: QueryCore._on_stop,
    AbortRequested: QueryCore._on_abort, Tick: QueryCore._on_tick,
}
