"""The master actor: a thin shell around its data plane (master_plane.py).

Control messages (start/stop query, status, worker list) arrive here; packet
traffic never does.
"""

from __future__ import annotations

import os
import time
from typing import Any

from thespian.actors import ActorExitRequest, WatchMessage

from pyproof.actors import last_words
from pyproof.actors import messages as m
from pyproof.actors.base import CRASH_EXIT_CODE, ProofActor
from pyproof.actors.master_direct import (
    BadDirectRequest,
    DirectServer,
    direct_address,
    parse_request,
)
from pyproof.actors.master_plane import MasterPlane
from pyproof.actors.output_files import query_output_dir
from pyproof.actors.warmup import start_warmup
from pyproof.logs import get_logger
from pyproof.packages import service as packages
from pyproof.packages.errors import PackageError
from pyproof.query.spec import QuerySpec
from pyproof.transport import sealing
from pyproof.transport.codec import RemoteError
from pyproof.transport.frames import encode_frame
from pyproof.transport.tls import TLSError, TLSSettings

STUCK_LINGER = 0.25  # after the clients were told: their ERROR frames leave the sockets


class Master(ProofActor):
    plane: MasterPlane | None = None
    specs: dict[str, QuerySpec] = {}  # queries running or queued, in order (for workers that join)
    direct: DirectServer | None = None  # the session's client starts queries here (see below)
    user = ""  # the session's
    direct_served = 0  # requests that came straight from the client (tests, status)
    direct_last = 0.0  # when the last one came (monotonic): the sessions' idle check
    warming = False  # its warm-up started (m.WarmUp), or a query came first

    def receive(self, message, sender) -> None:
        """Run by Thespian (via `ProofActor.receiveMessage`) on the actor thread, per message.

        Control only: starts the data plane, tells it of workers joining or lost,
        starts, stops and lists queries, answers status. If it raises,
        `ProofActor.receiveMessage` logs the error and ends the process (exit 70); the
        supervisor restarts the actor from a clean state.
        The session supervisor restarts the master; running queries are lost (clients
        are told by `_check_alive`).
        """
        if isinstance(message, m.MasterStart):
            self.workers: dict[str, tuple] = {}  # worker id -> (actor address, pid)
            self.specs = {}
            self.start_log(message.log_dir, actor="master", session=message.session_id)
            self.plane = MasterPlane(session_id=message.session_id,
                                     address=message.packet_address, data_key=message.data_key,
                                     run_dir=message.run_dir, serve=False)
            self.user = message.user
            get_logger().info("master_started", address=message.packet_address)
            self.send(sender, m.Started(pid=os.getpid(),
                                        info={"packet_address": message.packet_address}))
            # its threads, and the direct route's socket, once Started is sent: a thread
            # started before took the GIL and held up the send (the session's start with it)
            self.plane.serve()
            self._listen_direct(message.packet_address)
        elif isinstance(message, m.WarmUp) and not self.warming:  # our Started came
            self.warming = True
            start_warmup()  # uproot (look-ups), hist (merging): loaded while idle
        elif isinstance(message, m.WorkerJoined):
            assert self.plane is not None
            self.workers[message.worker_id] = (message.ref, message.pid)
            self.plane.worker_joined(incarnation(message.worker_id, message.pid))
            # a worker joining mid-query gets work at once (and the queued ones, in order)
            active = self.plane.active_queries()
            self.specs = {q: self.specs[q] for q in active if q in self.specs}
            for query_id, spec in self.specs.items():
                self.send(message.ref, m.RunQuery(query_id=query_id, spec=spec,
                                                  active=tuple(self.specs)))
        elif isinstance(message, m.WorkerLeaving):  # removed: it finishes, starts nothing
            current = self.workers.pop(message.worker_id, None)
            if current is not None and self.plane is not None:
                self.plane.worker_leaving(incarnation(message.worker_id, current[1]))
        elif isinstance(message, m.WorkerLost):
            assert self.plane is not None
            current = self.workers.get(message.worker_id)
            if current is not None and current[1] == message.pid:
                del self.workers[message.worker_id]
            self.plane.worker_lost(incarnation(message.worker_id, message.pid), message.reason)
        elif isinstance(message, m.StartQuery) and self.plane is not None and \
                message.session_id not in ("", self.plane.session_id):
            pass  # sent straight to an address another actor holds now: the gateway resends
        elif isinstance(message, m.StartQuery):
            self._start_query(message, sender)
        elif isinstance(message, m.StopQuery):
            self._stop_query(message, sender)
        elif isinstance(message, WatchMessage):
            if self.direct is not None:
                self.direct.serve(self._direct_answer)
        elif isinstance(message, m.StatusRequest):
            status = self.plane.statistics() if self.plane else {}
            if self.direct is not None:  # queries that came straight: the session is in use
                status["direct"] = {"address": self.direct.address, "served": self.direct_served,
                                    "idle_for": None if not self.direct_last else round(
                                        time.monotonic() - self.direct_last, 3)}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status={
                "master": status, "workers": sorted(self.workers), "pid": os.getpid()}))
        elif isinstance(message, m.OpenOutbox):
            assert self.plane is not None
            try:
                status = {"address": self.plane.open_outbox(message.address, message.tls)}
            except Exception as exc:  # e.g. the port asked for is taken: say so
                status = {"error": f"cannot listen on {message.address}: {exc}"}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status=status))
        elif isinstance(message, m.FetchResult) and message.resend and self.plane is not None:
            # on the client's data plane, as live results go (actors/kept.py)
            status = self.plane.resend_kept(message.query_id, message.resend, message.address)
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status=status))
        elif isinstance(message, m.FetchResult):  # a client without a data plane: inline
            frame = self.plane.results.get(message.query_id) if self.plane else None
            status = {"frame": frame} if frame is not None else {
                "error": f"no kept result for query {message.query_id!r}"}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status=status))
        elif isinstance(message, ActorExitRequest) and self.plane is not None:
            if self.direct is not None:
                self.direct.close()
            self.plane.close()

    def _listen_direct(self, packet_address: str) -> None:
        """Serve the session's client its direct route (master_direct.py), when the session
        has a data key to check requests with. A socket that cannot be made is logged: the
        client then goes the long way, as before."""
        address = direct_address(packet_address)
        if not address or self.plane is None or not self.plane.data_key:
            return
        try:
            self.direct = DirectServer(address)
        except Exception as exc:  # NNGException, OSError: the long way still works
            get_logger().warning("direct_route_unavailable", address=address, error=repr(exc))
            return
        self.watch_fds = (self.direct.fd,)

    def _direct_answer(self, data: bytes, reply: Any) -> None:
        """Run by `DirectServer.serve` (actor thread) for one request of the client: the
        same start and stop as the long way's (exactly once by query id), answered by
        `reply` in a frame sealed with the session's key (a start: before its workers
        are told); a refusal in a plain one saying why."""
        assert self.plane is not None
        try:
            request = parse_request(self.plane.data_key, self.plane.session_id, data)
        except BadDirectRequest as exc:
            get_logger().warning("direct_request_refused", reason=str(exc))
            reply(encode_frame("error", {"message": str(exc), "refused": True}))
            return
        self.direct_served += 1
        self.direct_last = time.monotonic()

        def answer(error: str | None = None) -> None:
            kind, body = ("error", {"message": error}) if error else ("ok", {
                "query": request.query_id})
            reply(sealing.seal(self.plane.data_key, encode_frame(
                kind, body, session=self.plane.session_id)))

        if request.kind == "stop_query":
            answer(self._stop(request.query_id, request.abort))
            return
        assert request.spec is not None
        try:  # the session's enabled packages, fixed for this query (as the gateway does)
            spec = request.spec.with_packages(
                packages.query_packages(self.user, self.plane.session_id))
        except PackageError as exc:
            answer(str(exc))
            return
        error = self._accept(request.query_id, spec, self.user, answer)
        if error is not None:
            answer(error)

    def healthy(self) -> bool:
        """Answering the supervisor's ping (actor thread): are the data threads alive?

        A data thread that should be running and has not stamped for
        `thread_beats.STUCK_AFTER` s (and is not busy on the CPU) is stuck: the
        queries running or queued are told so (an ERROR frame each, naming the
        thread, also left in a file for the next master: last_words.py) and the
        process ends as a crash, so the session supervisor restarts the master
        and the next query runs on a fresh one. Never returns in that case; takes
        no lock.
        """
        if self.plane is None:
            return True
        # watched every ping interval while a query runs or waits; idle, the heartbeat
        # page vouches for the actor thread and no data thread should be running
        self.want_pings(any(run.core.busy for run in self.plane.runs_unlocked()))
        stuck = self.plane.beats.stuck(time.monotonic())
        if not stuck:
            return True
        worst = max(stuck, key=lambda s: s.silent)
        message = (f"the session's master data thread {worst.name} stopped answering for "
                   f"{worst.silent:.0f} s; the master was restarted; run the query again")
        try:
            get_logger().error("data_thread_stuck", thread=worst.name,
                               silent=round(worst.silent, 1),
                               threads=[s.name for s in stuck])
            error = RemoteError(type="MasterStuck", message=message, traceback="",
                                context={"thread": worst.name})
            runs = list(self.plane.runs_unlocked())
            frames = {run.query_id: frame for run in runs
                      if (frame := run.stuck_frame(error)) is not None}
            # first where the next master finds them (one small local file): the direct
            # frames may not leave a starved host before the exit (actors/last_words.py)
            last_words.write(self.plane.run_dir, self.plane.session_id, frames)
            for run in runs:
                if run.query_id in frames:
                    run.fail_stuck(frames[run.query_id])
            time.sleep(STUCK_LINGER)
        finally:
            os._exit(CRASH_EXIT_CODE)  # a pyproof fault: counted, restarted clean

    def _stop_query(self, message: m.StopQuery, sender) -> None:
        """Run by `receive` for StopQuery: stop (or abort) a query this master knows.

        A query it does not know (never started here, or run by a master since restarted)
        is answered QueryRejected naming it: a stop that silently did nothing would let a
        user believe the query was stopped. A retried stop of a query that already ended is
        accepted (stopping is idempotent).
        """
        error = self._stop(message.query_id, message.abort, message.session_id)
        reply_to = message.reply_to or sender
        if error is None:
            self.send(reply_to, m.QueryAccepted(corr=message.corr, query_id=message.query_id))
        else:
            self.send(reply_to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                                error=error))

    def _stop(self, query_id: str, abort: bool, session_id: str = "") -> str | None:
        """Stop (or abort) `query_id`; None if done, else why not (both routes)."""
        known = self.plane is not None and self.plane.stop_query(
            query_id, "aborted by the user" if abort else "stopped by the user", abort=abort)
        if known:
            return None
        what = "abort" if abort else "stop"
        session = self.plane.session_id if self.plane is not None else session_id
        return (f"cannot {what} query {query_id!r}: session {session} has no such "
                "query (it never started here, or the session's master was restarted "
                "since); session.queries() lists the queries it knows")

    def _start_query(self, message: m.StartQuery, sender) -> None:
        """Run by `receive` for StartQuery: accept (or reject) the query and tell the workers.

        A TLS problem with the client's callback address is answered as QueryRejected;
        anything else raised crashes the master as from `receive`.
        """
        reply_to = message.reply_to or sender

        def accepted() -> None:  # the client hears first (most of a trivial query's latency)
            self.send(reply_to, m.QueryAccepted(
                corr=message.corr, query_id=message.query_id, master=self.myAddress,
                direct=self.direct.address if self.direct is not None else ""))

        error = self._accept(message.query_id, message.spec, message.user, accepted)
        if error is not None:
            self.send(reply_to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                                error=error))

    def _accept(self, query_id: str, spec: QuerySpec, user: str,
                accepted: Any = None) -> str | None:
        """Start `query_id` (both routes); None if accepted (or known: a retry, by either
        route, is never run twice), else why not. `accepted()` is called as soon as the
        query is queued and the workers watching for queries are told (on the data
        plane, see `MasterPlane.announce`), before the others are (by RunQuery)."""
        assert self.plane is not None
        # a query before our WarmUp: its look-ups load what they need, no warm-up beside
        # them (two threads importing one package tree: see warmup.py)
        self.warming = True
        if self.plane.knows_query(query_id):  # a client retry: already accepted
            if accepted is not None:
                accepted()
            return None
        try:  # a client that listens with TLS is checked against this host's CA
            TLSSettings.from_env().callback_config(spec.client_address)
        except TLSError as exc:
            return f"cannot dial the client back: {exc}"
        # where its selectors' ctx.output_file(...) paths go (see output_files.py)
        spec = spec.with_output_dir(query_output_dir(self.plane.session_id, query_id))
        # queued behind the running query, if any: workers queue it too, and ask for its
        # packets once they are done with the one before
        # workers that watch for queries hear of it on the data plane, now (a RUN each);
        # the others (not watching yet, e.g. just started) by RunQuery, after the client
        told = self.plane.start_query(query_id, spec, user)
        self.want_pings(True)  # its data threads are watched while it runs (see `healthy`)
        if accepted is not None:
            accepted()
        active = self.plane.active_queries()
        self.specs = {q: s for q, s in self.specs.items() if q in active}
        self.specs[query_id] = spec
        run = m.RunQuery(query_id=query_id, spec=spec, active=tuple(self.specs))
        for worker_id, (ref, pid) in self.workers.items():
            if incarnation(worker_id, pid) not in told:
                self.send(ref, run)
        get_logger().info("query_accepted", query=query_id)
        return None


def incarnation(worker_id: str, pid: int) -> str:
    """A worker's name on the data plane: a restarted worker is a new participant."""
    return f"{worker_id}#{pid}"
