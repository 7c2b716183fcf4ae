"""The worker actor: a thin shell; the query runs in worker_loop.py off the actor thread.

Keeping the actor thread free means a worker busy with a long packet still
answers pings and stop requests. It also watches the packet in progress: a
selector stuck beyond the query's packet timeout is reported to the master as
a failed packet (naming file, range and worker), and the worker then exits so
its supervisor restarts it clean (a Python thread stuck in user code cannot
be stopped any other way).

It hears of queries on the data plane: a WATCH request is always outstanding
on a socket of its own to the master, answered with the queries (RUN) the
moment the master accepts one (protocol.py); the actor thread reads the answer
when Thespian sees the socket readable, and asks again. RunQuery (Thespian)
brings the queries of a master that did not know we watch (we just started, or
it did) and of one that joined us to a query; a query heard of both ways runs
once. A watch that is not answered in time (the connection broke, an answer
was lost) is made afresh, asking for every query: none is missed. A worker on
another host (dialling its host's tunnel) does not watch: its host's daemon
adapts each query's spec to that host and sends RunQuery (hosts.py).

Its query thread and its watch start once its `Started` is out (`_serve`: on its
supervisor's WarmUp, a query, or SERVE_AFTER at the latest), not in the start
handler: Thespian sends a message only once the handler returns, and they held
the send up by 5-10 ms (the thread takes the GIL; the watch's dial waits for the
master's handshake), the last worker's Started being a lite session's last step.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from datetime import timedelta

import pynng
from thespian.actors import ActorExitRequest, WakeupMessage, WatchMessage

from pyproof.actors import messages as m
from pyproof.actors import protocol as p
from pyproof.actors.base import CRASH_EXIT_CODE, SELECTOR_EXIT_CODE, TEST_HOOKS, ProofActor
from pyproof.actors.warmup import start_warmup
from pyproof.actors.worker_loop import REQUEST_TIMEOUT_MS, OpenFiles, WorkerLoop
from pyproof.logs import get_logger
from pyproof.query.spec import QuerySpec, SpecError
from pyproof.supervision.process_tree import lead_process_group
from pyproof.transport.codec import ProtocolError, RemoteError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.wire import RECV_LIMIT
from pyproof.worker_output import capture_worker_output

EXIT_JOIN_TIMEOUT = 2.0  # its packet's end and its last outputs (worker_loop.py), if quick
PACKET_CHECK = timedelta(seconds=0.5)
KEEP_SEEN = 1000  # query ids remembered, so that one told twice runs once
QUEUE_WAIT = 60.0  # the idle query thread's wait for a query (it waits again)
# a watch the master has not answered by then is made afresh (it answers one within
# WATCH_HOLD_SECONDS, plus its serving thread's idle poll)
WATCH_WITHIN = p.WATCH_HOLD_SECONDS + 5.0
WATCH = "watch"  # the payload of the wake-ups that check the watch
WATCH_RESEND = "watch-resend"  # a WATCH that could not go (not connected yet): again soon
WATCH_RESEND_AFTER = 0.05  # seconds; the master is usually listening by then
# with PYPROOF_TEST_HOOKS=1: seconds each worker waits before it says it started (tests of
# a session's start, which waits for its slowest worker, not for the sum of their starts)
START_DELAY_ENV = "PYPROOF_TEST_WORKER_START_DELAY"
SERVE = "serve"  # the payload of the wake-up that starts the query thread and the watch...
SERVE_AFTER = 0.05  # ...at the latest this long after the start (if no WarmUp came first)


class Worker(ProofActor):
    loop: WorkerLoop | None = None  # the query running or last run
    # RunQuery messages not yet begun, in order (appended here, taken by the query thread)
    queued: deque[m.RunQuery | None] = deque()  # replaced per actor at start
    runner: threading.Thread | None = None  # the query thread, one for the worker's life
    busy = False  # the query thread runs a query (or is about to)
    seen: deque[str] = deque(maxlen=KEEP_SEEN)  # queries queued (replaced per actor)
    _queries: threading.Event  # set when a query (or the end: None) is queued
    worker_id = ""
    session_id = ""
    packet_address = ""
    # kept across queries: the connection to the master and the open ROOT files
    socket: pynng.Req0 | None = None
    files: OpenFiles | None = None
    # the standing WATCH request for new queries (see the module docstring)
    watch: pynng.Req0 | None = None
    watch_sent = 0.0  # when the outstanding WATCH went (monotonic)
    # on another host (it does not watch the master): the part's supervisor, told of each
    # query the master said is over (QueryEnded), from the actor thread
    supervisor = None
    ended: deque[str] = deque()  # replaced per actor at start
    warming = False  # its warm-up started (m.WarmUp), or a query came first
    serve_pending = False  # started: the query thread and the watch are due (`_serve`)

    def receive(self, message, sender) -> None:
        """Run by Thespian (via `ProofActor.receiveMessage`) on the actor thread, per message.

        Queues queries for the worker's query thread (which runs them one after the
        other, see worker_loop.py), stops them, and checks the packet in progress at
        each wake-up. If it raises,
        `ProofActor.receiveMessage` logs the error and ends the process (exit 70); the
        supervisor restarts the actor from a clean state.
        The master hears of the exit as a lost worker and gives its packets to others.
        """
        if isinstance(message, m.WorkerStart):
            self.worker_id, self.session_id = message.worker_id, message.session_id
            self.queued = deque()
            self.seen = deque(maxlen=KEEP_SEEN)
            self._queries = threading.Event()
            self.start_log(message.log_dir, actor=message.worker_id, session=message.session_id)
            capture_worker_output()  # print() and logging of user code: into this log
            self.packet_address = message.packet_address
            self.ended = deque()
            if not watches_master(self.packet_address):
                self.supervisor = sender  # remote_session.py: it keeps the queries
            # a user's script imported here must not start clusters of its own
            os.environ["PYPROOF_IN_WORKER"] = message.worker_id
            # what the selector starts inherits our process group: when we die, our
            # supervisor kills the group (see SessionSupervisor.on_child_exited)
            lead_process_group()
            get_logger().info("worker_started", master=message.packet_address)
            if TEST_HOOKS and os.environ.get(START_DELAY_ENV):  # tests: a slow start
                time.sleep(float(os.environ[START_DELAY_ENV]))
            self.send(sender, m.Started(pid=os.getpid()))
            # the query thread and the watch once Started is out (see the module docstring)
            self.serve_pending = True
            self.wakeupAfter(timedelta(seconds=SERVE_AFTER), payload=SERVE)
        elif isinstance(message, m.WarmUp):  # our Started came
            self._serve()
            if not self.warming:
                self.warming = True
                start_warmup()  # uproot, awkward, hist: loaded while the session is idle
        elif isinstance(message, WakeupMessage) and message.payload == SERVE:
            self._serve()
        elif isinstance(message, m.RunQuery):
            if self._run(message):
                self.wakeupAfter(PACKET_CHECK)
        elif isinstance(message, WatchMessage):
            self._watch_answers()
        elif isinstance(message, WakeupMessage) and message.payload == WATCH_RESEND:
            if self.watch is not None:
                self._watch_again()
        elif isinstance(message, WakeupMessage) and message.payload == WATCH:
            if self.watch is not None and time.monotonic() - self.watch_sent > WATCH_WITHIN:
                get_logger().warning("query_watch_unanswered", within=WATCH_WITHIN)
                self._watch_again(fresh=True)  # a new socket: no answer is waited for twice
            self.wakeupAfter(timedelta(seconds=WATCH_WITHIN), payload=WATCH)
        elif isinstance(message, WakeupMessage):
            self._report_ended()  # before `busy` is read: the thread appends first
            if self.loop is not None and self.loop.running:
                self._check_packet_time()
            if self.queued or self.busy:
                self.wakeupAfter(PACKET_CHECK)
        elif isinstance(message, m.StopQuery):
            if self.loop is not None:
                self.loop.stop()
        elif isinstance(message, ActorExitRequest):
            self._exit()

    def _serve(self) -> None:
        """Start the query thread (for the worker's life, not per query: a query's start is
        only a hand-over) and the watch, once, after the start handler sent Started."""
        if not self.serve_pending:
            return
        self.serve_pending = False
        self.runner = threading.Thread(target=self._run_queries, name="queries", daemon=True)
        self.runner.start()
        if watches_master(self.packet_address):
            self._watch_again(fresh=True)
            self.wakeupAfter(timedelta(seconds=WATCH_WITHIN), payload=WATCH)

    def _exit(self) -> None:
        """The actor is asked to exit: end the query loop, then close the socket and files.

        Closed only once the loop's thread has ended (it uses them); if it has not
        (a selector stuck in user code), the process's exit closes them.
        """
        if self.runner is not None:
            self.queued.clear()
            self.queued.append(None)  # the query thread ends after the running query
            self._queries.set()
            if self.loop is not None:
                self.loop.stop()
            self.runner.join(EXIT_JOIN_TIMEOUT)
            if self.runner.is_alive():
                return
        if self.files is not None:
            self.files.close()
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        self._close_watch()

    def _check_packet_time(self) -> None:
        """Run by `receive` at each PACKET_CHECK wake-up while a query loop runs.

        A selector stuck past the packet timeout is reported to the master (FAILED)
        and the process exits (CRASH_EXIT_CODE): it does not return in that case.
        nng errors while reporting are logged, not raised.
        """
        assert self.loop is not None
        limit = self.loop.spec.packet_timeout
        stuck = self.loop.current_packet(time.monotonic())
        if not limit or stuck is None or stuck["seconds"] <= limit:
            return
        where = "begin()" if stuck.get("stage") == "begin" else "one packet"
        error = RemoteError(
            type="PacketTimeout",
            message=f"the selector spent more than {limit:g} s in {where} "
                    f"({stuck['seconds']:.0f} s so far); the worker is restarted",
            traceback="", context={k: v for k, v in stuck.items() if k != "seconds"})
        get_logger().error("packet_timeout", **error.context, limit=limit)
        address = self.packet_address
        with pynng.Req0(recv_timeout=5_000, send_timeout=5_000, resend_time=-1) as report:
            try:
                report.dial(address, block=True)
                report.send(encode_frame(p.FAILED, {
                    "worker": self.worker_id, "pid": os.getpid(),
                    "query": self.loop.query_id, "error": error}, session=self.session_id))
                report.recv()
            except pynng.NNGException as exc:
                get_logger().error("packet_timeout_not_reported", error=repr(exc))
        os._exit(SELECTOR_EXIT_CODE)  # the selector's fault: not counted against the session

    def _run(self, message: m.RunQuery) -> bool:
        """Run by `receive` for RunQuery and RUN (actor thread): queue the query for the
        query thread (it runs now, or after the one running: the master queues queries
        too). False if it was queued before (told twice, or both ways): it runs once."""
        # a query before our WarmUp: the query thread loads what it needs, no warm-up
        # beside it (two threads importing one package tree: see warmup.py)
        self.warming = True
        self._serve()  # (a query before our WarmUp: the query thread starts now)
        if message.query_id in self.seen:
            return False
        self.seen.append(message.query_id)
        self.queued.append(message)
        self._queries.set()
        return True

    # -- hearing of queries on the data plane (actor thread) ----------------------------
    def _watch_again(self, *, fresh: bool = False) -> None:
        """Send the next WATCH; `fresh`: on a new socket (answers to the old one are
        dropped with it), asking for every running or queued query. If no socket can
        be made, queries come by RunQuery only (the master does not count on us)."""
        if fresh:
            self._close_watch()
            try:
                self.watch = pynng.Req0(send_timeout=1_000, resend_time=-1,
                                        recv_max_size=RECV_LIMIT)
                try:  # connected now, so that the WATCH can go now (the master listens)
                    self.watch.dial(self.packet_address, block=True)
                except pynng.NNGException:  # not yet: nng dials again by itself
                    self.watch.dial(self.packet_address, block=False)
                self.watch_fds = (self.watch.recv_fd,)
            except pynng.NNGException as exc:
                get_logger().warning("query_watch_unavailable", error=repr(exc))
                self._close_watch()
                return
        assert self.watch is not None
        self.watch_sent = time.monotonic()
        try:
            self.watch.send(encode_frame(p.WATCH, {"worker": self.worker_id,
                                                   "pid": os.getpid(), "fresh": fresh},
                                         session=self.session_id), block=False)
        except pynng.NNGException as exc:  # not connected: the wake-up check tries again
            # (the master is restarting or stopping: ordinary, and RunQuery still comes)
            get_logger().info("query_watch_not_sent", error=repr(exc))
            # sent again soon, not at the next check (WATCH_WITHIN): a worker that started
            # before its master listened would hear of queries by RunQuery only until then
            # (doubling up to WATCH_WITHIN: a master that is gone is not asked 20 times/s)
            delay = getattr(self, "watch_resend_delay", WATCH_RESEND_AFTER)
            self.watch_resend_delay = min(2 * delay, WATCH_WITHIN)
            self.wakeupAfter(timedelta(seconds=delay), payload=WATCH_RESEND)
            return
        self.watch_resend_delay = WATCH_RESEND_AFTER

    def _watch_answers(self) -> None:
        """The watch socket is readable: queue the queries a RUN brings, and watch again."""
        if self.watch is None:
            return
        try:
            raw = self.watch.recv(block=False)
        except (pynng.TryAgain, pynng.BadState):  # no answer yet, or no WATCH went
            return
        except pynng.NNGException as exc:
            get_logger().warning("query_watch_failed", error=repr(exc))
            self._watch_again(fresh=True)
            return
        try:
            frame = decode_frame(raw)
            kind, payload = frame.type, frame.payload
            if kind == p.RUN:
                new = [self._run(m.RunQuery(query_id=p.require(q, "query", str),
                                            spec=_run_spec(q)))
                       for q in p.require(payload, "queries", list)]
                if any(new):
                    self.wakeupAfter(PACKET_CHECK)
            elif kind == p.ABORT:  # the master declared us lost: we are about to be ended
                get_logger().warning("query_watch_refused", reason=payload.get("reason"))
                self._close_watch()
                return
        except (ProtocolError, p.ProtocolViolation, SpecError) as exc:
            # not a master's answer we understand: ask afresh (RunQuery still works)
            get_logger().error("query_watch_bad_answer", error=str(exc))
            self._watch_again(fresh=True)
            return
        self._watch_again()

    def _report_ended(self) -> None:
        """Run by `receive` at wake-ups (actor thread): tell the part's supervisor of the
        queries the master said are over (appended by the query thread, which must not
        send Thespian messages itself)."""
        while self.ended:
            query_id = self.ended.popleft()
            if self.supervisor is not None:
                self.send(self.supervisor, m.QueryEnded(session_id=self.session_id,
                                                        query_id=query_id))

    def _close_watch(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        self.watch_fds = ()

    def _run_queries(self) -> None:
        """The query thread: run the queued queries one after the other, until told to end.

        One thread for the worker's life: no thread start per query, and the next
        query begins the moment the one before ends (never at a later wake-up).
        What a query raises is handled by its loop (`WorkerLoop.run` never raises).
        """
        while True:
            self.busy = True  # before the queue is empty: the wake-ups keep watching
            try:
                message = self.queued.popleft()
            except IndexError:
                self.busy = False
                self._queries.wait(QUEUE_WAIT)  # bounded: an idle worker looks again
                self._queries.clear()
                continue
            if message is None:
                return
            if self.files is None:
                self.files = OpenFiles()
            self.loop = WorkerLoop(worker_id=self.worker_id, session_id=self.session_id,
                                   query_id=message.query_id, spec=message.spec,
                                   socket=self._socket(), files=self.files,
                                   die=lambda: os._exit(CRASH_EXIT_CODE))
            self.loop.run()
            if self.loop.over and self.supervisor is not None:
                self.ended.append(message.query_id)  # sent at the next wake-up

    def _socket(self) -> pynng.Req0:
        """The connection to the master, kept across queries (no dial, no connection to wait
        for per query); made afresh after a query whose exchange with the master failed.

        A restarted master listens at the same address: nng re-dials by itself.
        Resend disabled: a resent request would be processed twice by the master.
        """
        if self.socket is not None and self.loop is not None and not self.loop.socket_ok:
            self.socket.close()  # its loop has ended (this thread ran it): no one uses it
            self.socket = None
        if self.socket is None:
            self.socket = pynng.Req0(recv_timeout=REQUEST_TIMEOUT_MS, send_timeout=10_000,
                                     resend_time=-1)
            self.socket.dial(self.packet_address, block=False)
        return self.socket


def watches_master(packet_address: str) -> bool:
    """Whether a worker dialling `packet_address` watches for queries there: only its
    session's master itself (`trees.master_address`). A worker on another host dials a
    tunnel (hosts.py): its queries come from its host's daemon by RunQuery, with the
    spec made for that host (its packages, its output directory)."""
    if not packet_address.startswith("ipc://"):
        return False
    return os.path.basename(packet_address).startswith("master-")


def _run_spec(query: dict) -> QuerySpec:
    """A RUN's query spec, with the fields only a master sets (what RunQuery carries)."""
    spec = QuerySpec.from_wire(p.require(query, "spec", dict))
    spec = spec.with_output_dir(p.require(query, "output_dir", str))
    return spec.with_packages(p.require(query, "packages", list))
