"""The master's data plane: one thread serving workers on an nng rep socket, and the queue.

Workers send every request (next packet, outputs, failure) to this one
socket; each is fed to the query's `QueryRun` (its core decides, under the
run's lock). Queries a session is given while one runs wait in a queue and
start, in order, the moment the one before ends (the run tells the plane:
no polling). A worker asking for a packet when there is none yet (its query is
queued, looking up, or every packet is out) is not told "wait, ask again": its
request is held (a Rep0 context keeps its reply route) and answered as soon as
there is work or an end, after any event the plane sees, or with WAIT after
`HOLD_SECONDS` at most. The actor thread calls `start_query`, `stop_query`,
`worker_joined` and `worker_lost` directly; they only take short locks.

Workers hear of a new query here too (`announce`): each keeps a WATCH request
held on this socket, answered with the query (RUN) the moment the actor thread
accepts it, a Thespian hop and message per worker fewer than the actor's
RunQuery, which then goes only to workers that do not watch (see
protocol.py). A RUN lists every query running or queued, in order, so a worker
that switches from RunQuery to watching never queues a later query first.

Lock order: a run's lock may be held while taking the plane's (`_query_ended`),
never the other way round.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from typing import Any

import pynng

from pyproof.actors import kept, last_words
from pyproof.actors import protocol as p
from pyproof.actors.lookup import LookupCache
from pyproof.actors.master_query import MERGE_JOIN, Merger, QueryRun
from pyproof.actors.thread_beats import ThreadBeats
from pyproof.datasets import records as _records  # noqa: F401  (decodes its CBOR tag)
from pyproof.logs import get_logger
from pyproof.query.core import PROGRESS_PERIOD
from pyproof.query.spec import QuerySpec
from pyproof.transport.codec import ProtocolError, RemoteError
from pyproof.transport.frames import CHUNK, Frame, Reassembler, decode_frame, encode_frame
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT, ContextIO, SendGuard

BUSY_POLL_MS = int(PROGRESS_PERIOD * 1000 / 2)  # while a query runs: progress and feedback ticks
IDLE_POLL_MS = 2_000  # nothing to tick: only `close()` is waited for
KEEP_RESULTS = 10
KEEP_HISTORY = 100
KEEP_CHUNK_ANSWERS = 1024  # as many as the reassembler remembers finished streams
HOLD_SECONDS = 2.0  # a worker's "next" with nothing to give is held this long at most
SEND_TIMEOUT_MS = 5_000  # a reply that cannot leave by then is dropped (the worker asks again)
TICK_SECONDS = 0.02  # the query's tick (progress, feedback) and heartbeats, at most this often
KEEP_CALLBACKS = 4  # sockets dialled back to clients, kept for their next queries
CALLBACK_BUFFER = 64  # frames a socket dialled back to a client queues (see _callback)


class MasterPlane:
    def __init__(self, *, session_id: str, address: str, data_key: bytes = b"",
                 run_dir: str = "", serve: bool = True) -> None:
        """Listens on `address` at once; serves it from `serve()` on (at once if `serve`)."""
        self.session_id = session_id
        self.run_dir = run_dir
        self.data_key = data_key
        self.address = address
        self.log = get_logger()
        self.socket = pynng.Rep0(recv_timeout=IDLE_POLL_MS, send_timeout=SEND_TIMEOUT_MS,
                                 recv_max_size=RECV_LIMIT)
        self.socket.listen(address)
        self.workers: list[str] = []
        self.query: QueryRun | None = None  # the running one (or the last to run)
        self.queued: deque[QueryRun] = deque()
        self.history: deque[QueryRun] = deque(maxlen=KEEP_HISTORY)
        self.outbox: pynng.Push0 | None = None
        self.outbox_address = ""
        # callback mode: the socket dialled to a client's address, reused by its next
        # queries (no dial, no connection to wait for, no close per query); oldest first
        self.callbacks: dict[str, pynng.Push0] = {}
        self._lock = threading.RLock()
        # finished queries' RESULT/ERROR frames, for clients that were away (bounded)
        # and those of queries a master of this session before us was stuck in (it left
        # them for us: last_words.py), so their clients hear why, not "lost"
        self.results: dict[str, bytes] = last_words.read(run_dir, session_id)
        # kept frames being sent again on a client's data plane (`resend_kept`): nonces
        # asked for (a retried request is not sent twice) and the addresses sent to (their
        # sockets are not closed under the send)
        self._resent: dict[str, str] = {}
        self._resending: dict[str, int] = {}
        # large worker requests arrive in chunks (see worker_loop._send_chunks)
        # one stream at most per worker at a time; a lost worker's partial one is dropped
        self._reassembler = Reassembler(max_streams=4096, remember=KEEP_CHUNK_ANSWERS)
        self._chunk_answers: dict[str, bytes] = {}
        self.lookup_cache = LookupCache()  # entry counts of files already looked up
        self._closed = threading.Event()
        # requests held for work: (context, next-request payload, when held)
        self._held: list[tuple[pynng.Context, dict[str, Any], float]] = []
        self._gone: set[str] = set()  # lost workers' names: their held requests are dropped
        # workers that watch for queries (WATCH, see `announce`): their held request,
        # if one is held now, and when it came; and the running or queued queries each
        # was told of by RUN (the others are sent with its next WATCH)
        self._watches: dict[str, tuple[pynng.Context, float]] = {}
        self._watchers: dict[str, set[str]] = {}
        self._leaving: set[str] = set()  # workers being removed: their watches are refused
        # this thread and the merge threads stamp each turn; the master's answer to its
        # supervisor's ping checks them (Master.healthy)
        self.beats = ThreadBeats()
        self.merger = Merger(self.beats)  # every query's merges, on one thread
        # replies being sent now (any thread may send: this one, the actor's, a look-up
        # or merge thread through `_wake`): `close` waits for them before it closes the
        # socket, since nng aborts the process when a context is sent on as its socket
        # closes (seen about once in 20 runs of test_master_hold)
        self._sends = SendGuard()
        # the serving thread's receive and send (aios made once: the grant path); their
        # waits are cancelled by `close`, never closed under them
        self._io = ContextIO()
        self._poll_ms = IDLE_POLL_MS  # the serving thread's wait for a request
        self._thread = threading.Thread(target=self._serve, name="master-plane", daemon=True)
        if serve:
            self.serve()

    def serve(self) -> None:
        """Start the serving thread, and the merge thread (now, while idle: the first
        query's merge waits for nothing); once. The master calls it once its Started is
        sent: threads started before the send held it up (they take the GIL as they
        start), and the session's start with it. Until then, workers' requests wait in
        the socket's queue."""
        self.merger.start()
        if self._thread.ident is None:
            self._thread.start()

    # -- called from the actor thread --------------------------------------
    def worker_joined(self, name: str) -> None:
        with self._lock:
            if name not in self.workers:
                self.workers.append(name)
            q = self.query
        if q is not None:
            q.worker_joined(name)

    def start_query(self, query_id: str, spec: QuerySpec, user: str = "") -> set[str]:
        """Run the query now, or after the ones before it (a queue, in order); the workers
        that watch for queries are told of it (`announce`) before its look-up starts.
        Returns their names (the others must hear of it by the actor's RunQuery)."""
        run = QueryRun(query_id=query_id, session_id=self.session_id, spec=spec, user=user,
                       workers=list(self.workers), keep=self._keep, data_key=self.data_key,
                       outbox=None if spec.client_address else self.outbox,
                       callback=self._callback(spec.client_address),
                       on_end=self._query_ended, on_change=self._wake,
                       lookup_cache=self.lookup_cache,
                       run_dir=self.run_dir, beats=self.beats, merger=self.merger)
        with self._lock:
            queued = self.query is not None and self.query.core.busy
            if queued:
                self.queued.append(run)
        if queued:
            return self.announce(query_id)
        # begun without the plane's lock: `_begin` may wait for the last query's
        # socket or merges, whose thread may be waiting for that lock (answering held
        # requests as its query ended), and answers held requests itself (a run's
        # lock is never taken under the plane's). Only this (actor) thread begins a
        # query while none is busy.
        return self._begin(run, announce=True)

    def announce(self, query_id: str) -> set[str]:
        """Tell the workers that watch for queries of `query_id` (running or queued):
        RUN on their held WATCH at once; a watcher whose request is not held now (its
        next one is on the way) gets it in the answer to that one. Returns the names of
        every watcher: the others must hear of it by the actor's RunQuery.

        Actor thread; the RUN is encoded once, sent without the plane's lock.
        """
        with self._lock:
            runs = self._active_runs()
            if self._closed.is_set() or query_id not in (r.query_id for r in runs):
                return set()
        frame = self._run_frame(runs)
        if frame is None:
            return set()  # every worker hears of it by RunQuery
        # only the actor thread announces: `runs` is still what runs (or one has ended)
        with self._lock:
            watchers = set(self._watchers)
            watches, self._watches = self._watches, {}
            for name in watches:
                self._watchers[name].update(r.query_id for r in runs)
        if watches:
            for name, (ctx, _) in watches.items():
                if not self._reply(ctx, frame):
                    # not sent (closing, or the send failed): told at its next WATCH
                    with self._lock:
                        if name in self._watchers:
                            self._watchers[name].discard(query_id)
                self._close_context(ctx)
        return watchers

    def _active_runs(self) -> list[QueryRun]:
        """The running query (if busy) and the queued ones, in order (lock held)."""
        return ([self.query] if self.query is not None and self.query.core.busy else []) \
            + list(self.queued)

    def _run_frame(self, runs: list[QueryRun]) -> bytes | None:
        """RUN: the queries, in order, with the whole spec (the daemon's fields too); None
        if it cannot be encoded (it came as CBOR: never seen), logged: RunQuery then."""
        try:
            return encode_frame(p.RUN, {"queries": [
                {"query": r.query_id, "spec": r.spec.to_wire(),
                 "output_dir": r.spec.output_dir,
                 "packages": [dict(x) for x in r.spec.packages]} for r in runs]},
                session=self.session_id)
        except Exception as exc:  # EncodeError, or a bug: the queries still reach workers
            self.log.error("run_not_encodable", queries=[r.query_id for r in runs],
                           error=repr(exc))
            return None

    def _watch(self, ctx: pynng.Context, payload: Any) -> bytes | None:
        """A WATCH request (serving thread): RUN now if a running or queued query is news to
        the worker (every one after a `fresh` WATCH), else None: the request is held."""
        worker = _incarnation(payload)
        fresh = payload.get("fresh") is True
        with self._lock:
            if worker in self._gone or worker in self._leaving:
                how = "was declared lost" if worker in self._gone else "is leaving"
                return encode_frame(p.ABORT, {"reason": f"{worker} {how}"},
                                    session=self.session_id)
            runs = self._active_runs()
            active = {r.query_id for r in runs}
            told = self._watchers.get(worker)
            told = set() if told is None or fresh else told & active  # the rest ended
            news = [r for r in runs if r.query_id not in told]
            self._watchers[worker] = active if news else told
            old = None
            if not news:
                old = self._watches.pop(worker, None)  # a request it gave up on
                self._watches[worker] = (ctx, time.monotonic())
        if old is not None:
            self._close_context(old[0])
        if not news:
            return None
        frame = self._run_frame(runs)
        if frame is None:  # it watches no more: RunQuery tells it of every query
            with self._lock:
                self._watchers.pop(worker, None)
            return encode_frame(p.ABORT, {"reason": "queries come by RunQuery"},
                                session=self.session_id)
        return frame

    def _expire_watches(self, now: float) -> None:
        """WAIT to watches held for WATCH_HOLD_SECONDS: the worker asks again (it knows
        then that its connection to us works)."""
        with self._lock:
            due = [name for name, (_, since) in self._watches.items()
                   if now - since >= p.WATCH_HOLD_SECONDS]
            expired = [(self._watches.pop(name)[0], name) for name in due]
        for ctx, _ in expired:
            self._reply(ctx, encode_frame(p.WAIT, {"held": p.WATCH_HOLD_SECONDS},
                                          session=self.session_id))
            self._close_context(ctx)

    def _callback(self, address: str) -> pynng.Push0 | None:
        """The socket dialled back to the client at `address` (made on its first query).

        None when there is no address (client-dials mode) or it cannot be dialled: the
        run then dials itself and fails the query with the reason. At most
        KEEP_CALLBACKS are kept; the oldest that no running or queued query uses is
        closed (a client that re-attached listens elsewhere now).
        """
        if not address:
            return None
        with self._lock:
            socket_ = self.callbacks.pop(address, None)
            if socket_ is not None:
                self.callbacks[address] = socket_  # the most recent last
                return socket_
        # a buffer: the queries sharing it send without blocking (progress of one,
        # heartbeats of another queued behind it, in the same turn); with none, the
        # second send of a turn found the pipe busy and was dropped
        socket_ = pynng.Push0(send_buffer_size=CALLBACK_BUFFER)
        try:  # a client that listens with TLS is checked against our CA
            tls = TLSSettings.from_env().callback_config(address)
            if tls is not None:
                socket_.tls_config = tls
            socket_.dial(address, block=False)
        except Exception:  # TLSError, NNGException: the run says why
            socket_.close()
            return None
        with self._lock:
            self.callbacks[address] = socket_
            used = {r.spec.client_address for r in (self.query, *self.queued) if r is not None}
            used.update(self._resending)
            spare = [a for a in self.callbacks if a not in used and a != address]
            gone = [self.callbacks.pop(a) for a in spare[:max(0, len(self.callbacks) -
                                                               KEEP_CALLBACKS)]]
        for old in gone:
            old.close()
        return socket_

    def resend_kept(self, query_id: str, nonce: str, address: str) -> dict[str, Any]:
        """Send `query_id`'s kept final frame again on the client's data plane (kept.py):
        dialled back to `address`, or the outbox when it is "" (a client that dials in).
        Answers at once (actor thread; a thread sends): {"resend": nonce, "bytes": size};
        {"frame": frame} when the frame is small and no data connection is up (the
        control-plane fetch: fine for a small frame, never for a large one);
        {"error": why} if there is no such kept frame (or no way to send a large one).
        """
        with self._lock:
            frame = self.results.get(query_id)
            again = self._resent.get(nonce) == query_id
        if frame is None:
            return {"error": (
                f"session {self.session_id} keeps no result of query {query_id!r}: it never "
                f"ran in this session, has not ended yet (session.queries() lists the queries "
                f"the session knows, with their states), or ended too long ago (the results "
                f"of the last {KEEP_RESULTS} queries are kept)")}
        if again:  # a retry of a request whose frame is on its way: not sent twice
            return {"resend": nonce, "bytes": len(frame)}
        sock = self._callback(address) if address else self.outbox
        if len(frame) <= kept.INLINE_MAX and (sock is None or not sock.pipes):
            # no data connection to the client (a listener our CA does not vouch for, a
            # restarted master's missing outbox; or one still being dialled): a small
            # frame is answered at once
            return {"frame": frame}
        if sock is None:
            return {"error": (
                f"query {query_id}'s kept result ({len(frame) / 1e6:.0f} MB) cannot be sent "
                f"to this client: the session's master has no data connection to it "
                f"({'cannot dial ' + address if address else 'no outbox: it was restarted'}); "
                f"connect to the session again (pyproof.connect(url, session=ID)) and retry")}
        with self._lock:
            self._resent[nonce] = query_id
            while len(self._resent) > KEEP_CHUNK_ANSWERS:
                del self._resent[next(iter(self._resent))]
            self._resending[address] = self._resending.get(address, 0) + 1
        threading.Thread(target=self._send_kept, args=(sock, frame, nonce, address, query_id),
                         daemon=True, name=f"kept-{nonce[:8]}").start()
        self.log.info("kept_result_resend", query=query_id, bytes=len(frame),
                      to=address or "outbox")
        return {"resend": nonce, "bytes": len(frame)}

    def _send_kept(self, sock: pynng.Socket, frame: bytes, nonce: str, address: str,
                   query_id: str) -> None:
        """A resend's thread: every chunk, then the address is free to close again."""
        try:
            sent = kept.send_kept(sock, frame, nonce=nonce, data_key=self.data_key,
                                  session=self.session_id, guard=self._sends)
            if not sent:
                self.log.warning("kept_result_not_sent", query=query_id, to=address or "outbox")
        except Exception as exc:  # Closed under us, a bug: the client's wait is bounded
            self.log.error("kept_result_send_failed", query=query_id, error=repr(exc))
        finally:
            with self._lock:
                left = self._resending.pop(address, 1) - 1
                if left > 0:
                    self._resending[address] = left

    def _begin(self, run: QueryRun, *, announce: bool = False) -> set[str]:
        """Make `run` the running query and start it; with `announce`, its workers are
        told first (a data query's look-up thread start waits for the thread to run)."""
        with self._lock:
            previous = self.query
            if previous is not None:
                self.history.append(previous)
            self.query = run
            for w in self.workers:  # joined while it was queued
                run.worker_joined(w)
            lost = [w for w in list(run.core.workers) if w not in self.workers]
        for w in lost:  # lost while it was queued: no packet may wait for them
            run.worker_lost(w)
        told = self.announce(run.query_id) if announce else set()
        with self._lock:
            self._poll_ms = BUSY_POLL_MS
        run.start()
        if previous is not None:
            previous.close()  # its socket to the client: it has ended
        self._answer_held(time.monotonic())  # workers held for this query: it is its turn
        return told

    def _wake(self) -> None:
        """A run changed off the data-plane thread (look-up, merge...): answer held requests."""
        with self._lock:
            if not self._held:
                return
        self._answer_held(time.monotonic())

    def _query_ended(self, run: QueryRun) -> None:
        """A run ended (any thread): start the next queued query, if any."""
        with self._lock:
            if run is not self.query:
                return
            nxt = self.queued.popleft() if self.queued else None
            if nxt is None:
                self._poll_ms = IDLE_POLL_MS
                return
        self._begin(nxt)

    def stop_query(self, query_id: str, reason: str, *, abort: bool = False) -> bool:
        """Stop (or abort) a running or queued query; False if the plane does not know it."""
        with self._lock:
            run = self._find(query_id)
            if run is None:
                return False
            if run in self.queued:  # never ran: it ends at once (empty, or aborted)
                self.queued.remove(run)
                self.history.append(run)
                run.on_end = None
        run.stop(reason, abort=abort)
        return True

    def _find(self, query_id: str) -> QueryRun | None:
        for run in (self.query, *self.queued, *self.history):
            if run is not None and run.query_id == query_id:
                return run
        return None

    def worker_leaving(self, worker: str) -> None:
        """A worker is being removed: no query begun from now on counts on it (a running one
        keeps it until it has drained: its `worker_lost` follows), nor is told to it (its
        watch is refused: it watches no more)."""
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)
            watch = self._watches.pop(worker, None)
            self._watchers.pop(worker, None)
            self._leaving.add(worker)
        if watch is not None:
            self._reply(watch[0], encode_frame(p.ABORT, {"reason": f"{worker} is leaving"},
                                               session=self.session_id))
            self._close_context(watch[0])

    def worker_lost(self, worker: str, how: str = "") -> None:
        """A worker is gone (`how`: its exit status or signal, from its supervisor)."""
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)
            # a dead worker's held request must not be granted a packet (the next query
            # would count on it); names carry the pid, so they are never reused
            if len(self._gone) > 10_000:
                self._gone.clear()
            self._gone.add(worker)
            self._leaving.discard(worker)
            dropped = [h for h in self._held if _incarnation(h[1]) == worker]
            self._held = [h for h in self._held if _incarnation(h[1]) != worker]
            watch = self._watches.pop(worker, None)
            self._watchers.pop(worker, None)
        for ctx, _, _ in dropped:
            self._refuse_lost(ctx, worker)
        if watch is not None:
            self._refuse_lost(watch[0], worker)
        with self._lock:
            for stream in self._reassembler.open_streams():  # worker#pid/query/n
                if stream.startswith(f"{worker}/"):
                    self._reassembler.discard(stream)
            q = self.query
        if q is not None:
            q.worker_lost(worker, how)

    def busy(self) -> bool:
        with self._lock:
            return bool(self.queued) or (self.query is not None and self.query.core.busy)

    def active_queries(self) -> list[str]:
        """Queries running or queued, in the order they run (for workers that join)."""
        with self._lock:
            runs = self._active_runs()
        return [r.query_id for r in runs]

    def knows_query(self, query_id: str) -> bool:
        with self._lock:
            return self._find(query_id) is not None

    def queries(self) -> list[dict[str, Any]]:
        """Every query this plane remembers, oldest first, as `session.queries()` shows."""
        with self._lock:
            runs = [*self.history, *([self.query] if self.query else []), *self.queued]
        return [r.summary() for r in runs]

    def statistics(self) -> dict[str, Any]:
        q = self.query
        return {"address": self.address, "workers": list(self.workers),
                "results": list(self.results), "queries": self.queries(),
                "watchers": sorted(self._watchers),
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
        # no send starts after this; those under way end first (each is bounded by the
        # socket's send timeout: wait that out at most)
        self._sends.close(max(timeout, SEND_TIMEOUT_MS / 1000 + 0.5))
        self._io.cancel()  # ends the serving thread's wait at once
        if self._thread.ident is not None:  # (it served)
            self._thread.join(timeout)
        self.socket.close()  # no thread waits on it any more (nng aborts if one does)
        with self._lock:
            held, self._held = self._held, []
            watches, self._watches = self._watches, {}
        for ctx, _, _ in held:
            self._close_context(ctx)
        for ctx, _ in watches.values():
            self._close_context(ctx)
        with self._lock:
            runs = [*self.history, *([self.query] if self.query else []), *self.queued]
        for run in runs:
            run.close()  # its socket to the client (callback mode)
        self.merger.close(MERGE_JOIN)  # the merges given so far end first
        if self.outbox is not None:
            self.outbox.close()
        with self._lock:
            callbacks, self.callbacks = list(self.callbacks.values()), {}
        for callback in callbacks:
            callback.close()

    def runs_unlocked(self) -> list[QueryRun]:
        """The running and queued queries, read without the plane's lock (which a stuck
        data thread may hold): for `Master.healthy`, about to end the process."""
        try:
            return [r for r in (self.query, *tuple(self.queued)) if r is not None]
        except RuntimeError:  # the queue changed while read
            return [self.query] if self.query is not None else []

    # -- the data-plane thread ----------------------------------------------
    def _serve(self) -> None:
        try:
            self._serve_loop()
        finally:
            self.beats.forget()
            self._io.close()  # this thread's: no operation of it runs any more

    def _serve_loop(self) -> None:
        """Serve requests until closed.

        The hot path of every packet grant, so: one context is reused from
        request to request (a new one only when a request is held on it, or
        after an error), with this thread's own aios (`ContextIO`); the query's
        tick and the heartbeats run every `TICK_SECONDS`, not per request; held
        requests are looked at only when there are some. Every wait is bounded
        (the poll, the send timeout) and each turn stamps the thread's beat.
        """
        io = self._io
        ctx: pynng.Context | None = None
        next_tick = 0.0
        try:
            while not self._closed.is_set():
                self.beats.stamp()  # every wait below is bounded: a silent thread is stuck
                if ctx is None:
                    try:
                        ctx = self.socket.new_context()
                    except pynng.Closed:
                        return
                try:
                    raw = io.recv(ctx, self._poll_ms)  # worker outputs are read in place
                except pynng.Timeout:
                    raw = None
                except pynng.Closed:  # closing: `close` cancelled the wait
                    return
                if raw is not None:
                    try:
                        reply, hold = self._answer(raw)
                    except Exception as exc:  # answer, fail the query, keep serving
                        self.log.error("request_failed", error=repr(exc), exc_info=True)
                        if self.query is not None:
                            self.query.fail(RemoteError.from_exception(exc, stage="master"))
                        reply, hold = encode_frame(p.ABORT, {"reason": "master error"},
                                                   session=self.session_id), None
                    if hold is not None and hold.get("kind") == p.WATCH:
                        watched = self._watch(ctx, hold)
                        if watched is None:
                            ctx = None  # held (in `_watches`): it keeps the reply route
                        else:
                            reply = watched
                    elif hold is not None:
                        with self._lock:
                            self._held.append((ctx, hold, time.monotonic()))
                        ctx = None  # it keeps the held request's reply route
                    if ctx is not None:
                        try:
                            io.send(ctx, reply, SEND_TIMEOUT_MS)
                        except (pynng.Timeout, pynng.Closed):
                            self.log.warning("reply_not_sent")
                            self._close_context(ctx)
                            ctx = None
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_SECONDS
                    q = self.query
                    if q is not None and q.core.busy:
                        try:
                            q.tick(now)
                        except Exception as exc:  # a bug must fail the query, not the plane
                            self.log.error("query_tick_failed", error=repr(exc), exc_info=True)
                            q.fail(RemoteError.from_exception(exc, stage="master"))
                    self._heartbeats(now)
                    if self._watches:
                        self._expire_watches(now)
                if self._held:  # taken under the lock there; a race only defers to next time
                    self._answer_held(time.monotonic())
        finally:
            if ctx is not None:
                self._close_context(ctx)

    def _heartbeats(self, now: float) -> None:
        """Queued, preparing or finishing queries say they live (see `QueryRun.heartbeat`)."""
        with self._lock:
            runs = [*([self.query] if self.query is not None else []), *self.queued]
        for run in runs:
            try:
                run.heartbeat(now)
            except Exception as exc:  # a lost heartbeat only costs the client a control check
                self.log.warning("heartbeat_failed", query=run.query_id, error=repr(exc))

    def _answer_held(self, now: float) -> None:
        """Ask again for every held request; answer those with work, an end, or held too long.

        Runs after every request, tick and query start (any thread): whatever
        freed work has happened by then. Each held request is taken out under the
        lock, so two threads never answer the same one.
        """
        with self._lock:
            if self._closed.is_set():
                return
            held, self._held = self._held, []
        keep = []
        for ctx, payload, since in held:
            if self._closed.is_set():  # closing: left for `close` to close
                keep.append((ctx, payload, since))
                continue
            if _incarnation(payload) in self._gone:  # lost while held: never a packet
                self._refuse_lost(ctx, _incarnation(payload))
                continue
            try:
                kind, body = self._answer_payload(p.NEXT, {**payload, "processed": []})
            except Exception as exc:  # as for any request: the query fails, the plane serves on
                self.log.error("request_failed", error=repr(exc), exc_info=True)
                kind, body = p.ABORT, {"reason": "master error"}
            if kind == p.WAIT and not body.get("flush") and now - since < HOLD_SECONDS:
                keep.append((ctx, payload, since))
                continue
            if "accepted" in payload:  # held outputs-with-next: their ACK rides along
                body = {**body, "accepted": payload["accepted"]}
            if kind == p.WAIT:  # held to the bound: the worker asks again at once
                body = {**body, "held": round(now - since, 3)}
            self._reply(ctx, encode_frame(kind, body, session=self.session_id))
            self._close_context(ctx)
        with self._lock:
            self._held[:0] = keep

    def _refuse_lost(self, ctx: pynng.Context, worker: str) -> None:
        """A held request of a worker declared lost: ABORT (dropped by nng if it is dead)."""
        self._reply(ctx, encode_frame(p.ABORT, {"reason": f"{worker} was declared lost"},
                                      session=self.session_id))
        self._close_context(ctx)

    def _reply(self, ctx: pynng.Context, reply: bytes) -> bool:
        """Send on `ctx` unless the plane is closing (then the socket closes it).

        Any thread may reply (held requests are answered by look-up, merge and actor
        threads too): the guard lets `close` wait for sends under way, since nng aborts
        the process when a context is sent on while its socket closes."""
        with self._sends.sending() as usable:
            if not usable:
                return False
            try:
                ctx.send(reply)
            except (pynng.Timeout, pynng.Closed):
                self.log.warning("reply_not_sent")
                return False
            return True

    @staticmethod
    def _close_context(ctx: pynng.Context) -> None:
        # safe while the socket closes (only a send is not); a context left to the
        # garbage collector would raise from its __del__ once the socket is closed
        with contextlib.suppress(pynng.NNGException):  # the socket closed it first
            ctx.close()

    def _keep(self, query_id: str, frame: bytes) -> None:
        with self._lock:
            self.results[query_id] = frame
            while len(self.results) > KEEP_RESULTS:
                del self.results[next(iter(self.results))]

    def _answer(self, raw: bytes | memoryview) -> tuple[bytes, dict[str, Any] | None]:
        """The reply, or a NEXT request's payload to hold (no work yet: see `_answer_held`)."""
        try:
            frame = decode_frame(raw)
            if frame.type == CHUNK:  # a large request (outputs), in pieces
                return self._answer_chunk(frame), None
        except ProtocolError as exc:
            self.log.warning("bad_request", error=str(exc))
            return encode_frame(p.ERROR, {"reason": f"protocol error: {exc}"},
                                session=self.session_id), None
        if frame.type == p.WATCH:  # answered or held by the serving loop (`_watch`)
            try:
                p.require(frame.payload, "worker", str)
                p.require(frame.payload, "pid", int)
            except p.ProtocolViolation as exc:
                self.log.warning("bad_request", error=str(exc))
                return encode_frame(p.ERROR, {"reason": f"protocol error: {exc}"},
                                    session=self.session_id), None
            return b"", {**frame.payload, "kind": p.WATCH}
        kind, body = self._answer_payload(frame.type, frame.payload)
        if kind == p.WAIT and not body.get("flush") and not self._closed.is_set():
            if frame.type == p.NEXT:
                return b"", frame.payload
            if frame.type == p.OUTPUTS and "accepted" in body:  # outputs with "next"
                # held as a plain next request (not its outputs), answered with the ACK
                return b"", {**{k: frame.payload.get(k) for k in ("worker", "pid", "query")},
                             "accepted": body["accepted"]}
        return encode_frame(kind, body, session=self.session_id), None

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
        kind, body = self._answer_payload(whole.type, whole.payload)
        if kind == p.WAIT and not body.get("flush"):  # outputs with "next": not held here,
            body = {**body, "held": 0.0}  # the worker asks again at once (and is held then)
        answer = self._chunk_answers[stream] = encode_frame(kind, body, session=self.session_id)
        while len(self._chunk_answers) > KEEP_CHUNK_ANSWERS:
            del self._chunk_answers[next(iter(self._chunk_answers))]
        return answer

    def _answer_payload(self, kind: str, payload: Any) -> tuple[str, dict[str, Any]]:
        try:
            query_id = p.require(payload, "query", str)
            with self._lock:
                q = self.query
                queued = bool(self.queued) and any(r.query_id == query_id for r in self.queued)
            if queued:  # its turn comes when the one before ends
                return p.WAIT, {}
            if q is None or q.query_id != query_id:
                # ended (or never ran here): over for every worker, one restarting too
                return p.ABORT, {"reason": f"no running query {query_id}", "ended": True}
            return q.handle(kind, payload)
        except (ProtocolError, p.ProtocolViolation) as exc:
            self.log.warning("bad_request", error=str(exc))
            return p.ERROR, {"reason": f"protocol error: {exc}"}


def _incarnation(payload: dict[str, Any]) -> str:
    """The name a held request's worker has on the plane (as `master.incarnation`)."""
    return f"{payload.get('worker')}#{payload.get('pid')}"
