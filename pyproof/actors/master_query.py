"""One query as the master runs it: look-up, packetizer, exactly-once merge, client stream.

Everything here runs on the master's data-plane thread (or the look-up
thread it starts), never on the actor thread, so a busy control plane does
not stall packets and a long merge does not stall control.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pynng

from pyproof.actors import protocol as p
from pyproof.actors.lookup import (
    Element,
    LookupError_,
    catalog_elements,
    file_elements,
    select_ranges,
)
from pyproof.actors.output_files import (
    OutputFiles,
    check_output_dataset,
    register_output_dataset,
)
from pyproof.logs import get_logger
from pyproof.merging import merge_outputs
from pyproof.packetizer import DEFAULT_DATA_KIND, make_packetizer
from pyproof.packetizer.base import CYCLES, Packetizer, WorkRange
from pyproof.transport import sealing
from pyproof.transport.codec import EncodeError, RemoteError
from pyproof.transport.frames import chunk_frame_parts, encode_frame
from pyproof.transport.tls import TLSError, TLSSettings
from pyproof.transport.wire import send_parts

PROGRESS_PERIOD = 0.25
FINAL_FRAME_GRACE = 2.0
CHUNK_SIZE = 8 * 1024 * 1024
WORKER_HOST = socket.gethostname()


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


class QueryRun:
    """State of one query on the master. Methods are called from one thread."""

    def __init__(self, *, query_id: str, session_id: str, spec: dict[str, Any], user: str = "",
                 workers: list[str], keep: Any = None, data_key: bytes = b"",
                 outbox: pynng.Push0 | None = None) -> None:
        self.data_key = data_key
        self.keep = keep  # called with (query id, final frame) to keep the outcome
        self.query_id = query_id
        self.session_id = session_id
        self.spec = spec
        self.workers = list(workers)
        self.log = get_logger().bind(query=query_id)
        self.state = "preparing"
        self.started = time.monotonic()
        self.user = user
        self.elements: list[Element] = []
        self.missing: list[dict[str, Any]] = []
        self.parts: list[list[int]] = []
        self.packetizer: Packetizer | None = None
        self.packets: dict[int, tuple[int, int, int]] = {}  # id -> (element, start, stop)
        self.total = 0
        self.outputs: dict[str, Any] = {}
        self.processed = 0            # entries reported processed (progress)
        self.delivered = 0            # entries whose outputs were merged (exactly once)
        self.bytes = 0
        self.tally: dict[str, WorkerTally] = {worker_id(w): WorkerTally() for w in workers}
        self.duplicates = 0
        self.requeued: list[dict[str, Any]] = []
        self.concatenate = tuple(spec.get("concatenate") or ())
        self._last_progress = 0.0
        self._lookup_error: RemoteError | None = None
        if outbox is not None:  # client-dials mode: the session's listening socket
            self.client, self._own_client = outbox, False
        else:  # callback mode: dial the client back, in the background (never block here)
            self.client, self._own_client = pynng.Push0(), True
            try:  # a client that listens with TLS is checked against our CA
                tls = TLSSettings.from_env().callback_config(spec["client_address"])
                if tls is not None:
                    self.client.tls_config = tls
                self.client.dial(spec["client_address"], block=False)
            except (TLSError, pynng.NNGException) as exc:  # fail this query, not the plane
                self._lookup_error = RemoteError(
                    type="TLSError", message=f"cannot dial the client back: {exc}",
                    traceback="", context={"client": spec["client_address"]})
        self._packetizer: Packetizer | None = None  # built by the look-up thread
        self.lost: set[str] = set()
        # files selectors write (ctx.output_file): kept for accepted packets only
        self.output_files = OutputFiles(spec["output_dir"]) if spec.get("output_dir") else None
        self.output_dataset: dict[str, Any] | None = None
        self._finish_thread: threading.Thread | None = None
        self._finish_error: RemoteError | None = None
        self._lookup_thread = threading.Thread(target=self._lookup, daemon=True)
        self._lookup_thread.start()

    # -- preparation (its own thread; the data thread answers WAIT meanwhile) --
    def _lookup(self) -> None:
        try:
            if self.spec.get("output_dataset"):
                check_output_dataset(self.spec["output_dataset"], self.user,
                                     overwrite=bool(self.spec.get("output_overwrite")))
            if self.spec.get("cycles") is not None:
                work = [WorkRange(element=CYCLES, entry_start=0,
                                  entry_stop=int(self.spec["cycles"]))]
                kind = self.spec.get("packetizer") or "unit"
            elif self.spec.get("files") is not None:
                work, kind = self._file_work()
            else:
                work, kind = self._data_work()
            params = dict(self.spec.get("packetizer_params") or {})
            if kind == "multi":
                params.setdefault("parts", self.parts)
            if kind == "adaptive" and any(e.host for e in self.elements):
                # locality: workers prefer files on their own host (all workers run on
                # the daemon's host in this version)
                params.setdefault("element_hosts", {i: e.host for i, e in
                                                    enumerate(self.elements) if e.host})
                params.setdefault("worker_hosts", {w: WORKER_HOST for w in self.workers})
            self._packetizer = make_packetizer(kind, work, workers=max(1, len(self.workers)),
                                               **params)
            self.total = sum(r.entries for r in work)
            self.log.info("query_prepared", elements=len(self.elements), entries=self.total,
                          packetizer=kind)
        except LookupError_ as exc:
            self._lookup_error = RemoteError(type="DatasetError", message=str(exc),
                                             traceback="", context=exc.context)
        except Exception as exc:
            self._lookup_error = RemoteError.from_exception(exc, stage="lookup")

    def _file_work(self) -> tuple[list[WorkRange], str]:
        """A per-file task: one unit per file, files not opened here (they may be bad)."""
        self.elements = [Element(path=path, tree=tree or "", entries=1)
                         for path, tree in self.spec["files"]]
        work = [WorkRange(element=i, entry_start=0, entry_stop=1)
                for i in range(len(self.elements))]
        return work, self.spec.get("packetizer") or "file"

    def _data_work(self) -> tuple[list[WorkRange], str]:
        branches = self.spec.get("branches")
        skip = self.spec.get("on_missing") == "skip"
        kind = self.spec.get("packetizer") or DEFAULT_DATA_KIND
        if self.spec.get("dataset_spec"):
            self.elements, self.missing, parts = catalog_elements(
                self.spec["dataset_spec"], self.user, branches, skip_missing=skip)
            if parts > 1:  # `a,b`: one after the other, the selector told by ctx.dataset
                self.parts = [[i for i, e in enumerate(self.elements) if e.part == k]
                              for k in range(parts)]
                params = self.spec.get("packetizer_params") or {}
                self.spec = {**self.spec, "packetizer_params": {"part_kind": kind,
                                                                "params": params}}
                kind = "multi"
        else:
            self.elements, self.missing = file_elements(self.spec["dataset"], branches,
                                                        skip_missing=skip)
        work = select_ranges(self.elements, int(self.spec.get("first") or 0),
                             self.spec.get("entries"))
        return work, kind

    # -- worker requests ---------------------------------------------------
    def handle(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        worker = f"{p.require(payload, 'worker', str)}#{p.require(payload, 'pid', int)}"
        if self.state in ("failed", "stopped"):
            return p.ABORT, {"reason": f"query {self.query_id} {self.state}"}
        if self.state in ("finishing", "finished"):
            return p.DONE, {}
        if worker in self.lost:
            return p.ABORT, {"reason": f"{worker} was declared lost"}
        self.tally.setdefault(worker_id(worker), WorkerTally())
        if kind == p.FAILED:
            error = payload.get("error")
            if not isinstance(error, RemoteError):
                error = RemoteError(type="WorkerError", message=repr(error), traceback="",
                                    context={"worker": worker})
            self.fail(error)
            return p.ABORT, {"reason": "query failed"}
        self._prepare_done()
        if self.state != "running":
            return (p.ABORT, {"reason": "query failed"}) if self.state == "failed" else (
                p.WAIT, {})
        assert self.packetizer is not None
        if worker not in self.workers:  # joined before the master heard of it
            self.worker_joined(worker)
        self._reports(worker, payload.get("processed") or [])
        if kind == p.OUTPUTS:
            ids = frozenset(p.require(payload, "packets", list))
            files = self._reported_files(worker, payload)
            if files is None:
                return p.ABORT, {"reason": "bad output files"}
            accepted = self.packetizer.accept_output(worker, ids)
            if files and self.output_files is not None:
                if accepted:
                    self.output_files.keep(files, min(self.packets[i][:2] for i in ids))
                else:
                    self.output_files.refuse(files)
            if accepted:
                try:
                    merge_outputs(self.outputs, p.require(payload, "outputs", dict),
                                  concatenate=self.concatenate)
                except Exception as exc:
                    self.fail(RemoteError.from_exception(exc, stage="merge", worker=worker))
                    return p.ABORT, {"reason": "merge failed"}
                for pid in ids:
                    _, start, stop = self.packets[pid]
                    self.delivered += stop - start
            else:
                self.duplicates += 1
                self.log.warning("output_refused", worker=worker, packets=sorted(ids))
            self._maybe_finish()
            return p.ACK, {"accepted": accepted}
        if kind != p.NEXT:
            raise p.ProtocolViolation(f"unknown request {kind!r}")
        packet = self.packetizer.next_packet(worker, time.monotonic())
        if packet is None:
            self._maybe_finish()
            return (p.DONE, {}) if self.state == "finished" else (p.WAIT, {})
        self.packets[packet.packet_id] = (packet.element, packet.entry_start, packet.entry_stop)
        reply: dict[str, Any] = {"packet": {
            "packet_id": packet.packet_id, "element": packet.element,
            "entry_start": packet.entry_start, "entry_stop": packet.entry_stop}}
        if packet.element != CYCLES:
            element = self.elements[packet.element]
            reply["path"], reply["tree"] = element.path, element.tree
            if element.dataset:
                reply["dataset"] = element.dataset
            if element.friend_path:
                reply["friend_path"] = element.friend_path
                reply["friend_tree"] = element.friend_tree
        return p.PACKET, reply

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
            self.fail(RemoteError(type="OutputFileError", message=str(exc), traceback="",
                                  context={"worker": worker}))
            return None

    def _prepare_done(self) -> None:
        if self.state != "preparing" or self._lookup_thread.is_alive():
            return
        if self._lookup_error is not None:
            self.fail(self._lookup_error)
        else:
            self.packetizer = self._packetizer
            assert self.packetizer is not None
            for worker in self.workers:
                self.packetizer.add_worker(worker, time.monotonic())
            self.state = "running"
            self._maybe_finish()

    def _reports(self, worker: str, reports: list[Any]) -> None:
        assert self.packetizer is not None
        tally = self.tally[worker_id(worker)]
        for report in reports:
            pid = p.require(report, "packet", int)
            seconds = float(report.get("seconds", 0.0))
            self.packetizer.packet_processed(worker, pid, time.monotonic(), seconds=seconds)
            entries = int(report.get("entries", 0))
            nbytes = int(report.get("bytes", 0))
            tally.entries += entries
            tally.packets += 1
            tally.bytes += nbytes
            tally.seconds += seconds
            self.processed += entries
            self.bytes += nbytes

    def _maybe_finish(self) -> None:
        if self.state == "running" and self.packetizer is not None and self.packetizer.finished:
            if self.packetizer.poisoned and self.spec.get("on_missing") != "skip":
                self._fail_poisoned()
                return
            if self.output_files is not None and (self.output_files.exists()
                                                  or self.spec.get("output_dataset")):
                # sweeping and registering read files: off the data thread
                self.state = "finishing"
                self._finish_thread = threading.Thread(target=self._finish_files, daemon=True)
                self._finish_thread.start()
                return
            self._send_result()

    def _fail_poisoned(self) -> None:
        assert self.packetizer is not None
        poisoned = self.packetizer.poisoned
        worst = poisoned[0]
        self.fail(RemoteError(
            type="PoisonedPacket",
            message=f"{len(poisoned)} packet(s) killed the worker that processed them "
                    f"{len(worst.workers)} times and were given up (poisoned); run "
                    "with on_missing='skip' to get the rest; reasons: "
                    f"{', '.join(sorted(set(worst.reasons)))}",
            traceback="", context=self._range_dict(worst)))

    def _finish_files(self) -> None:
        assert self.output_files is not None
        try:
            removed = self.output_files.sweep()
            if removed:
                self.log.info("output_files_swept", files=len(removed))
            name = self.spec.get("output_dataset")
            if name:
                if not self.output_files.kept:
                    raise LookupError_(f"output_dataset={name!r}: the selector wrote no files "
                                       "(write them at paths from ctx.output_file(...))",
                                       dataset=name)
                self.output_dataset = register_output_dataset(
                    name, self.user, self.output_files.kept,
                    overwrite=bool(self.spec.get("output_overwrite")))
                self.log.info("output_dataset_registered", dataset=self.output_dataset["name"],
                              files=len(self.output_files.kept))
        except LookupError_ as exc:
            self._finish_error = RemoteError(type="DatasetError", message=str(exc),
                                             traceback="", context=exc.context)
        except Exception as exc:
            self._finish_error = RemoteError.from_exception(exc, stage="output_dataset")

    def _finish_done(self) -> None:
        thread = self._finish_thread
        if self.state != "finishing" or thread is None or thread.is_alive():
            return
        if self._finish_error is not None:
            self.state = "running"  # so that fail() ends it and removes its files
            self.fail(self._finish_error)
        else:
            self._send_result()

    def _send_result(self) -> None:
        self.state = "finished"
        self._send_client(p.RESULT, {"query": self.query_id, "outputs": self.outputs,
                                     "stats": self.stats(), "lineage": self.lineage()},
                          final=True)
        self.log.info("query_finished", entries=self.delivered,
                      seconds=round(time.monotonic() - self.started, 3))

    # -- ending ------------------------------------------------------------
    def fail(self, error: RemoteError) -> None:
        # while finishing, the outputs are being registered: that ends on its own (bounded)
        if self.state in ("failed", "finishing", "finished", "stopped"):
            return
        self.state = "failed"
        if self.output_files is not None:
            self.output_files.discard()
        self.log.error("query_failed", error=str(error), **error.context)
        self._send_client(p.ERROR, {"query": self.query_id, "error": error,
                                    "lineage": self.lineage()}, final=True)

    def stop(self, reason: str) -> None:
        if self.state == "finishing":
            return
        self.fail(RemoteError(type="QueryStopped", message=reason, traceback="", context={}))
        self.state = "stopped"

    def worker_joined(self, worker: str) -> None:
        if worker in self.workers or worker in self.lost:
            return
        self.workers.append(worker)
        self.tally.setdefault(worker_id(worker), WorkerTally())
        if self.packetizer is not None:
            self.packetizer.add_worker(worker, time.monotonic())
            self.log.info("worker_joined", worker=worker)

    def worker_lost(self, worker: str, how: str = "") -> None:
        self.lost.add(worker)
        if worker in self.workers:
            self.workers.remove(worker)
        if self.packetizer is None or self.state != "running":
            return
        ranges = self.packetizer.worker_lost(worker, time.monotonic(),
                                             reason=f"{worker} died" + (f" ({how})" if how else ""))
        self.log.warning("worker_lost", worker=worker, requeued=len(ranges))
        for r in ranges:
            self.requeued.append({"worker": worker, "element": r.element,
                                  "entry_start": r.entry_start, "entry_stop": r.entry_stop,
                                  "reason": "worker lost"})
        if self.packetizer.poisoned and self.spec.get("on_missing") != "skip":
            self._fail_poisoned()  # the first poisoned packet fails the query: no waiting
            return
        self._maybe_finish()

    def tick(self, now: float) -> None:
        if self.state in ("preparing", "running"):
            self._prepare_done()
        self._finish_done()
        if self.state == "running" and now - self._last_progress >= PROGRESS_PERIOD:
            self._last_progress = now
            self._send_client(p.PROGRESS, {
                "query": self.query_id, "entries": self.processed, "total": self.total,
                "bytes": self.bytes, "elapsed": now - self.started,
                "workers": {w: t.entries for w, t in self.tally.items()}})

    def stats(self) -> dict[str, Any]:
        return {"entries": self.delivered, "bytes_read": self.bytes,
                "wall_time": time.monotonic() - self.started,
                "packets": len(self.packets),
                "workers": {w: t.as_dict() for w, t in self.tally.items()}}

    def lineage(self) -> dict[str, Any]:
        poisoned = self.packetizer.poisoned if self.packetizer else ()
        return {"entries_requested": self.total, "entries_processed": self.delivered,
                "missing": list(self.missing) + [
                    self._range_dict(r) | {"reason": "poisoned: killed its workers"}
                    for r in poisoned],
                "packets": len(self.packets), "duplicates_dropped": self.duplicates,
                "requeued": list(self.requeued),
                "poisoned": [self._range_dict(r) | {"workers": list(r.workers),
                                                    "reasons": list(r.reasons)}
                             for r in poisoned],
                "output_files": self.output_files.kept if self.output_files else [],
                "output_dataset": self.output_dataset,
                "elements": [{"file": e.path, "tree": e.tree, "entries": e.entries,
                              "dataset": e.dataset} for e in self.elements]}

    def _range_dict(self, r: Any) -> dict[str, Any]:
        where: dict[str, Any] = {"entry_start": r.entry_start, "entry_stop": r.entry_stop}
        if r.element != CYCLES and r.element < len(self.elements):
            where["file"] = self.elements[r.element].path
            where["tree"] = self.elements[r.element].tree
        return where

    def _send_client(self, kind: str, payload: dict[str, Any], *, final: bool = False) -> None:
        try:
            data = encode_frame(kind, payload, session=self.session_id)
        except EncodeError as exc:
            if kind != p.RESULT:
                raise
            # an output the wire cannot carry: the user gets an error naming it
            self.state = "failed"
            error = RemoteError(type="OutputError", message=f"outputs cannot be sent: {exc}",
                                traceback="", context={})
            kind = p.ERROR
            data = encode_frame(kind, {"query": self.query_id, "error": error,
                                       "lineage": self.lineage()}, session=self.session_id)
        if final and self.keep is not None:
            self.keep(self.query_id, data)
        # a large result travels as chunk frames (each sealed), never as one huge frame
        pieces = [[data]]
        if len(data) > CHUNK_SIZE:
            pieces = chunk_frame_parts(data, stream=self.query_id, chunk_size=CHUNK_SIZE,
                                       session=self.session_id)
        for parts in pieces:
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

    def close(self) -> None:
        if self._own_client:
            self.client.close()
