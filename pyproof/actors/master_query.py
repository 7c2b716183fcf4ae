"""One query as the master runs it: the shell around its `QueryCore` (query/core.py).

The core decides (packets, exactly-once merges, stop, abort, the end); this
shell does: it looks the input up (a thread; a cycles query's is done at
once), answers worker requests (the data-plane thread), merges outputs (the
plane's merge thread, `Merger`, so a large merge never blocks packet grants),
keeps output files, and streams progress,
feedback and the result to the client. Every thread feeds the core through
`feed()`, one at a time under `self.lock`, and carries out what it returns:
nothing polls for the look-up or the finish, they feed the core when done.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pynng

from pyproof.actors import protocol as p
from pyproof.actors.base import TEST_HOOKS
from pyproof.actors.lookup import (
    Element,
    LookupCache,
    LookupError_,
    Lookups,
    Want,
    catalog_elements,
    file_elements,
    select_ranges,
    split_branches,
)
from pyproof.actors.output_files import (
    OutputFiles,
    check_output_dataset,
    register_output_dataset,
)
from pyproof.actors.thread_beats import ThreadBeats, deadlock, injected_fault
from pyproof.datasets import records as _records  # noqa: F401  (outputs may hold them)
from pyproof.hosts.locality import element_hosts, read_layout, worker_host
from pyproof.logs import get_logger
from pyproof.merging import OutputTooLarge, check_output_sizes, merge_outputs
from pyproof.packetizer import DEFAULT_DATA_KIND
from pyproof.packetizer.base import CYCLES, WorkRange
from pyproof.query import core as qc
from pyproof.query.spec import QuerySpec
from pyproof.transport import sealing
from pyproof.transport.codec import EncodeError, RemoteError
from pyproof.transport.frames import chunk_frame_parts, encode_frame
from pyproof.transport.tls import TLSError, TLSSettings
from pyproof.transport.wire import send_parts

FINAL_FRAME_GRACE = 2.0
HEARTBEAT_PERIOD = 1.0  # well under the client's MASTER_SILENCE_CHECK (3 s)
CHUNK_SIZE = 8 * 1024 * 1024
MERGE_JOIN = 5.0
FEEDBACK = "feedback"  # master -> client: {query, outputs: {name: merged so far}}
# tests (PYPROOF_TEST_HOOKS=1): a stuck master sends no ERROR frame, as on a starved host
# where it did not leave before the exit; the client must hear it from the next master
DROP_STUCK_FRAME_ENV = "PYPROOF_TEST_DROP_STUCK_FRAME"

worker_id = qc.worker_id


def _packet_fields(packet: Any) -> dict[str, Any]:
    """A packet as the worker reads it; "confirm": tell the master you start it, and wait
    for its answer, before you start it (`Packet.confirm`)."""
    fields = {"packet_id": packet.packet_id, "element": packet.element,
              "entry_start": packet.entry_start, "entry_stop": packet.entry_stop}
    if packet.confirm:
        fields["confirm"] = True
    return fields

class Merger:
    """The merge thread: merges workers' outputs into their query's, one job at a time, in
    the order given. One serves a plane's queries for its life: a query's start costs no
    thread start (under load, starting one cost the actor thread about a millisecond:
    `Thread.start` waits until the new thread runs). Started on first use."""

    def __init__(self, beats: ThreadBeats, name: str = "merge-plane") -> None:
        self.beats = beats  # the plane's: stamped per merge, idle while waiting
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if not self._closed and self._thread.ident is None:
                self._thread.start()

    def put(self, job: Callable[[], None]) -> None:
        """Run `job` on the merge thread, after the jobs before it (none once closed)."""
        self.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        self.beats.idle()
        try:
            while True:
                self.beats.idle()  # waiting for work is not being stuck
                job = self._jobs.get()
                if job is None:  # (never waits for the warm-up: a close is not held up)
                    return
                self.beats.stamp()  # a merge (and feeding its end) must not stall
                job()
        finally:
            self.beats.forget()

    def close(self, timeout: float = 5.0) -> None:
        """End the thread once the jobs given are done (waits `timeout` at most); a call
        from the merge thread itself (a query ending there) does not wait."""
        with self._lock:
            self._closed = True
            started = self._thread.ident is not None
        if not started:
            return
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class QueryRun:
    """One query on the master: see the module docstring. Thread-safe through `feed`."""

    def __init__(self, *, query_id: str, session_id: str, spec: QuerySpec, user: str = "",
                 workers: list[str], keep: Any = None, data_key: bytes = b"",
                 outbox: pynng.Push0 | None = None, callback: pynng.Push0 | None = None,
                 on_end: Callable[[QueryRun], None] | None = None,
                 on_change: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 lookup_cache: LookupCache | None = None, run_dir: str = "",
                 beats: ThreadBeats | None = None, merger: Merger | None = None) -> None:
        self.beats = beats or ThreadBeats()  # the plane's: our merge thread stamps there
        # the plane's merge thread (else one of our own, ended with us)
        self._own_merger = merger is None
        self.merger = merger or Merger(self.beats, name=f"merge-{query_id}")
        self._fault = injected_fault(spec.inputs)  # tests only (thread_beats.FAULT_INPUT)
        self.run_dir = run_dir  # the daemon's: where the hosts actor writes the layout
        self.lookups = Lookups(lookup_cache)  # the session's cache: files opened once
        self.data_key = data_key
        self.keep = keep  # called with (query id, final frame) to keep the outcome
        self.on_end = on_end  # called (without our lock) once the query has ended
        # called (without our lock) after an event that came from off the data-plane
        # thread (look-up done, merge done, worker lost, stop): held requests may now
        # have an answer, and the plane must not wait for its next poll to give it
        self.on_change = on_change
        self.clock = clock
        self.query_id = query_id
        self.session_id = session_id
        self.spec = spec
        self.user = user
        self.log = get_logger().bind(query=query_id)
        self.lock = threading.RLock()
        self.core = qc.QueryCore(query_id=query_id, spec=spec, workers=workers, now=clock())
        self.outputs: dict[str, Any] = {}
        self._outputs_lock = threading.Lock()  # merges vs feedback snapshots
        self._request: dict[str, Any] = {}  # the worker request being fed (outputs, files)
        self._answer: tuple[str, dict[str, Any]] | None = None
        self._events: list[qc.Event] = []
        self._started = False
        self._ended_told = False
        self._dial_error: RemoteError | None = None
        self._heartbeat_at = float("-inf")
        self._packetizer_params = spec.packetizer_params
        self.elements: list[Element] = []
        self.missing: list[dict[str, Any]] = []
        self.parts: list[list[int]] = []
        self.output_files = OutputFiles(spec.output_dir) if spec.output_dir else None
        self.output_dataset: dict[str, Any] | None = None
        if outbox is not None:  # client-dials mode: the session's listening socket
            self.client, self._own_client = outbox, False
        elif callback is not None:  # callback mode, dialled before (the plane's, reused)
            self.client, self._own_client = callback, False
        else:  # callback mode: dial the client back, in the background (never block here)
            self.client, self._own_client = pynng.Push0(), True
            try:  # a client that listens with TLS is checked against our CA
                tls = TLSSettings.from_env().callback_config(spec.client_address)
                if tls is not None:
                    self.client.tls_config = tls
                self.client.dial(spec.client_address, block=False)
            except (TLSError, pynng.NNGException) as exc:  # fail this query, not the plane
                self._dial_error = RemoteError(
                    type="TLSError", message=f"cannot dial the client back: {exc}",
                    traceback="", context={"client": spec.client_address})

    # -- views (any thread) ------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self.core.state)

    @property
    def delivered(self) -> int:
        return self.core.delivered

    @property
    def processed(self) -> int:
        return self.core.processed

    @property
    def total(self) -> int:
        return self.core.total

    def summary(self) -> dict[str, Any]:
        with self.lock:
            summary = self.core.summary(self.clock())
        if not self._started and self.core.busy:
            summary["state"] = "queued"
        return summary

    def heartbeat(self, now: float) -> None:
        """Data-plane thread: tell the client the query lives while it sends no progress.

        Progress goes out every PROGRESS_PERIOD while the query runs; queued,
        looking up or merging at the end it would be silent, and the client
        would have to ask over the control plane whether it is still alive.
        With a heartbeat every HEARTBEAT_PERIOD in those states too, silence on
        the data plane means trouble (session.py `_pump`). Raises nothing the
        plane must handle: a client that cannot take it is logged, as progress.
        """
        with self.lock:
            state = "queued" if not self._started else str(self.core.state)
            if not self.core.busy or state in ("running", "stopping") or \
                    now - self._heartbeat_at < HEARTBEAT_PERIOD:
                return
            self._heartbeat_at = now
            self._send_client(p.HEARTBEAT, {"query": self.query_id, "state": state})

    # -- starting (the plane, when the query's turn comes) -----------------------------
    def start(self) -> None:
        """Begin: look the input up (its own thread) and start merging."""
        if self._started:
            return
        self._started = True
        if self._dial_error is not None:
            self.feed(qc.LookupFailed(error=self._dial_error, cause="dial"))
            return
        if self.spec.cycles is not None and not self.spec.output_dataset:
            self._lookup()  # nothing to look up or import: no thread to start and wait for
            return
        threading.Thread(target=self._lookup, daemon=True, name=f"lookup-{self.query_id}").start()

    def _lookup(self) -> None:
        """Look-up thread: find the work, then tell the core (no one polls for it)."""
        try:
            if self.spec.output_dataset:
                check_output_dataset(self.spec.output_dataset, self.user,
                                     overwrite=self.spec.output_overwrite)
            if self._file_by_file():
                self._lookup_each()
                return
            if self.spec.cycles is not None:
                work = [WorkRange(element=CYCLES, entry_start=0, entry_stop=self.spec.cycles)]
                kind = self.spec.packetizer or "unit"
            elif self.spec.files is not None:
                work, kind = self._file_work()
            else:
                work, kind = self._data_work()
            params = dict(self._packetizer_params or {})
            if kind == "multi":
                params.setdefault("parts", self.parts)
            if kind == "adaptive":
                self._locality(params)
        except LookupError_ as exc:
            self.feed(qc.LookupFailed(error=RemoteError(
                type="DatasetError", message=str(exc), traceback="", context=exc.context),
                cause="lookup"))
            return
        except Exception as exc:
            self.feed(qc.LookupFailed(error=RemoteError.from_exception(exc, stage="lookup"),
                                      cause="lookup"))
            return
        self.log.info("query_prepared", elements=len(self.elements),
                      entries=sum(r.entries for r in work), packetizer=kind,
                      **self.lookups.stats())
        self.feed(qc.LookupDone(work=tuple(work), kind=kind, params=params,
                                elements=tuple(self.elements), missing=tuple(self.missing),
                                lookups=self.lookups.stats(), now=self.clock(),
                                cause="lookup"))

    def _file_by_file(self) -> bool:
        """Whether packets may go out while files are still looked up: a list of files,
        read whole (with `first=`/`entries=` a file's range depends on the counts of
        those before it), by one packetizer (not one dataset after another)."""
        spec = self.spec
        return (spec.dataset is not None and len(spec.dataset) > 1 and spec.first == 0
                and spec.entries is None
                and (spec.packetizer or DEFAULT_DATA_KIND) in ("adaptive", "basic")
                and not self._files_on_hosts())

    def _files_on_hosts(self) -> bool:
        """Whether some files are known to be on a host (locality): then every count is
        known first, so that each worker's first packets are files of its own host (with
        counts arriving one by one it would be given another host's file while none of
        its own was known yet)."""
        elements = [Element(path=path, tree=tree or "", entries=0)
                    for path, tree in self.spec.dataset or ()]
        return bool(element_hosts(elements, read_layout(self.run_dir)))

    def _lookup_each(self) -> None:
        """Look the files up in parallel and tell the core of each as soon as it is known:
        workers get packets of the files found while the others are still looked up."""
        kind = self.spec.packetizer or DEFAULT_DATA_KIND
        dataset = [(path, tree) for path, tree in self.spec.dataset or ()]
        self.elements = [Element(path=path, tree=tree or "", entries=0) for path, tree in dataset]
        params = dict(self._packetizer_params or {})
        if kind == "adaptive":
            self._locality(params)
        self.feed(qc.LookupBegun(kind=kind, params=params, elements=tuple(self.elements),
                                 now=self.clock(), cause="lookup"))
        if self.core.state is not qc.QueryState.RUNNING:
            return  # the packetizer could not be made (the query failed), or stopped
        main, _ = split_branches(list(self.spec.branches)
                                 if self.spec.branches is not None else None)
        skip = self.spec.on_missing == "skip"
        missing: dict[int, dict[str, Any]] = {}
        # files that fail the query: it fails once every look-up (in parallel, bounded) is
        # in, naming the first of them in the dataset's order, as an all-at-once look-up
        # does (the same error whichever look-up happened to end first)
        fatal: dict[int, LookupError_] = {}
        for index, result in self.lookups.each([Want(path, tree, main)
                                                for path, tree in dataset]):
            if self.core.state not in (qc.QueryState.RUNNING, qc.QueryState.STOPPING):
                return  # failed, aborted or over: the rest is not needed
            path, tree = dataset[index]
            if isinstance(result, LookupError_):
                if not skip or "branch" in result.context:
                    fatal[index] = result
                    continue
                missing[index] = {"file": path, "tree": tree, "reason": str(result)}
                self.feed(qc.ElementMissing(element=index, missing=missing[index],
                                            now=self.clock(), cause="lookup"))
                continue
            element = self.elements[index]
            element.tree, element.entries = result.tree, result.entries  # before any packet
            self.log.debug("file_looked_up", file=path, entries=result.entries)
            self.feed(qc.ElementFound(element=index, now=self.clock(), cause="lookup", work=(
                WorkRange(element=index, entry_start=0, entry_stop=result.entries,
                          boundaries=result.clusters),)))
        if fatal:
            first = fatal[min(fatal)]
            self.feed(qc.LookupFailed(error=RemoteError(
                type="DatasetError", message=str(first), traceback="", context=first.context),
                cause="lookup"))
            return
        self.missing = [missing[i] for i in sorted(missing)]
        self.log.info("query_prepared", elements=len(self.elements) - len(missing),
                      entries=self.core.total, packetizer=kind, file_by_file=True,
                      packets_before=self.core.packets_before_lookup, **self.lookups.stats())
        self.feed(qc.LookupDone(work=(), kind=kind, params=params, elements=(),
                                missing=tuple(self.missing), lookups=self.lookups.stats(),
                                now=self.clock(), cause="lookup"))

    def _locality(self, params: dict[str, Any]) -> None:
        """Workers prefer files on their own host (hosts/locality.py)."""
        layout = read_layout(self.run_dir)
        hosts = element_hosts(self.elements, layout)
        if hosts:
            params.setdefault("element_hosts", hosts)
            params.setdefault("worker_hosts", {w: worker_host(w, layout.host)
                                               for w in self.core.workers})
            params.setdefault("local_host", layout.host)  # for workers joining later

    def _file_work(self) -> tuple[list[WorkRange], str]:
        """A per-file task: one unit per file, files not opened here (they may be bad)."""
        self.elements = [Element(path=path, tree=tree or "", entries=1)
                         for path, tree in self.spec.files]
        work = [WorkRange(element=i, entry_start=0, entry_stop=1)
                for i in range(len(self.elements))]
        return work, self.spec.packetizer or "file"

    def _data_work(self) -> tuple[list[WorkRange], str]:
        branches = list(self.spec.branches) if self.spec.branches is not None else None
        skip = self.spec.on_missing == "skip"
        kind = self.spec.packetizer or DEFAULT_DATA_KIND
        if self.spec.dataset_spec:
            self.elements, self.missing, parts = catalog_elements(
                self.spec.dataset_spec, self.user, branches, skip_missing=skip,
                lookups=self.lookups)
            if parts > 1:  # `a,b`: one after the other, the selector told by ctx.dataset
                self.parts = [[i for i, e in enumerate(self.elements) if e.part == k]
                              for k in range(parts)]
                params = self.spec.packetizer_params or {}
                self._packetizer_params = {"part_kind": kind, "params": params}
                kind = "multi"
        else:
            self.elements, self.missing = file_elements(
                [list(d) for d in self.spec.dataset or ()], branches, skip_missing=skip,
                lookups=self.lookups)
        work = select_ranges(self.elements, self.spec.first, self.spec.entries)
        return work, kind

    # -- feeding the core (any thread) ---------------------------------------------------
    def feed(self, *events: qc.Event, wake: bool = True) -> tuple[str, dict[str, Any]] | None:
        """Feed events and carry out the instructions; the answer to a worker, if any.

        With `wake` (events from any thread but the data plane's, which answers its
        held requests itself after each request), `on_change` is called afterwards.
        """
        ended = False
        with self.lock:
            self._events.extend(events)
            answer = None
            while self._events:
                ev = self._events.pop(0)
                self._answer = None
                for instruction in self.core.handle(ev):
                    self._carry_out(instruction)
                if self._answer is not None:
                    answer = self._answer
            if self.core.ended and not self._ended_told:
                self._ended_told = ended = True
                if self._own_merger:
                    self.merger.close()  # after the merges given: no more come
        if ended and self.on_end is not None:
            self.on_end(self)
        if wake and self.on_change is not None:
            self.on_change()
        return answer

    def _carry_out(self, ins: qc.Instruction) -> None:
        if isinstance(ins, qc.Grant):
            packets = ins.packets
            reply = self._packet_reply(packets[0])
            if len(packets) > 1:  # a batch: the worker queues the rest (worker_loop)
                # a packet of the same element as the one before it carries no file fields
                # (path, tree, metadata...): the worker takes them from that one
                reply["batch"] = [
                    {"packet": _packet_fields(packet)}
                    if packet.element == before.element else self._packet_reply(packet)
                    for before, packet in zip(packets, packets[1:], strict=False)]
            if ins.last:  # its outputs go as soon as it is done (see protocol.py)
                reply["last"] = True
            self._answer = (p.PACKET, reply)
        elif isinstance(ins, qc.Wait):  # not held: send your outputs, then ask again
            self._answer = (p.WAIT, {} if ins.hold else {"flush": True})
        elif isinstance(ins, qc.Done):
            self._answer = (p.DONE, {})
        elif isinstance(ins, qc.Refuse):
            self._answer = (p.ABORT, {"reason": ins.reason, **({"ended": True} if ins.ended
                                                               else {})})
        elif isinstance(ins, qc.Ack):
            files = self._request.get("files") or []
            if files and not ins.accepted:
                OutputFiles.refuse(files)
            if not ins.accepted:
                self.log.warning("output_refused", worker=ins.worker,
                                 packets=sorted(self._request.get("packets") or []))
            self._answer = (p.ACK, {"accepted": ins.accepted})
        elif isinstance(ins, qc.Merge):
            files = self._request.get("files") or []
            if files and self.output_files is not None:
                self.output_files.keep(files, ins.first)
            outputs = self._request.get("outputs") or {}
            self.merger.put(lambda: self._merge(ins.token, ins.worker, outputs))
        elif isinstance(ins, qc.SendProgress):
            self._send_client(p.PROGRESS, {
                "query": self.query_id, "entries": ins.entries, "total": ins.total,
                "bytes": ins.bytes, "elapsed": self.clock() - self.core.started,
                "workers": ins.workers})
        elif isinstance(ins, qc.SendFeedback):
            self._send_feedback(ins.names)
        elif isinstance(ins, qc.Finish):
            self._finish(ins)
        elif isinstance(ins, qc.Fail):
            self._fail(ins)

    def _packet_reply(self, packet: Any) -> dict[str, Any]:
        reply: dict[str, Any] = {"packet": _packet_fields(packet)}
        if packet.element != CYCLES:
            element = self.elements[packet.element]
            reply["path"], reply["tree"] = element.path, element.tree
            if element.dataset:
                reply["dataset"] = element.label or element.dataset
            if element.metadata is not None:
                reply["metadata"] = element.metadata
            if element.friend_path:
                reply["friend_path"] = element.friend_path
                reply["friend_tree"] = element.friend_tree
        return reply

    # -- worker requests (the data-plane thread) ---------------------------------------
    def handle(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        worker = f"{p.require(payload, 'worker', str)}#{p.require(payload, 'pid', int)}"
        now = self.clock()
        if kind == p.FAILED:
            error = payload.get("error")
            if not isinstance(error, RemoteError):
                error = RemoteError(type="WorkerError", message=repr(error), traceback="",
                                    context={"worker": worker})
            return self._fed(qc.WorkerFailed(worker=worker, error=error, cause=kind))
        reports = tuple(self._report(r) for r in payload.get("processed") or [])
        if kind == p.OUTPUTS:
            ids = frozenset(p.require(payload, "packets", list))
            files = self._reported_files(worker, payload)
            if files is None:
                return p.ABORT, {"reason": "bad output files"}
            outputs = p.require(payload, "outputs", dict)
            try:  # a worker that did not check (see worker_loop._flush): refused unmerged
                check_output_sizes(outputs, self.spec.max_output_bytes, worker=worker)
            except OutputTooLarge as exc:
                self.feed(qc.WorkerFailed(worker=worker, error=RemoteError(
                    type="OutputTooLarge", message=str(exc), traceback="",
                    context={"worker": worker}), cause="outputs"))
                return p.ABORT, {"reason": "output over max_output_bytes"}
            with self.lock:
                self._request = {"files": files, "outputs": outputs, "packets": ids}
                try:
                    answer = self._fed(qc.OutputArrived(worker=worker, packet_ids=ids,
                                                        reports=reports, now=now, cause=kind))
                finally:
                    self._request = {}
                if answer[0] != p.ACK or not payload.get("next"):
                    return answer
                # the worker's next request rides on its outputs (one round trip, not two):
                # its answer carries the outputs' ACK as "accepted"
                kind_, body = self._fed(qc.PacketRequested(worker=worker, now=now,
                                                           cause=p.NEXT))
                return kind_, {**body, "accepted": answer[1]["accepted"]}
        if kind != p.NEXT:
            raise p.ProtocolViolation(f"unknown request {kind!r}")
        if self._fault == "deadlock:master-plane":
            self._fault = None
            self.log.warning("test_fault_injected", fault="deadlock:master-plane")
            deadlock()
        return self._fed(qc.PacketRequested(worker=worker, reports=reports, now=now,
                                            cause=kind))

    def _fed(self, event: qc.Event) -> tuple[str, dict[str, Any]]:
        answer = self.feed(event, wake=False)
        assert answer is not None, f"the core did not answer {event}"
        return answer

    @staticmethod
    def _report(report: Any) -> qc.Report:
        return qc.Report(packet=p.require(report, "packet", int),
                         entries=int(report.get("entries", 0)),
                         bytes=int(report.get("bytes", 0)),
                         seconds=float(report.get("seconds", 0.0)))

    def _reported_files(self, worker: str, payload: dict[str, Any]) -> list[str] | None:
        """The files an OUTPUTS message carries; None (the query failed) if they are bad."""
        files = payload.get("files") or []
        if not files:
            return []
        try:
            if self.output_files is None:
                raise p.ProtocolViolation(f"{worker} reported output files, but the query "
                                          "has no output directory")
            return self.output_files.check(worker, files)
        except p.ProtocolViolation as exc:
            self.feed(qc.WorkerFailed(worker=worker, error=RemoteError(
                type="OutputFileError", message=str(exc), traceback="",
                context={"worker": worker}), cause="outputs"))
            return None

    # -- merging (the merge thread) ---------------------------------------------------
    def _merge(self, token: Any, worker: str, outputs: dict[str, Any]) -> None:
        """One merge (on the merge thread), then tell the core."""
        if self._fault == "deadlock:merge":
            self._fault = None
            self.log.warning("test_fault_injected", fault="deadlock:merge")
            deadlock()
        error = None
        try:
            with self._outputs_lock:
                merge_outputs(self.outputs, outputs, concatenate=self.spec.concatenate)
                # concatenated outputs grow with every merge: the cap holds for them too
                check_output_sizes(self.outputs, self.spec.max_output_bytes,
                                   worker=worker, names=outputs, merged=True)
        except OutputTooLarge as exc:
            error = RemoteError(type="OutputTooLarge", message=str(exc), traceback="",
                                context={"worker": worker, "stage": "merge"})
        except Exception as exc:
            error = RemoteError.from_exception(exc, stage="merge", worker=worker)
        self.feed(qc.Merged(token=token, error=error, cause="merge"))

    def settle(self, timeout: float) -> bool:
        """Wait until every merge handed out so far is done (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.core.merging:
                    return True
            time.sleep(0.01)
        return False

    # -- the other actions -------------------------------------------------------------
    def _send_feedback(self, names: tuple[str, ...]) -> None:
        with self._outputs_lock:  # encoded (a snapshot) before a merge can change them
            snapshot = {n: self.outputs[n] for n in names if n in self.outputs}
            try:
                frame = encode_frame(FEEDBACK, {"query": self.query_id, "outputs": snapshot},
                                     session=self.session_id)
            except EncodeError as exc:
                self.log.warning("feedback_not_encodable", error=str(exc))
                return
        self._send_frame(frame, FEEDBACK, final=False)

    def _finish(self, ins: qc.Finish) -> None:
        if self.output_files is not None and (self.output_files.exists()
                                              or self.spec.output_dataset):
            # sweeping and registering read files: off the thread that fed us
            threading.Thread(target=self._finish_files, daemon=True,
                             name=f"finish-{self.query_id}").start()
            return
        self._events.append(qc.Finished(error=self._send_result(), now=self.clock(),
                                        cause="finish"))

    def _finish_files(self) -> None:
        assert self.output_files is not None
        error: RemoteError | None = None
        try:
            removed = self.output_files.sweep()
            if removed:
                self.log.info("output_files_swept", files=len(removed))
            name = self.spec.output_dataset
            if name and not self.core.stop_reason:
                if not self.output_files.kept:
                    raise LookupError_(f"output_dataset={name!r}: the selector wrote no files "
                                       "(write them at paths from ctx.output_file(...))",
                                       dataset=name)
                self.output_dataset = register_output_dataset(
                    name, self.user, self.output_files.kept,
                    overwrite=self.spec.output_overwrite)
                self.log.info("output_dataset_registered", dataset=self.output_dataset["name"],
                              files=len(self.output_files.kept))
        except LookupError_ as exc:
            error = RemoteError(type="DatasetError", message=str(exc), traceback="",
                                context=exc.context)
        except Exception as exc:
            error = RemoteError.from_exception(exc, stage="output_dataset")
        with self.lock:
            if error is None:
                error = self._send_result()
        # fed after the lock is left: `on_end` (the next queued query) runs without it
        self.feed(qc.Finished(error=error, now=self.clock(), cause="finish"))

    def _send_result(self) -> RemoteError | None:
        """Send the RESULT frame; the error if the outputs cannot be encoded."""
        now = self.clock()
        with self._outputs_lock:
            try:
                data = encode_frame(p.RESULT, {"query": self.query_id, "outputs": self.outputs,
                                               "stats": self.core.stats(now),
                                               "lineage": self.lineage()},
                                    session=self.session_id)
            except EncodeError as exc:  # an output the wire cannot carry: name it
                return RemoteError(type="OutputError", message=f"outputs cannot be sent: {exc}",
                                   traceback="", context={})
        # logged before the client can hold the result: `proofctl logs` run right after
        # `proofctl run` shows the query finished (the log file is line-buffered)
        self.log.info("query_finished", entries=self.core.delivered,
                      stopped=bool(self.core.stop_reason),
                      seconds=round(now - self.core.started, 3))
        self._send_frame(data, p.RESULT, final=True)
        return None

    def _fail(self, ins: qc.Fail) -> None:
        if self.output_files is not None:
            self.output_files.discard()
        self.log.error("query_failed", error=str(ins.error), aborted=ins.aborted,
                       **ins.error.context)
        self._send_client(p.ERROR, {"query": self.query_id, "error": ins.error,
                                    "lineage": self.lineage()}, final=True)

    # -- ending (the actor thread, through the plane) ----------------------------------
    def stop(self, reason: str, *, abort: bool = False) -> None:
        """PROOF's StopProcess: finish what is in flight (or, with `abort`, discard all)."""
        if abort:
            self.feed(qc.AbortRequested(reason=reason, cause="user"))
        else:
            self.feed(qc.StopRequested(reason=reason, now=self.clock(), cause="user"))

    def fail(self, error: RemoteError) -> None:
        """A bug in the shell: fail the query (not the plane)."""
        self.feed(qc.LookupFailed(error=error, cause="master") if self.core.state ==
                  qc.QueryState.PREPARING else qc.WorkerFailed(worker="master", error=error,
                                                               cause="master"))

    def worker_joined(self, worker: str) -> None:
        self.feed(qc.WorkerJoined(worker=worker, now=self.clock(), cause="actor"))

    def worker_lost(self, worker: str, how: str = "") -> None:
        self.feed(qc.WorkerLost(worker=worker, how=how, now=self.clock(), cause="actor"))
        self.log.warning("worker_lost", worker=worker, how=how)

    def tick(self, now: float) -> None:
        self.feed(qc.Tick(now=now, cause="tick"), wake=False)

    def lineage(self) -> dict[str, Any]:
        lineage = self.core.lineage()
        lineage["output_files"] = self.output_files.kept if self.output_files else []
        lineage["output_file_hosts"] = self.output_files.kept_hosts if self.output_files else []
        lineage["output_dataset"] = self.output_dataset
        return lineage

    # -- the client stream -------------------------------------------------------------
    def _send_client(self, kind: str, payload: dict[str, Any], *, final: bool = False) -> None:
        self._send_frame(encode_frame(kind, payload, session=self.session_id), kind, final)

    def _send_frame(self, data: bytes, kind: str, final: bool) -> None:
        if final and self.keep is not None:
            self.keep(self.query_id, data)
        # a large result travels as chunk frames (each sealed), never as one huge frame
        pieces = [[data]]
        if len(data) > CHUNK_SIZE:
            pieces = chunk_frame_parts(data, stream=self.query_id, chunk_size=CHUNK_SIZE,
                                       session=self.session_id)
        for parts in pieces:
            self.beats.touch()  # each piece's send is bounded: a long result is not stuck
            if not self._send_wire(parts, kind, final):
                return

    def _send_wire(self, parts: list[Any], kind: str, final: bool) -> bool:
        """Send one frame (given as its parts); False if the client could not take it."""
        wire = sealing.sealed_parts(self.data_key, parts) if self.data_key else parts
        # never block the data plane on a slow or absent client: a dropped progress
        # frame is harmless; the final frames get a grace (the callback connection
        # may still be coming up, a big result takes time) and are kept for
        # `fetch_result` anyway
        try:
            try:
                send_parts(self.client, wire, block=False)
            except pynng.TryAgain:
                if not final:
                    raise
                self.client.send_timeout = int(FINAL_FRAME_GRACE * 1000)
                send_parts(self.client, wire)  # the message is built (copied) once more only
            return True
        except (pynng.TryAgain, pynng.Timeout):
            self.log.warning("client_unreachable", message=kind)
        except pynng.NNGException as exc:
            self.log.error("client_send_failed", message=kind, error=repr(exc))
        return False

    def stuck_frame(self, error: RemoteError) -> bytes | None:
        """The ERROR frame telling the client the master is stuck (plain, as `keep` keeps
        frames); None if the client was told how its query ended already.

        Called on the actor thread; takes no lock (the stuck thread may hold any of them).
        """
        if self._ended_told:
            return None
        return encode_frame(p.ERROR, {"query": self.query_id, "error": error},
                            session=self.session_id)

    def fail_stuck(self, frame: bytes) -> None:
        """The master is about to end (a data thread is stuck): send the client its
        `stuck_frame` at once (the next master has it too: actors/last_words.py).

        Called on the actor thread; takes no lock and bypasses the core: the process
        ends right after.
        """
        if TEST_HOOKS and os.environ.get(DROP_STUCK_FRAME_ENV) == "1":
            self.log.warning("test_stuck_frame_dropped")  # as if it never left the host
            return
        try:
            self._send_wire([frame], p.ERROR, final=True)
        except Exception as exc:  # the client then learns it over the control plane
            self.log.error("stuck_error_not_sent", error=repr(exc))

    def close(self) -> None:
        if self._own_merger:  # the plane's is closed by the plane
            self.merger.close(MERGE_JOIN)  # (from the merge thread itself: no wait)
        if self._own_client:
            self.client.close()
