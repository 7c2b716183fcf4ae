"""The master's data plane: one thread serving workers on an nng rep socket.

Workers send every request (next packet, outputs, failure) to this one
socket, so the packetizer and the merge are driven from a single thread with
no locks around them. The actor thread only hands queries in and out through
`start_query` / `stop_query` / `worker_lost`, which are queued as commands.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

import pynng

from pyproof.actors import protocol as p
from pyproof.actors.master_query import QueryRun
from pyproof.logs import get_logger
from pyproof.transport.codec import ProtocolError, RemoteError
from pyproof.transport.frames import CHUNK, Frame, Reassembler, decode_frame, encode_frame
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT, recv_view

POLL_MS = 100  # a recv timeout, not a busy loop: ticks for progress and commands
KEEP_RESULTS = 10
KEEP_CHUNK_ANSWERS = 1024  # as many as the reassembler remembers finished streams


class MasterPlane:
    def __init__(self, *, session_id: str, address: str, data_key: bytes = b"") -> None:
        self.session_id = session_id
        self.data_key = data_key
        self.address = address
        self.log = get_logger()
        self.socket = pynng.Rep0(recv_timeout=POLL_MS, send_timeout=5_000,
                                 recv_max_size=RECV_LIMIT)
        self.socket.listen(address)
        self.workers: list[str] = []
        self.lost_reasons: dict[str, str] = {}  # worker -> how it died (from its supervisor)
        self.query: QueryRun | None = None
        self.accepted: str | None = None
        self.stopped: set[str] = set()  # actor thread only
        self.outbox: pynng.Push0 | None = None
        self.outbox_address = ""
        # finished queries' RESULT/ERROR frames, for clients that were away (bounded)
        self.results: dict[str, bytes] = {}
        # large worker requests arrive in chunks (see worker_loop._send_chunks)
        # one stream at most per worker at a time; a lost worker's partial one is dropped
        self._reassembler = Reassembler(max_streams=4096, remember=KEEP_CHUNK_ANSWERS)
        self._chunk_answers: dict[str, bytes] = {}
        self.finished_queries: list[str] = []
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="master-plane", daemon=True)
        self._thread.start()

    # -- called from the actor thread --------------------------------------
    def worker_joined(self, name: str) -> None:
        self._commands.put(("joined", name))

    def start_query(self, query_id: str, spec: dict[str, Any], user: str = "") -> None:
        self.accepted = query_id  # set here, on the actor thread: busy() sees it at once
        self._commands.put(("start", (query_id, spec, user)))

    def stop_query(self, query_id: str, reason: str) -> None:
        if query_id == self.accepted:  # on the actor thread: the next query may start now
            self.stopped.add(query_id)
            self.accepted = None
        self._commands.put(("stop", (query_id, reason)))

    def worker_lost(self, worker: str, reason: str = "") -> None:
        self.lost_reasons[worker] = reason
        self._commands.put(("lost", worker))

    def busy(self) -> bool:
        q = self.query
        if self.accepted is None:
            return False
        if q is None or q.query_id != self.accepted:
            return True  # accepted, not yet taken in by the data thread
        return q.state in ("preparing", "running", "finishing")

    def knows_query(self, query_id: str) -> bool:
        return (query_id == self.accepted or query_id in self.stopped
                or query_id in self.finished_queries)

    def statistics(self) -> dict[str, Any]:
        q = self.query
        return {"address": self.address, "workers": list(self.workers),
                "results": list(self.results),
                "query": None if q is None else {"id": q.query_id, "state": q.state,
                                                 "processed": q.processed, "total": q.total}}

    def open_outbox(self, address: str, tls: dict[str, Any] | None = None) -> str:
        """Listen for clients that dial in (behind a firewall, or through an SSH tunnel)."""
        if self.outbox is None:
            outbox = pynng.Push0()
            if tls:
                address = f"tls+{address}" if address.startswith("tcp://") else address
                outbox.tls_config = TLSSettings(**tls).server_config()
            outbox.listen(address)
            if "tcp://" in address and address.endswith(":0"):
                port = socket.ntohs(outbox.listeners[0].local_address.port)  # pynng: net order
                address = f"{address[:-2]}:{port}"
            self.outbox, self.outbox_address = outbox, address
        return self.outbox_address

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._thread.join(timeout)
        if self.query is not None:
            self.query.close()  # its socket to the client (callback mode)
        self.socket.close()
        if self.outbox is not None:
            self.outbox.close()

    # -- the data-plane thread ----------------------------------------------
    def _serve(self) -> None:
        while not self._closed.is_set():
            self._run_commands()
            try:
                raw = recv_view(self.socket)  # worker outputs are read in place
            except pynng.Timeout:
                raw = None
            except pynng.Closed:
                return
            if raw is not None:
                # a query started by the actor is queued before its workers are told
                # of it: take it in before answering them
                self._run_commands()
                try:
                    reply = self._answer(raw)
                except Exception as exc:  # likewise: answer, fail the query, keep serving
                    self.log.error("request_failed", error=repr(exc), exc_info=True)
                    if self.query is not None:
                        self.query.fail(RemoteError.from_exception(exc, stage="master"))
                    reply = encode_frame(p.ABORT, {"reason": "master error"},
                                         session=self.session_id)
                try:
                    self.socket.send(reply)
                except (pynng.Timeout, pynng.Closed):
                    self.log.warning("reply_not_sent")
            if self.query is not None:
                try:
                    self.query.tick(time.monotonic())
                except Exception as exc:  # a bug must fail the query, not the data plane
                    self.log.error("query_tick_failed", error=repr(exc), exc_info=True)
                    self.query.fail(RemoteError.from_exception(exc, stage="master"))

    def _run_commands(self) -> None:
        while True:
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "joined":
                if arg not in self.workers:
                    self.workers.append(arg)
                if self.query is not None:
                    self.query.worker_joined(arg)
            elif command == "start":
                query_id, spec, user = arg
                if self.query is not None:
                    self.query.close()
                    self.finished_queries = [*self.finished_queries[-99:], self.query.query_id]
                self.query = QueryRun(query_id=query_id, session_id=self.session_id,
                                      spec=spec, user=user, workers=self.workers, keep=self._keep,
                                      data_key=self.data_key,
                                      outbox=None if spec.get("client_address") else self.outbox)
            elif command == "stop":
                query_id, reason = arg
                if self.query is not None and self.query.query_id == query_id:
                    self.query.stop(reason)
            elif command == "lost":
                if arg in self.workers:
                    self.workers.remove(arg)
                for stream in self._reassembler.open_streams():  # worker#pid/query/n
                    if stream.startswith(f"{arg}/"):
                        self._reassembler.discard(stream)
                if self.query is not None:
                    self.query.worker_lost(arg, self.lost_reasons.pop(arg, ""))

    def _keep(self, query_id: str, frame: bytes) -> None:
        self.results[query_id] = frame
        while len(self.results) > KEEP_RESULTS:
            del self.results[next(iter(self.results))]

    def _answer(self, raw: bytes | memoryview) -> bytes:
        try:
            frame = decode_frame(raw)
            if frame.type == CHUNK:  # a large request (outputs), in pieces
                return self._answer_chunk(frame)
        except ProtocolError as exc:
            self.log.warning("bad_request", error=str(exc))
            return encode_frame(p.ERROR, {"reason": f"protocol error: {exc}"},
                                session=self.session_id)
        return self._answer_frame(frame)

    def _answer_chunk(self, frame: Frame) -> bytes:
        """"more" until the last chunk, then the answer to the whole request.

        A chunk resent after its stream completed (nng's Req resends when a reply
        is lost) gets the same answer again, never a second merge.
        """
        stream = frame.payload.get("stream") if isinstance(frame.payload, dict) else None
        if isinstance(stream, str) and stream in self._chunk_answers:
            return self._chunk_answers[stream]
        whole = self._reassembler.add(frame)  # checks the chunk (ProtocolError)
        if whole is None:
            if self._reassembler.finished(stream):  # an old resend: it was answered
                return encode_frame(p.ACK, {"accepted": False}, session=self.session_id)
            return encode_frame(p.ACK, {"more": True}, session=self.session_id)
        answer = self._chunk_answers[stream] = self._answer_frame(whole)
        while len(self._chunk_answers) > KEEP_CHUNK_ANSWERS:
            del self._chunk_answers[next(iter(self._chunk_answers))]
        return answer

    def _answer_frame(self, frame: Frame) -> bytes:
        try:
            payload = frame.payload
            query_id = p.require(payload, "query", str)
            q = self.query
            if q is None or q.query_id != query_id:
                kind, body = p.ABORT, {"reason": f"no running query {query_id}"}
            else:
                kind, body = q.handle(frame.type, payload)
        except (ProtocolError, p.ProtocolViolation) as exc:
            self.log.warning("bad_request", error=str(exc))
            kind, body = p.ERROR, {"reason": f"protocol error: {exc}"}
        return encode_frame(kind, body, session=self.session_id)
