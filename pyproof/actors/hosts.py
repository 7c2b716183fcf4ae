"""The hosts actor: a daemon's cluster endpoint, its host registry, and its joiner.

Every daemon started with ``--cluster-secret`` runs one (a leaf actor under
the root supervisor; it owns sockets, creates no children):

- the **cluster endpoint**, nng req/rep on ``tcp://ADDR:PORT+1`` (TLS when
  ``PYPROOF_TLS_*`` is set), where other daemons log in with the cluster
  secret (see pyproof/hosts/channel.py) and announce themselves, send
  heartbeats and say goodbye;
- the **host registry** (pyproof/hosts/registry.py: the pure core) of the
  hosts that joined this daemon, itself included, and those a ``--hosts``
  file lists; ``proofctl hosts`` shows it through the gateway;
- with ``--join proof://MASTER:P``, the **joiner**: a thread that logs in to
  the master's cluster endpoint, announces this host (name, address, cores,
  labels, data paths), then sends a heartbeat every ``heartbeat`` seconds. It
  announces again whenever the master does not know it (the master
  restarted) and logs in again when its channel is gone; a restarted host
  announces with a new incarnation.
- **leaving** (``proofctl daemon stop`` on a joined host, before it signals the
  daemon): the host tells the master it leaves (the master's registry shows it
  "left" at once and places nothing more there), stops the heartbeat, and
  removes its workers of the master's sessions, as ``remove_workers`` would:
  each finishes its packet or the master re-queues it, exactly once. Once they
  are gone (or after ``LEAVE_DRAIN`` s) it says "drained" and the master
  re-queues whatever those workers still held; then the stop goes on.
- **durable**: the master's side of each session it spread over hosts is kept in
  a file of the run directory (pyproof/hosts/spans.py), so that a restarted
  hosts actor (it is supervised: a crash restarts it) re-adopts those sessions:
  it reloads them before its endpoint opens (the other hosts' checks that they
  run are answered yes), tells each session's supervisor where it is now (the
  supervisor answers with its master, which hears of the workers on other hosts
  again, through this actor) and asks each part's host which workers still run.
  The same holds after a restart of the whole daemon. On the other hosts, a
  restarted hosts actor (or daemon) re-adopts its parts of other hosts' sessions
  (the durable registry) and tells each master's host which workers run there
  now (`part_readopted`): one that exited or restarted while no hosts actor ran
  here was never reported, and the master would wait for ever for its packets.

Thespian never leaves the host: daemons meet only here, over authenticated nng.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pynng
from thespian.actors import ActorExitRequest, WakeupMessage

from pyproof.actors import messages as m
from pyproof.actors.base import TEST_HOOKS, ProofActor
from pyproof.actors.host_links import (
    ClusterClient,
    ClusterEndpoint,
    ClusterError,
    Forwarder,
    PeerLink,
    Tunnel,
    close_host_links,
    cluster_address,
)
from pyproof.actors.output_files import query_output_dir
from pyproof.actors.registry import Registry, address_from_wire, address_to_wire
from pyproof.actors.sessions import master_address
from pyproof.hosts import locality as loc
from pyproof.hosts import placement as pl
from pyproof.hosts import registry as reg
from pyproof.hosts import spans
from pyproof.hosts.channel import ChannelServer
from pyproof.hosts.once import Once
from pyproof.logs import get_logger
from pyproof.packages import remote as remote_packages
from pyproof.packages.errors import PackageError
from pyproof.packages.store import PackageStore
from pyproof.query.spec import QuerySpec, SpecError
from pyproof.supervision.process_tree import start_time
from pyproof.transport import auth
from pyproof.transport.tls import TLSSettings

TICK = timedelta(seconds=0.25)
BUSY_TICK = timedelta(seconds=0.05)  # while a session's parts start: answers go quickly
SESSIONS_CHECK = 2.0  # seconds between checks that spanned sessions still run
SENT = "sent"
PULL_TIMEOUT = 30.0  # one chunk of a package from the master's host
START_WAIT = 40.0  # a host starting a session's workers answers within this
LEAVE_DRAIN = 15.0  # a leaving host's workers drain within this (then they are killed)
INCARNATION_FILE = "host-incarnation"  # in the run directory (`_keep_incarnation`)
SESSION_ID = re.compile(r"^[0-9a-f]{1,64}$")
# tests (PYPROOF_TEST_HOOKS=1): seconds this host waits before answering that the workers
# it started for a master run, as a master's host that is slow to hear would
START_ANSWER_DELAY = float(os.environ.get("PYPROOF_TEST_START_ANSWER_DELAY", "0") or 0) \
    if TEST_HOOKS else 0.0
MAX_ACTIVE = 1024  # query ids a run_query may name as running or queued on its master
WORKER_ID = re.compile(r"^worker-[0-9]{1,4}@[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class Joiner:
    """Announces this host to the master daemon, then keeps a heartbeat (a thread)."""

    def __init__(self, *, master_url: str, info: reg.HostInfo, incarnation: str,
                 secret: bytes, interval: float, tls: TLSSettings | None,
                 workers=lambda: 0) -> None:
        self.master_url = master_url
        self.info, self.incarnation, self.interval = info, incarnation, interval
        self.workers = workers
        self.client = ClusterClient(cluster_address(master_url), info.name, secret,
                                    timeout=max(1.0, interval * 2), tls=tls)
        self.joined = False
        self.state = "joining"
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="joiner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Run by the `joiner` thread until `stop`: announce this host, then heartbeat.

        ClusterError (master unreachable or refusing) is logged and retried after
        `interval`; anything else raised would end the thread only (the host would go
        silent and the master would find it lost), never the actor.
        """
        log = get_logger()
        while not self._stop.is_set():
            try:
                if not self.joined:
                    kind, body = self.client.call("announce", {
                        "info": self.info.to_wire(), "incarnation": self.incarnation})
                    if kind == "ok":
                        self.joined, self.state = True, "joined"
                        log.info("host_announced", master=self.master_url,
                                 master_name=self.client.channel.server_id)
                    else:
                        self.state = "refused"
                        self.last_error = str((body or {}).get("message"))
                        log.error("host_refused", master=self.master_url, error=self.last_error)
                else:
                    kind, body = self.client.call("heartbeat", {
                        "incarnation": self.incarnation, "workers": self.workers()})
                    if kind == "announce":  # the master does not know us (it restarted)
                        self.joined, self.state = False, "joining"
                        log.info("host_announce_again", master=self.master_url)
                        continue
            except ClusterError as exc:
                if self.joined or self.last_error != str(exc):
                    log.warning("master_unreachable", master=self.master_url, error=str(exc))
                self.joined, self.state, self.last_error = False, "joining", str(exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        # no goodbye here: `proofctl daemon stop` leaves first (Hosts._leave); a host that
        # stops any other way is found lost by its silence (lost_after)
        self._stop.set()
        self._thread.join(self.client.timeout + 1.0)
        self.client.close()


@dataclasses.dataclass(slots=True)
class Spanned:
    """Master's side: a session whose workers this daemon placed over hosts."""

    create: m.CreateSession
    reply_to: Any
    corr: str
    plan: dict[str, int]
    master: Any = None
    local: tuple[str, ...] = ()
    remote: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    pending: set[str] = dataclasses.field(default_factory=set)
    sent: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (query, host)
    ready: bool = False
    next_index: dict[str, int] = dataclasses.field(default_factory=dict)  # per host
    # reloaded from its record by a restarted hosts actor (`Hosts._reload_spans`): the
    # master must hear of every worker on other hosts again, through this actor
    readopting: bool = False


def part_hosts(span: Spanned, adding: Iterable[set[str]], here: str) -> frozenset[str]:
    """The other hosts (not `here`) given a part of `span`'s session, or being given one:
    those whose workers run, and those asked to start some (when the session opens, or by
    an add) whose answer has not come. A host answers as soon as its part runs, and checks
    from then on that the session still runs (`_check_masters`: closed if not); the answer
    may be heard here later than the check (a loaded host, a slow link), so a part being
    started counts as alive: else that host closed a part this master was about to give
    queries to, and its workers never got a packet. A start that fails takes the host out
    (its part, if it runs after all, is then closed there)."""
    hosts = set(span.remote) | span.pending
    for pending in adding:
        hosts |= pending
    hosts.discard(here)
    return frozenset(hosts)


def hosts_to_tell(span: Spanned, query_id: str, leaving) -> list[str]:
    """The hosts whose part of `span`'s session has workers and has not been told of
    `query_id` (each is told once, however many of its workers the master names: that
    host gives the query to all of them, and to those that start later); recorded as told.
    Hosts in `leaving` start nothing more."""
    hosts = [host for host, workers in span.remote.items()
             if workers and (query_id, host) not in span.sent and host not in leaving]
    span.sent.update((query_id, host) for host in hosts)
    return hosts


def new_master(span: Spanned, master: Any, leaving) -> list[tuple[str, int]]:
    """`span`'s session has a new master (restarted): it is recorded, every part is told of
    its queries (none told yet: also one whose id the old master ran), and the workers on
    other hosts it must hear of (`(worker id, pid)`) are returned; none if it is the one
    known already (said twice), unless `span` was just reloaded by a restarted hosts actor
    (`readopting`): the master then knows those workers by the old actor's address, which
    is gone. Those of hosts in `leaving` drain: no query for them."""
    if span.master == master and not span.readopting:
        return []
    span.master, span.readopting = master, False
    span.sent.clear()
    return [(worker_id, pid) for host, workers in span.remote.items() if host not in leaving
            for worker_id, pid in workers.items()]


def span_record(sid: str, span: Spanned, hosts: dict[str, reg.Host],
                versions: Iterable[str] = ()) -> spans.SpanRecord:
    """What `span`'s file keeps (hosts/spans.py): the hosts of its parts as the registry
    (`hosts`) knows them (a part on a host it never knew cannot be: it placed it there)."""
    return spans.SpanRecord(
        session_id=sid, user=span.create.user, request_id=span.create.request_id,
        master=address_to_wire(span.master), local=tuple(span.local), plan=dict(span.plan),
        parts={host: spans.Part(info=hosts[host].info, incarnation=hosts[host].incarnation,
                                workers=dict(workers), next_index=span.next_index.get(host, 0))
               for host, workers in span.remote.items() if host in hosts},
        versions=tuple(sorted(versions)))


def active_list(wire: Any, query_id: str) -> tuple[str, ...]:
    """A run_query's `active` (the master's running and queued queries, in order) checked:
    a list of query ids naming `query_id`, or missing (an empty tuple: not known). Raises
    SpecError naming what is wrong."""
    if wire is None or wire == []:
        return ()
    if not (isinstance(wire, list) and len(wire) <= MAX_ACTIVE and all(
            isinstance(q, str) and 0 < len(q) <= 64 for q in wire) and query_id in wire):
        raise SpecError(f"'active' of query {query_id!r} must list at most {MAX_ACTIVE} "
                        f"query ids, {query_id!r} among them")
    return tuple(wire)


def forget_told(span: Spanned, host: str) -> None:
    """A new part on `host` (the one before was lost, or its workers all exited) knows no
    query: the master's RunQuery for its workers (it sends the running and queued queries
    to each worker that joins) must go there again, not be taken for a repeat."""
    span.sent = {key for key in span.sent if key[1] != host}


@dataclasses.dataclass(slots=True)
class Hosted:
    """Worker's side: a session of a master on another host, with workers here."""

    master: str
    master_url: str
    expected: int
    tunnel: Tunnel
    workers: dict[str, int] = dataclasses.field(default_factory=dict)
    ref: Any = None
    waiter: tuple[threading.Event, dict] | None = None
    corr: str = ""
    user: str = ""
    # queries from the master, in order, each sent to the workers once its packages are
    # here (packages/remote.py): query id -> the RunQuery, or None while they arrive
    queries: dict[str, Any] = dataclasses.field(default_factory=dict)


class Hosts(ProofActor):
    """The shell around the registry and the sessions spanning hosts (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        """Run by Thespian in the new actor process; only plain assignments.

        If it raised, the process would end before answering HostsStart and the root
        supervisor would count a start failure.
        """
        super().__init__(*args, **kwargs)
        self.endpoint: ClusterEndpoint | None = None
        self.joiner: Joiner | None = None
        self.forwarder: Forwarder | None = None
        self.lock = threading.Lock()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # from threads, to this thread
        self.spanned: dict[str, Spanned] = {}
        self.by_request: dict[str, str] = {}
        # session -> the hosts given a part of it, or being given one (`part_hosts`; read
        # by endpoint threads, replaced, never changed): they may send its workers' frames,
        # and their parts are alive (a part between two workers, one exited and its
        # replacement starting, is still there)
        self.data_hosts: dict[str, frozenset[str]] = {}
        # session -> (user, package versions its queries run with): what hosts with its
        # workers may pull from here (read by endpoint threads; replaced, never changed)
        self.granted: dict[str, tuple[str, frozenset[str]]] = {}
        self.hosted: dict[str, Hosted] = {}
        self.links: dict[str, PeerLink] = {}
        self.master_ok: dict[str, float] = {}  # master host -> last answer to sessions_alive
        self.next_check = 0.0
        self._ids = itertools.count()
        self.adds: dict[str, dict[str, Any]] = {}  # add_workers requests awaiting hosts
        # workers added to or removed from a session's part on this (the master's) host:
        # the request's corr -> (session, op, add request or "")
        self.local_ops: dict[str, tuple[str, str, str]] = {}
        # master's side: hosts that said goodbye -> when their workers count as lost if
        # they have not drained by then
        self.leaving_hosts: dict[str, float] = {}
        # worker's side, while this host leaves: the answer's (corr, reply_to), deadline,
        # the workers drained, and whether the master has been told it is over
        self.leaving: dict[str, Any] | None = None
        self.once = Once()  # add_workers by the client's request id (a retry adds nothing)
        # session -> its record as last written (hosts/spans.py; None before HostsStart)
        self.records: dict[str, bytes] | None = None
        # whether a record may have changed since they were last written: any message but
        # a bare wake-up (one that ran a thread's callback, or saw a host change, counts)
        self.dirty = True

    # -- Thespian messages ----------------------------------------------------
    def receive(self, message, sender) -> None:
        """Run by Thespian (via `ProofActor.receiveMessage`) on the actor thread, per message.

        Starts the endpoint and joiner, ticks the registry at wake-ups (which also
        runs the callbacks threads queued in `inbox`), places and serves spanning
        sessions. If it raises, `ProofActor.receiveMessage` logs the error and ends the
        process (exit 70); the supervisor restarts the actor from a clean state.
        """
        if not isinstance(message, WakeupMessage):
            self.dirty = True
        if isinstance(message, m.HostsStart):
            self._start(message, sender)
        elif isinstance(message, WakeupMessage):
            self._tick()
            self.wakeupAfter(BUSY_TICK if self._starting() else TICK)
        elif isinstance(message, m.HostsRequest) and message.op == "leave":
            self._leave(message, sender)
        elif isinstance(message, m.HostsRequest):
            self._status(message, sender)
        elif isinstance(message, m.PlaceSession):
            self._place(message)
        elif isinstance(message, m.SessionReady):
            self._session_ready(message)
        elif isinstance(message, m.SessionFailed):
            self._session_failed(message)
        elif isinstance(message, m.RunQuery):
            self._run_query(message, sender)
        elif isinstance(message, m.RemoteWorker):
            self._remote_worker(message, sender)
        elif isinstance(message, m.MasterRestarted):
            self._master_restarted(message)
        elif isinstance(message, m.StatusReply) and message.corr in self.local_ops:
            self._local_answer(message)
        elif isinstance(message, m.StatusReply):
            self._sessions_listed(message)
        elif isinstance(message, m.SessionWorkers):
            self._session_workers(message, sender)
        elif isinstance(message, ActorExitRequest):
            if self.joiner is not None:
                self.joiner.stop()
            close_host_links(forwarder=self.forwarder, endpoint=self.endpoint, clients=[
                *(hosted.tunnel for hosted in self.hosted.values()), *self.links.values()])
            return
        self._persist()

    def _start(self, message: m.HostsStart, sender) -> None:
        config = message.config
        self.config, self.sessions = config, message.sessions
        self.start_log(message.log_dir, actor="hosts")
        self.incarnation = config.get("incarnation") or uuid.uuid4().hex
        parts = self._surviving_parts(config["run_dir"])
        self._keep_incarnation(config["run_dir"], bool(parts))
        self.info = reg.HostInfo.from_wire(config["info"])
        self.secret = auth.read_secret(config["secret_file"])
        self.tls = TLSSettings(**config["tls"]) if config.get("tls") else None
        self.strategy = config.get("placement") or "round-robin"
        listed = [reg.HostInfo.from_wire(h) for h in config.get("listed", [])]
        self.registry = reg.HostRegistry(lost_after=float(config["lost_after"]),
                                         listed=[h for h in listed if h.name != self.info.name])
        self._self_heard(time.monotonic())
        supervisors = self._reload_spans(config["run_dir"])
        self._write_layout()
        run_dir = config["run_dir"]
        self.forwarder = Forwarder(self.secret, lambda sid: master_address(run_dir, sid))
        try:
            self.endpoint = ClusterEndpoint(cluster_address(self.info.address),
                                            ChannelServer(self.info.name, self.secret),
                                            self._handle, tls=self.tls)
        except (pynng.NNGException, ClusterError) as exc:
            self.send(sender, m.StartError(reason=f"cannot listen for the cluster on "
                                                  f"{self.info.address} (+1): {exc}"))
            return
        self._readopt(parts)
        self._readopt_spans(supervisors)
        if config.get("join"):
            self.joiner = Joiner(master_url=config["join"], info=self.info,
                                 incarnation=self.incarnation, secret=self.secret,
                                 interval=float(config["heartbeat"]), tls=self.tls,
                                 workers=self._hosted_workers)
        get_logger().info("hosts_started", name=self.info.name, endpoint=self.endpoint.address,
                          join=config.get("join"))
        self.wakeupAfter(TICK)
        self.send(sender, m.Started(pid=os.getpid(), info={"endpoint": self.endpoint.address}))

    # -- a restarted daemon (or hosts actor): the session parts that still run here -------
    def _surviving_parts(self, run_dir: str) -> dict[str, tuple[str, str, Any]]:
        """session -> (master, its URL, registry entry) of the parts of other hosts' sessions
        whose supervisor still runs here (the registry: actors/registry.py); rows of the
        others are removed."""
        registry = Registry(run_dir)
        try:
            parts = registry.remote_parts()
            entries = {e.session_id: e for e in registry.entries()} if parts else {}
        except sqlite3.Error as exc:
            get_logger().warning("remote_parts_unreadable", error=str(exc))
            return {}
        alive = {}
        for sid, (master, url) in parts.items():
            entry = entries.get(sid)
            if entry is not None and entry.address is not None and (
                    start_time(entry.supervisor.pid) == entry.supervisor.start):
                alive[sid] = (master, url, entry)
            elif entry is None:
                registry.remove(sid)
        return alive

    def _keep_incarnation(self, run_dir: str, parts: bool) -> None:
        """A daemon restarted while parts of sessions still run here is the same member for
        the master (it does not drop their workers): it keeps its incarnation."""
        path = os.path.join(run_dir, INCARNATION_FILE)
        if parts:
            try:
                with open(path) as f:
                    kept = f.read().strip()
                if 0 < len(kept) <= 64:
                    self.incarnation = kept
                    return
            except OSError:
                pass
        try:
            with open(path, "w") as f:
                f.write(self.incarnation)
        except OSError as exc:
            get_logger().warning("incarnation_not_written", error=str(exc))

    def _readopt(self, parts: dict[str, tuple[str, str, Any]]) -> None:
        """Re-open the tunnel of each surviving part and become its hosts actor; the master
        is asked whether the session still runs (`_check_masters`), else it is closed."""
        run_dir = self.config["run_dir"]
        for sid, (master, url, entry) in parts.items():
            workers = {w: p.pid for w, p in entry.children.items()
                       if start_time(p.pid) == p.start}
            try:
                tunnel = Tunnel(address=f"ipc://{os.path.join(run_dir, f'tunnel-{sid}.ipc')}",
                                session_id=sid, name=self.info.name, master=master,
                                master_url=url, secret=self.secret, tls=self.tls,
                                contexts=len(workers) + 1)
            except (pynng.NNGException, ClusterError) as exc:
                get_logger().warning("remote_session_not_readopted", session=sid,
                                     error=str(exc))
                continue
            hosted = self.hosted[sid] = Hosted(
                master=master, master_url=url, expected=len(workers), tunnel=tunnel,
                workers=workers, ref=address_from_wire(entry.address), user=entry.user)
            self.master_ok[master] = time.monotonic()
            self.send(hosted.ref, m.ChangeRemoteWorkers())  # its hosts actor is this one now
            # the master's host hears who runs here now: a worker that exited or restarted
            # while no hosts actor ran here was never reported (`_part_reconciled` there)
            self._link(master, url).submit("part_readopted", {"session": sid,
                                                              "workers": dict(workers)})
            get_logger().info("remote_session_readopted", session=sid, master=master,
                              workers=sorted(workers))

    # -- a restarted hosts actor on the master's host: the sessions it spread -----------
    def _reload_spans(self, run_dir: str) -> dict[str, Any]:
        """Reload the records of the sessions this host spread over hosts (hosts/spans.py)
        whose supervisor still runs (the registry says where), before the endpoint opens:
        the other hosts' checks that those sessions run are answered yes, their workers'
        frames are forwarded. Their hosts are known again as announced then (a host that
        has died since is lost after `lost_after`, one restarted since re-announces: either
        way its workers are lost). Returns session -> its supervisor's address."""
        self.records = {}
        records = spans.read_all(run_dir)
        if not records:
            return {}
        try:
            entries = Registry(run_dir).entries()
        except sqlite3.Error as exc:  # kept for the next start; the sessions run on
            get_logger().warning("spanned_not_readopted", error=str(exc))
            return {}
        live = {e.session_id: address_from_wire(e.address) for e in entries
                if e.address is not None and start_time(e.supervisor.pid) == e.supervisor.start}
        keep, drop = spans.readopt(records, live)
        for sid in drop:
            get_logger().info("spanned_session_gone", session=sid)
            spans.remove(run_dir, sid)
        now, changes = time.monotonic(), []
        for record in keep:
            sid = record.session_id
            create = m.CreateSession(corr="", session_id=sid, workers=sum(record.plan.values()),
                                     run_dir=run_dir, log_dir=self.config["log_dir"],
                                     user=record.user, request_id=record.request_id)
            self.spanned[sid] = Spanned(
                create=create, reply_to=None, corr="", plan=dict(record.plan),
                master=address_from_wire(record.master) if record.master else None,
                local=tuple(record.local), ready=True, readopting=True,
                remote={h: dict(p.workers) for h, p in record.parts.items()},
                next_index={h: p.next_index for h, p in record.parts.items()})
            if record.request_id:
                self.by_request[record.request_id] = sid
            if record.versions:
                self.granted = {**self.granted, sid: (record.user, frozenset(record.versions))}
            with self.lock:
                for part in record.parts.values():
                    if part.info.name != self.info.name:
                        changes += self.registry.handle(reg.Announce(
                            info=part.info, incarnation=part.incarnation, now=now))
        self._changed(changes)
        self._update_data_hosts()
        return {r.session_id: live[r.session_id] for r in keep}

    def _readopt_spans(self, supervisors: dict[str, Any]) -> None:
        """Tell each reloaded session's supervisor where its hosts actor is now (it answers
        with its master: `_master_restarted`, which has the master hear of the workers on
        other hosts through this actor) and ask each part's host which workers run there
        (`_part_reconciled`)."""
        for sid, supervisor in supervisors.items():
            span = self.spanned[sid]
            self.send(supervisor, m.HostsReadopt(session_id=sid))
            for host in sorted(span.remote):
                self._link(host, self.registry.hosts[host].info.address).submit(
                    "part_workers", {"session": sid}, ("part", sid, host))
            get_logger().info("spanned_session_readopted", session=sid, parts={
                h: sorted(w) for h, w in span.remote.items()})

    def _part_reconciled(self, sid: str, host: str, kind: str, body: Any,
                         error: str | None) -> None:
        span = self.spanned.get(sid)
        if span is None or host not in span.remote:
            return
        running = (body or {}).get("workers") if kind == "ok" else None
        if error is not None or kind != "ok" or not (running is None or isinstance(
                running, dict)):
            # its host's silence makes it lost (the registry), its workers with it
            get_logger().warning("part_not_reconciled", session=sid, host=host,
                                 error=error or str((body or {}).get("message", kind)))
            return
        if running is not None:
            running = {w: pid for w, pid in running.items() if isinstance(w, str) and (
                w.endswith(f"@{host}")) and isinstance(pid, int)}
        result = spans.reconcile_part(span.remote[host], running)
        master = span.master  # None: its supervisor's answer (the master) tells it all
        for worker_id, pid in result.lost if master is not None else ():
            self.send(master, m.WorkerLost(worker_id=worker_id, pid=pid))
        if running is None:  # no part there any more
            del span.remote[host]
            forget_told(span, host)
        else:
            span.remote[host] = result.workers
            if host not in self.leaving_hosts and master is not None:
                for worker_id, pid in result.joined:
                    self.send(span.master, m.WorkerJoined(worker_id=worker_id,
                                                          ref=self.myAddress, pid=pid))
        get_logger().info("part_reconciled", session=sid, host=host,
                          joined=[w for w, _ in result.joined], lost=[w for w, _ in result.lost])
        self._update_data_hosts()

    def _persist(self) -> None:
        """Run after each message: the records of the sessions spread over hosts that
        changed are written, those of sessions gone removed (hosts/spans.py)."""
        if self.records is None or not self.dirty:
            return
        self.dirty = False
        run_dir = self.config["run_dir"]
        with self.lock:
            hosts = dict(self.registry.hosts)
        for sid, span in self.spanned.items():
            if not span.ready or span.master is None:
                continue
            record = span_record(sid, span, hosts, self.granted.get(sid, ("", ()))[1])
            data = spans.encode(record)
            if self.records.get(sid) != data and spans.write(run_dir, record, data):
                self.records[sid] = data
        for sid in [s for s in self.records if s not in self.spanned]:
            spans.remove(run_dir, sid)
            del self.records[sid]

    def _part_workers(self, master: str, sid: str, event: threading.Event, box: dict) -> None:
        """Worker's side: which workers of `master`'s session `sid` run here (None: no
        part of it here), for its restarted hosts actor (`_part_reconciled` there)."""
        hosted = self.hosted.get(sid)
        box["workers"] = dict(hosted.workers) if hosted is not None and (
            hosted.master == master) else None
        event.set()

    def _starting(self) -> bool:
        """Whether a session's part is starting here or elsewhere (the tick is then short:
        the answers that arrive on threads are handled within 50 ms, else within 250)."""
        return bool(self.adds) or any(s.pending or not s.ready for s in self.spanned.values()) \
            or any(h.waiter is not None for h in self.hosted.values()) or bool(self.leaving)

    def _hosted_workers(self) -> int:
        return sum(len(h.workers) for h in list(self.hosted.values()))

    def _status(self, message: m.HostsRequest, sender) -> None:
        now = time.monotonic()
        with self.lock:
            rows = self.registry.snapshot(now)
        used = self._placed_counts()
        for row in rows:  # workers this daemon placed there (the registry has their own count)
            row["workers"] = max(row["workers"], used.get(row["name"], 0))
        joined = None if self.joiner is None else {
            "master": self.joiner.master_url, "state": self.joiner.state,
            "error": self.joiner.last_error if not self.joiner.joined else ""}
        self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status={
            "name": self.info.name, "address": self.info.address, "hosts": rows,
            "joined": joined, "channel": self.endpoint.server.statistics()
            if self.endpoint else {},
            "sessions": {sid: {"local": list(s.local),
                               "remote": {h: sorted(w) for h, w in s.remote.items()}}
                         for sid, s in self.spanned.items()}}))

    # -- the registry ------------------------------------------------------------
    def _self_heard(self, now: float) -> None:
        with self.lock:
            changes = self.registry.handle(reg.Heartbeat(
                name=self.info.name, incarnation=self.incarnation, now=now,
                workers=self._placed_counts().get(self.info.name, 0)))
            if changes:  # first time (or after a long stall): this host is its own member
                self.registry.handle(reg.Announce(info=self.info, incarnation=self.incarnation,
                                                  now=now))

    def _tick(self) -> None:
        """Run by `receive` at each wake-up: registry tick, queued thread callbacks, checks.

        Callbacks from `inbox` (e.g. `_delivered`) run here, so whatever they raise
        crashes the actor as from `receive`.
        """
        now = time.monotonic()
        self._self_heard(now)
        with self.lock:
            changes = self.registry.handle(reg.Tick(now=now))
        self._changed(changes)
        self.dirty = self.dirty or bool(changes)
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            self.dirty = True
            item[0](*item[1:])
        for host in [h for h, until in self.leaving_hosts.items() if now >= until]:
            self.dirty = True
            get_logger().warning("host_left_undrained", host=host)
            del self.leaving_hosts[host]
            self._host_gone(host)
        if self.leaving is not None:
            self._leaving_tick(now)
        if now >= self.next_check:
            self.next_check = now + SESSIONS_CHECK
            if self.spanned and self.sessions is not None:
                self.send(self.sessions, m.ListSessions(corr=f"hosts-{next(self._ids)}",
                                                        reply_to=self.myAddress))
            self._check_masters(now)

    def _write_layout(self) -> None:
        """Each host's data roots, for the masters' locality (hosts/locality.py)."""
        with self.lock:
            roots = {name: tuple(h.info.data_paths) for name, h in self.registry.hosts.items()}
        roots[self.info.name] = tuple(self.info.data_paths)
        layout = loc.Layout(host=self.info.name, machine=socket.gethostname(), roots=roots)
        if layout != getattr(self, "layout", None) and self.config.get("run_dir"):
            try:
                loc.write_layout(self.config["run_dir"], layout)
                self.layout = layout
            except OSError as exc:
                get_logger().warning("layout_not_written", error=str(exc))

    def _changed(self, changes: list, peer: str | None = None) -> None:
        log = get_logger()
        if any(isinstance(c, reg.HostJoined | reg.HostRestarted) for c in changes):
            self._write_layout()
        for change in changes:
            if isinstance(change, reg.HostJoined):
                log.info("host_joined", host=change.name, rejoined=change.rejoined, peer=peer)
                if self.leaving_hosts.pop(change.name, None) is not None:
                    self._host_gone(change.name)  # back before its goodbye was over
            elif isinstance(change, reg.HostLeft):
                # its workers drain (it removes them itself); what they hold is re-queued
                # when it says "drained", or at the bound if it never does
                log.info("host_left", host=change.name, peer=peer)
                self.leaving_hosts[change.name] = time.monotonic() + LEAVE_DRAIN + 10.0
                for span in self.spanned.values():  # no next query for them
                    for worker_id in span.remote.get(change.name, {}):
                        self.send(span.master, m.WorkerLeaving(worker_id=worker_id))
            elif isinstance(change, reg.HostRestarted):
                log.warning("host_restarted", host=change.name)
                self._host_gone(change.name)
            elif isinstance(change, reg.HostLost):
                log.warning("host_lost", host=change.name, reason=change.reason)
                self._host_gone(change.name)

    def _host_gone(self, host: str) -> None:
        """Its workers are gone: the masters re-queue what they had not delivered."""
        for sid, span in self.spanned.items():
            workers = span.remote.pop(host, {})
            for worker_id, pid in workers.items():
                self.send(span.master, m.WorkerLost(worker_id=worker_id, pid=pid))
            if workers:
                get_logger().warning("remote_workers_lost", session=sid, host=host,
                                     workers=sorted(workers))
            span.pending.discard(host)
            self._maybe_ready(sid, span)
        self._update_data_hosts()

    # -- requests from other daemons (endpoint threads) ---------------------------
    def _handle(self, name: str, kind: str, body: Any, peer: str) -> tuple[str, Any]:
        """Run by the ClusterEndpoint's threads: a sealed request from host `name`.

        `name` is the name it proved, not one it claims. HostListError is answered
        "refused" with its message; any other exception is logged by the endpoint
        and answered "refused" (the endpoint and the actor serve on).
        """
        body = body if isinstance(body, dict) else {}
        if kind == "data":
            sid = body.get("session")
            if not isinstance(sid, str) or name not in self.data_hosts.get(sid, ()):
                get_logger().warning("data_refused", host=name, session=sid,
                                     reason="no workers of this session there")
                return "refused", {"message": f"session {sid!r} has no workers on host "
                                              f"{name!r}"}
            assert self.forwarder is not None
            return self.forwarder.forward(sid, body.get("sealed"))
        if kind in ("announce", "heartbeat", "leave"):
            return self._membership(name, kind, body, peer)
        if kind == "start_workers":
            return self._start_workers(name, body)
        if kind == "stop_workers":
            sid, ids = body.get("session"), body.get("worker_ids")
            if not (isinstance(sid, str) and isinstance(ids, list)
                    and all(isinstance(w, str) for w in ids)):
                return "refused", {"message": "malformed stop_workers request"}
            self.inbox.put((self._stop_workers, name, sid, tuple(ids)))
            return "ok", {}
        if kind in ("run_query", "worker_event", "master_restarted"):
            sid = body.get("session")
            if not isinstance(sid, str):
                return "refused", {"message": "'session' must be a string"}
            self.inbox.put((self._peer_request, name, kind, body))
            return "ok", {}
        if kind == "package_get":
            return self._package_get(name, body)
        if kind == "part_workers":
            sid = body.get("session")
            if not isinstance(sid, str):
                return "refused", {"message": "'session' must be a string"}
            event, box = threading.Event(), {}
            self.inbox.put((self._part_workers, name, sid, event, box))
            if not event.wait(START_WAIT):
                return "refused", {"message": f"no answer within {START_WAIT:g} s"}
            return "ok", {"workers": box["workers"]}
        if kind == "part_readopted":  # its restarted hosts actor says who runs there now
            sid, workers = body.get("session"), body.get("workers")
            if not (isinstance(sid, str) and isinstance(workers, dict)
                    and len(workers) <= spans.MAX_WORKERS):
                return "refused", {"message": "malformed part_readopted request"}
            self.inbox.put((self._part_reconciled, sid, name, "ok", {"workers": workers},
                            None))
            return "ok", {}
        if kind == "sessions_alive":
            asked = body.get("sessions")
            asked = [s for s in asked if isinstance(s, str)] if isinstance(asked, list) else []
            alive = [s for s in asked if name in self.data_hosts.get(s, ())]
            return "ok", {"alive": alive}
        return "refused", {"message": f"unknown cluster request {kind!r}"}

    def _package_get(self, name: str, body: dict) -> tuple[str, Any]:
        """(endpoint thread) A chunk of a package version a session's query runs with, for
        a host with workers of that session (packages/remote.py)."""
        sid, digest, offset = body.get("session"), body.get("digest"), body.get("offset")
        user, versions = self.granted.get(sid, ("", frozenset())) if isinstance(sid, str) \
            else ("", frozenset())
        if name not in self.data_hosts.get(sid, ()) or digest not in versions:
            get_logger().warning("package_refused", host=name, session=sid, digest=digest)
            return "refused", {"message": f"no query of session {sid!r} with workers on "
                                          f"{name!r} runs with package version {digest!r}"}
        try:
            return "ok", remote_packages.serve(PackageStore(user), digest, offset)
        except PackageError as exc:
            return "refused", {"message": str(exc)}

    def _membership(self, name: str, kind: str, body: dict, peer: str) -> tuple[str, Any]:
        incarnation = body.get("incarnation")
        if not (isinstance(incarnation, str) and 0 < len(incarnation) <= 64):
            return "refused", {"message": "'incarnation' must be a short string"}
        now = time.monotonic()
        if kind == "announce":
            info = reg.HostInfo.from_wire(body.get("info"))
            if info.name != name:
                get_logger().warning("host_impostor", proved=name, claimed=info.name, peer=peer)
                return "refused", {"message": f"this host logged in as {name!r} but "
                                              f"announces itself as {info.name!r}"}
            if name == self.info.name:
                return "refused", {"message": f"{name!r} is this daemon's own name: give "
                                              f"each host its own --name"}
            with self.lock:
                changes = self.registry.handle(reg.Announce(info=info, incarnation=incarnation,
                                                            now=now))
            self.inbox.put((self._changed, changes, peer))
            return "ok", {"name": self.info.name}
        if kind == "heartbeat":
            workers = body.get("workers", 0)
            workers = workers if isinstance(workers, int) and workers >= 0 else 0
            with self.lock:
                changes = self.registry.handle(reg.Heartbeat(name=name, incarnation=incarnation,
                                                             now=now, workers=workers))
            if any(isinstance(c, reg.AnnounceAgain) for c in changes):
                return "announce", {}
            return "ok", {}
        with self.lock:
            changes = self.registry.handle(reg.Leave(name=name, incarnation=incarnation,
                                                     now=now))
        self.inbox.put((self._changed, changes, peer))
        if body.get("drained") is True:  # its workers are gone: re-queue what they held
            self.inbox.put((self._host_drained, name))
        return "ok", {}

    def _host_drained(self, host: str) -> None:
        with self.lock:
            state = self.registry.hosts[host].state if host in self.registry.hosts else None
        if state is reg.State.LEFT:
            self.leaving_hosts.pop(host, None)
            self._host_gone(host)

    # -- master's side: placing a session -------------------------------------------
    def _placed_counts(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for span in self.spanned.values():
            used[self.info.name] = used.get(self.info.name, 0) + len(span.local)
            for host, workers in span.remote.items():
                used[host] = used.get(host, 0) + len(workers)
        return used

    def _place(self, message: m.PlaceSession) -> None:
        create = message.create
        if create.request_id and create.request_id in self.by_request:  # a client's retry
            sid = self.by_request[create.request_id]
            span = self.spanned.get(sid)
            if span is not None:
                span.corr, span.reply_to = create.corr, create.reply_to
                if span.ready:
                    self._announce(sid, span)
                return
        with self.lock:
            alive = [self.registry.hosts[n] for n in self.registry.alive()]
        used = self._placed_counts()
        candidates = [pl.Candidate(name=h.info.name, cores=h.info.cores,
                                   used=max(h.workers, used.get(h.info.name, 0)))
                      for h in alive]
        try:
            explicit = pl.parse_explicit(message.placement) if message.placement else None
            plan = pl.place(create.workers, candidates, local=self.info.name,
                            strategy=self.strategy, explicit=explicit)
        except pl.PlacementError as exc:
            self.send(create.reply_to, m.SessionFailed(corr=create.corr,
                                                       session_id=create.session_id,
                                                       error=str(exc)))
            return
        sid = create.session_id
        self.spanned[sid] = Spanned(create=create, reply_to=create.reply_to, corr=create.corr,
                                    plan=plan,
                                    pending={h for h in plan if h != self.info.name})
        if create.request_id:
            self.by_request[create.request_id] = sid
        self._update_data_hosts()
        get_logger().info("session_placed", session=sid, plan=plan)
        self.send(self.sessions, dataclasses.replace(
            create, workers=plan.get(self.info.name, 0), reply_to=self.myAddress,
            hosts=self.myAddress))

    def _session_ready(self, message: m.SessionReady) -> None:
        span = self.spanned.get(message.session_id)
        if span is None:
            return
        if span.master is not None:  # announced again (a retry through the sessions actor)
            if span.ready:
                self._announce(message.session_id, span)
            return
        span.master, span.local = message.master, tuple(message.workers)
        sid = message.session_id
        with self.lock:
            hosts = dict(self.registry.hosts)
        for host in sorted(span.pending):
            count = span.plan[host]
            info = hosts[host].info if host in hosts else None
            if info is None:
                span.pending.discard(host)
                continue
            span.next_index[host] = count
            self._link(host, info.address).submit("start_workers", {
                "session": sid, "master_url": self.info.address, "user": span.create.user,
                "worker_ids": [f"worker-{i}@{host}" for i in range(count)]},
                ("started", sid, host, ""))
        self._update_data_hosts()
        self._maybe_ready(sid, span)

    def _master_restarted(self, message: m.MasterRestarted) -> None:
        """A spanning session's master was restarted (its session supervisor says): its
        queries come from the new one now, and the session's workers on other hosts join
        it, as its supervisor joins the local ones to it (they dial the same address: the
        master's host forwards their data frames there, `Forwarder`). Else the new master
        would count only the local workers, and those on other hosts never get a query."""
        sid = message.session_id
        span = self.spanned.get(sid)
        if span is None or (span.master is None and not span.readopting):
            # before the session's announce (it names the new master) or after its end
            get_logger().info("master_restart_unplaced", session=sid, reason=(
                "no session spanning hosts here" if span is None else "not announced yet"))
            return
        changed = span.master != message.master
        joined = new_master(span, message.master, self.leaving_hosts)
        for worker_id, pid in joined:
            self.send(span.master, m.WorkerJoined(worker_id=worker_id, ref=self.myAddress,
                                                  pid=pid))
        if changed:  # the old master's queries are over: a worker starting there gets none
            for host in sorted(span.remote):
                # on the link its queries go by: before the new master's first one
                self._link(host, self.registry.hosts[host].info.address).submit(
                    "master_restarted", {"session": sid})
        get_logger().info("spanned_master_restarted", session=sid,
                          workers=sorted(w for w, _ in joined))

    def _session_failed(self, message: m.SessionFailed) -> None:
        span = self.spanned.pop(message.session_id, None)
        if span is not None:  # the local part failed to start
            self._update_data_hosts()
            self.send(span.reply_to, m.SessionFailed(corr=span.corr,
                                                     session_id=message.session_id,
                                                     error=message.error, retry=message.retry))
            return
        for sid, hosted in self.hosted.items():  # a remote part failed to start
            if hosted.corr == message.corr and hosted.waiter is not None:
                event, box = hosted.waiter
                box["error"] = message.error
                event.set()
                hosted.waiter = None
                self.inbox.put((self._drop_hosted, sid))

    def _link(self, host: str, url: str) -> PeerLink:
        link = self.links.get(host)
        if link is None or link.url != url:
            if link is not None:
                link.close()
            link = self.links[host] = PeerLink(
                name=self.info.name, peer=host, url=url, secret=self.secret, tls=self.tls,
                deliver=lambda tag, kind, body, error: self.inbox.put(
                    (self._delivered, tag, kind, body, error)))
        return link

    def _delivered(self, tag: Any, kind: str, body: Any, error: str | None) -> None:
        """Run by `_tick` on the actor thread: an answer from another daemon (via a PeerLink).

        The link's thread only queues it in `inbox`; if it raises, the actor crashes
        as from `receive`.
        """
        if not isinstance(tag, tuple):
            return
        if tag[0] == "started":
            _, sid, host, add = tag
            span = self.spanned.get(sid)
            adding = self.adds.get(add) if add else None
            if span is None or (not add and host not in span.pending):
                return
            span.pending.discard(host)
            workers = (body or {}).get("workers") if kind == "ok" else None
            reason = ""
            if not isinstance(workers, dict):
                reason = error or str((body or {}).get("message", kind))
                get_logger().warning("remote_start_failed", session=sid, host=host,
                                     error=reason)
            else:
                if not span.remote.get(host):  # a new part there (or its workers all gone)
                    forget_told(span, host)
                mine = span.remote.setdefault(host, {})
                for worker_id, pid in workers.items():
                    if isinstance(worker_id, str) and isinstance(pid, int) and (
                            mine.get(worker_id) != pid):
                        if worker_id not in mine and adding is not None:
                            adding["added"].append(worker_id)
                        mine[worker_id] = pid
                        self.send(span.master, m.WorkerJoined(worker_id=worker_id,
                                                              ref=self.myAddress, pid=pid))
            if adding is not None:
                adding["pending"].discard(host)
                if reason:
                    adding["errors"].append(f"{host}: {reason}")
            # a part that failed to start is no longer counted alive there: that host
            # closes it if it runs after all (`_check_masters` there)
            self._update_data_hosts()
            if adding is not None:
                if not adding["pending"]:
                    self._added(add)
            else:
                self._maybe_ready(sid, span)
        elif tag[0] == "left":
            self._left(tag[1], error)
        elif tag[0] == "part":
            self._part_reconciled(tag[1], tag[2], kind, body, error)
        elif tag[0] == "alive":
            _, master = tag
            if error is None and kind == "ok":
                self.master_ok[master] = time.monotonic()
                alive = set((body or {}).get("alive") or [])
                for sid in [s for s, h in self.hosted.items()
                            if h.master == master and h.waiter is None and s not in alive]:
                    get_logger().info("remote_session_ended", session=sid, master=master)
                    self._drop_hosted(sid)

    def _maybe_ready(self, sid: str, span: Spanned) -> None:
        if span.ready or span.pending or span.master is None:
            return
        span.ready = True
        if not span.local and not any(span.remote.values()):
            self.spanned.pop(sid, None)
            self._update_data_hosts()
            self.send(self.sessions, m.CloseSession(corr=f"hosts-{next(self._ids)}",
                                                    session_id=sid, admin=True,
                                                    reply_to=self.myAddress))
            self.send(span.reply_to, m.SessionFailed(
                corr=span.corr, session_id=sid,
                error=f"no host could start the session's workers (plan {span.plan})"))
            return
        self._announce(sid, span)

    def _announce(self, sid: str, span: Spanned) -> None:
        if span.reply_to is None:  # reloaded (`_reload_spans`): nobody waits for it
            return
        workers = tuple(span.local) + tuple(sorted(w for ws in span.remote.values()
                                                   for w in ws))
        self.send(span.reply_to, m.SessionReady(corr=span.corr, session_id=sid,
                                                master=span.master, workers=workers,
                                                host=self.info.name))

    def _session_workers(self, message: m.SessionWorkers, sender) -> None:
        """List, add or remove a session's workers (`session.add_workers`, `proofctl workers`)."""
        reply_to = message.reply_to or sender
        sid = message.session_id
        span = self.spanned.get(sid)

        def answer(status: dict[str, Any]) -> None:
            self.send(reply_to, m.StatusReply(corr=message.corr, status=status))

        if span is None or not span.ready:
            answer({"error": f"no session {sid!r} spanning this cluster's hosts (closed, "
                             f"still starting, or not opened on this daemon)"})
            return
        if not (message.admin or span.create.user == message.user):
            answer({"error": f"session {sid!r} belongs to another user; only its owner or "
                             f"an admin may change its workers"})
            return
        if message.op == "ls":
            answer({"workers": self._workers_of(span)})
        elif message.op == "add":
            self._add_workers(message, span, answer)
        else:
            self._remove_workers(message, span, answer)

    def _workers_of(self, span: Spanned) -> list[dict[str, Any]]:
        rows = [{"name": w, "host": self.info.name} for w in span.local]
        rows += [{"name": w, "host": h, "pid": pid} for h, ws in sorted(span.remote.items())
                 for w, pid in sorted(ws.items())]
        return rows

    def _add_workers(self, message: m.SessionWorkers, span: Spanned, reply) -> None:
        sid, rid = message.session_id, message.request_id
        if not self.once.begin(rid, reply):  # a retry: answered with the first's outcome
            return

        def answer(status: dict[str, Any]) -> None:
            reply(status)
            self.once.end(rid, status)

        if message.count < 1:
            answer({"error": "add at least one worker"})
            return
        with self.lock:  # this host too: its part of the session adds them (sessions.py)
            alive = [self.registry.hosts[n] for n in self.registry.alive()]
        used = self._placed_counts()
        candidates = [pl.Candidate(name=h.info.name, cores=h.info.cores,
                                   used=max(h.workers, used.get(h.info.name, 0)))
                      for h in alive]
        try:
            plan = pl.place(message.count, candidates, local=self.info.name,
                            strategy=self.strategy,
                            explicit={message.host: message.count} if message.host else None)
        except pl.PlacementError as exc:
            answer({"error": str(exc)})
            return
        add = f"add-{next(self._ids)}"
        self.adds[add] = {"answer": answer, "sid": sid, "pending": set(plan), "added": [],
                          "errors": []}
        self._update_data_hosts()  # the hosts given a part now: that part is alive
        for host, count in plan.items():
            if host == self.info.name:
                self._local_op(sid, span, add, m.SessionWorkers(
                    corr=f"{add}/local", session_id=sid, op="add", count=count, host=host))
                continue
            first = span.next_index.get(host, 0)
            span.next_index[host] = first + count
            url = self.registry.hosts[host].info.address
            self._link(host, url).submit("start_workers", {
                "session": sid, "master_url": self.info.address, "user": span.create.user,
                "worker_ids": [f"worker-{i}@{host}" for i in range(first, first + count)]},
                ("started", sid, host, add))
        get_logger().info("workers_adding", session=sid, plan=plan)

    def _added(self, add: str) -> None:
        adding = self.adds.pop(add)
        span = self.spanned.get(adding["sid"])
        if not adding["added"]:
            adding["answer"]({"error": "no worker could be added: " + "; ".join(
                adding["errors"])})
            return
        adding["answer"]({"added": sorted(adding["added"]), "errors": adding["errors"],
                          "workers": self._workers_of(span) if span else []})

    def _local_op(self, sid: str, span: Spanned, add: str, ask: m.SessionWorkers) -> None:
        """Add or remove workers of the session's part on this host: its own supervisor
        does (sessions.py), and answers `_local_answer`."""
        self.local_ops[ask.corr] = (sid, ask.op, add)
        self.send(self.sessions, dataclasses.replace(ask, reply_to=self.myAddress,
                                                     user=span.create.user, admin=True))

    def _local_answer(self, message: m.StatusReply) -> None:
        sid, op, add = self.local_ops.pop(message.corr)
        span, status = self.spanned.get(sid), message.status
        error = status.get("error")
        if error:
            get_logger().warning("local_workers_failed", session=sid, op=op, error=error)
        if op == "add" and span is not None:
            added = [w for w in status.get("added") or [] if isinstance(w, str)]
            span.local = tuple(span.local) + tuple(w for w in added if w not in span.local)
            adding = self.adds.get(add)
            if adding is not None:
                adding["added"].extend(added)
                adding["errors"].extend(f"{self.info.name}: {e}" for e in (
                    [error] if error else status.get("errors") or []))
                adding["pending"].discard(self.info.name)
                if not adding["pending"]:
                    self._added(add)

    def _remove_workers(self, message: m.SessionWorkers, span: Spanned, answer) -> None:
        remote = {w: h for h, ws in span.remote.items() for w in ws}
        every = sorted([*remote, *span.local])

        def newest(names) -> list[str]:
            return sorted(names, key=lambda w: (int(w.split("-")[1].split("@")[0]), w),
                          reverse=True)

        if message.names:
            unknown = [n for n in message.names if n not in remote and n not in span.local]
            if unknown:
                answer({"error": f"cannot remove {', '.join(unknown)}: no such worker "
                                 f"(workers: {', '.join(every)})"})
                return
            names = list(dict.fromkeys(message.names))
        else:
            # the most recently added first: other hosts' workers, then this host's
            names = (newest(remote) + newest(span.local))[:message.count]
            if len(names) < max(message.count, 1):
                answer({"error": f"only {len(every)} workers can be removed, not "
                                 f"{message.count}"})
                return
        if len(names) >= len(every):
            answer({"error": f"cannot remove every worker of session {message.session_id}: "
                             f"a session keeps at least one (close the session to stop "
                             f"them all)"})
            return
        local = [n for n in names if n in span.local]
        if local:
            self._local_op(message.session_id, span, "", m.SessionWorkers(
                corr=f"rm-{next(self._ids)}", session_id=message.session_id, op="rm",
                names=tuple(local), host=self.info.name))
            span.local = tuple(w for w in span.local if w not in local)
        by_host: dict[str, list[str]] = {}
        for name in names:
            if name in remote:
                by_host.setdefault(remote[name], []).append(name)
        for host, ids in by_host.items():
            for worker_id in ids:  # no next query for them while they drain
                self.send(span.master, m.WorkerLeaving(worker_id=worker_id))
            url = self.registry.hosts[host].info.address
            self._link(host, url).submit("stop_workers", {"session": message.session_id,
                                                          "worker_ids": ids})
        get_logger().info("workers_removing", session=message.session_id, workers=names)
        answer({"removed": sorted(names)})

    def _update_data_hosts(self) -> None:
        """Called whenever a session's parts or the starts in flight change (actor thread)."""
        adding: dict[str, list[set[str]]] = {}
        for request in self.adds.values():
            adding.setdefault(request["sid"], []).append(request["pending"])
        self.data_hosts = {sid: part_hosts(span, adding.get(sid, ()), self.info.name)
                           for sid, span in self.spanned.items()}

    def _run_query(self, message: m.RunQuery, sender) -> None:
        """The master tells its workers of a query: those on other hosts via their daemon."""
        for sid, span in self.spanned.items():
            if span.master != sender:
                continue
            packages = remote_packages.wire_list(message.spec.packages)
            if packages:
                user, versions = self.granted.get(sid, (span.create.user, frozenset()))
                self.granted = {**self.granted, sid: (user, versions | {
                    p["version"] for p in packages})}
            for host in hosts_to_tell(span, message.query_id, self.leaving_hosts):
                url = self.registry.hosts[host].info.address
                # the client's fields, and the packages by version (their paths are
                # this host's: that host gets them by hash, packages/remote.py);
                # that host gives them an output_dir of its own (_packages_here)
                # with the master's running and queued queries: that host hands them all
                # to a worker that starts there later (remote_session.py)
                self._link(host, url).submit("run_query", {
                    "session": sid, "query_id": message.query_id,
                    "spec": message.spec.to_wire(), "packages": packages,
                    "active": list(message.active)})
            return
        # never silent: workers on other hosts that the master counts on miss this query
        get_logger().warning("run_query_unplaced", query=message.query_id,
                             reason="from no master of a session spanning hosts here")

    def _peer_request(self, host: str, kind: str, body: dict) -> None:
        sid = body["session"]
        if kind == "run_query":  # worker's side: the master's query, for our workers
            hosted, query_id = self.hosted.get(sid), body.get("query_id")
            if hosted is None or hosted.master != host or not isinstance(query_id, str):
                # never silent: a query its master counts on workers here for is lost
                get_logger().warning("run_query_refused", peer=host, session=sid,
                                     query=query_id, reason=(
                                         "no part of this session here" if hosted is None
                                         else "not from its master" if hosted.master != host
                                         else "no query id"))
                return
            try:  # checked as the gateway checks a client's
                spec = QuerySpec.from_wire(body.get("spec"))
                wanted = remote_packages.check_wire_list(body.get("packages") or [])
                active = active_list(body.get("active"), query_id)
            except (SpecError, PackageError) as exc:
                get_logger().warning("bad_query_spec", peer=host, error=str(exc))
                return
            # kept in order until the part's supervisor is known (`_send_queries`)
            self._query_packages(sid, hosted, query_id, spec, wanted, active)
            return
        if kind == "master_restarted":  # worker's side: its queries are over
            hosted = self.hosted.get(sid)
            if hosted is not None and hosted.master == host:
                # a pull still running for one of them finds it gone (`_packages_here`)
                hosted.queries = {}
                if hosted.ref is not None:
                    self.send(hosted.ref, m.MasterRestarted(session_id=sid, master=None))
                get_logger().info("remote_master_restarted", session=sid, master=host)
            return
        # master's side: a worker there (re)started or exited
        span = self.spanned.get(sid)
        worker_id, pid, alive = body.get("worker"), body.get("pid"), body.get("alive")
        if span is None or span.master is None or not isinstance(worker_id, str) or (
                not isinstance(pid, int)) or not worker_id.endswith(f"@{host}"):
            return
        event = spans.worker_event(span.remote.get(host, {}), worker_id, pid, bool(alive))
        span.remote[host] = event.workers
        for lost_id, lost_pid in event.lost:  # first: its packets go back before any grant
            self.send(span.master, m.WorkerLost(worker_id=lost_id, pid=lost_pid))
        for joined_id, joined_pid in event.joined:
            self.send(span.master, m.WorkerJoined(worker_id=joined_id, ref=self.myAddress,
                                                  pid=joined_pid))
        self._update_data_hosts()

    def _query_packages(self, sid: str, hosted: Hosted, query_id: str, spec: QuerySpec,
                        wanted: list[dict[str, Any]], active: tuple[str, ...] = ()) -> None:
        """Worker's side: have the query's packages here (pulled from the master's host if
        missing, on a thread), then give the workers the query with their local paths."""
        if query_id in hosted.queries:
            return
        hosted.queries[query_id] = None
        if not wanted:
            self._packages_here(sid, query_id, spec, [], active)
            return
        secret, tls, me = self.secret, self.tls, self.info.name
        master, url, user = hosted.master, hosted.master_url, hosted.user

        def pull() -> None:
            client = None

            def fetch(digest: str, offset: int) -> dict[str, Any]:
                nonlocal client
                if client is None:
                    client = ClusterClient(cluster_address(url), me, secret, server_id=master,
                                           timeout=PULL_TIMEOUT, tls=tls)
                try:
                    kind, answer = client.call("package_get", {
                        "session": sid, "digest": digest, "offset": offset})
                except ClusterError as exc:
                    raise PackageError(f"cannot get package version {digest[:12]} from host "
                                       f"{master!r}: {exc}") from None
                if kind != "ok" or not isinstance(answer, dict):
                    raise PackageError(f"host {master!r} would not give package version "
                                       f"{digest[:12]}: {(answer or {}).get('message', kind)}")
                return answer

            try:
                local = remote_packages.ensure(PackageStore(user), f"{sid}@{master}", wanted,
                                               fetch, where=f"host {master!r}")
                get_logger().info("query_packages_ready", session=sid, query=query_id,
                                  packages=[p["name"] for p in local])
            except Exception as exc:  # the query fails on these workers, saying why
                get_logger().warning("query_packages_failed", session=sid, query=query_id,
                                     error=str(exc))
                reason = f"on host {me!r}: {exc}" if isinstance(exc, PackageError) else \
                    f"on host {me!r}: getting the query's packages failed: {exc!r}"
                local = [{"name": p["name"], "version": p["version"], "path": "",
                          "setup": None, "error": reason} for p in wanted[:1]]
            finally:
                if client is not None:
                    client.close()
            self.inbox.put((self._packages_here, sid, query_id, spec, local, active))

        threading.Thread(target=pull, name=f"packages-{query_id}", daemon=True).start()

    def _packages_here(self, sid: str, query_id: str, spec: QuerySpec,
                       local: list[dict[str, Any]], active: tuple[str, ...] = ()) -> None:
        hosted = self.hosted.get(sid)
        if hosted is None or query_id not in hosted.queries:
            return
        # ctx.output_file files stay on this host, in its sandbox (the master's output_dir,
        # a path there, does not travel with the spec): output_files.py
        spec = spec.with_packages(local).with_output_dir(query_output_dir(sid, query_id))
        hosted.queries[query_id] = m.RunQuery(query_id=query_id, spec=spec, active=active)
        self._send_queries(hosted)

    def _send_queries(self, hosted: Hosted) -> None:
        """Give the part's supervisor the queries whose packages are here, in the master's
        order. Before it first speaks (`_remote_worker`: the part is still starting, within
        START_WAIT) they wait in `hosted.queries`, and go then."""
        if hosted.ref is None:
            return
        for qid, run in hosted.queries.items():  # in the master's order: none overtakes
            if run is None:
                break
            if run is not SENT:
                self.send(hosted.ref, run)
                hosted.queries[qid] = SENT  # kept: a repeat is neither pulled nor sent again
        if len(hosted.queries) > 64:
            keep = list(hosted.queries.items())[-32:]
            if all(v is SENT for v in list(hosted.queries.values())[:-32]):
                hosted.queries = dict(keep)

    def _sessions_listed(self, message: m.StatusReply) -> None:
        sessions = message.status.get("sessions")
        if not isinstance(sessions, dict):
            return
        for sid in [s for s, span in self.spanned.items() if span.ready and not (
                sessions.get(s) or {}).get("alive")]:
            get_logger().info("spanned_session_ended", session=sid)
            del self.spanned[sid]
            assert self.forwarder is not None
            self.forwarder.forget(sid)
        self._update_data_hosts()

    # -- worker's side: leaving the cluster ------------------------------------------------
    def _leave(self, message: m.HostsRequest, sender) -> None:
        """`proofctl daemon stop` on this host: say goodbye, drain, then answer (module
        docstring). A repeated request (a retry) only changes who is answered."""
        reply_to = message.reply_to or sender
        if self.joiner is None:
            self.send(reply_to, m.StatusReply(corr=message.corr, status={"left": None}))
            return
        if self.leaving is not None:
            self.leaving.update(corr=message.corr, reply_to=reply_to)
            return
        joiner = self.joiner
        master = joiner.client.channel.server_id if joiner.joined else None
        joiner.stop()  # no heartbeat (nor announce) from now on
        self.leaving = {"corr": message.corr, "reply_to": reply_to, "master": master,
                        "deadline": time.monotonic() + LEAVE_DRAIN, "told": False,
                        "drained": sorted(w for h in self.hosted.values() for w in h.workers)}
        if master:
            self._link(master, joiner.master_url).submit("leave", {
                "incarnation": self.incarnation})
        for hosted in self.hosted.values():  # as remove_workers: each drains on its own
            if hosted.ref is not None and hosted.workers:
                hosted.expected = 0
                self.send(hosted.ref, m.ChangeRemoteWorkers(remove=tuple(hosted.workers)))
        get_logger().info("host_leaving", master=joiner.master_url,
                          workers=self.leaving["drained"])
        self._leaving_tick(time.monotonic())

    def _leaving_tick(self, now: float) -> None:
        """Run at each tick while leaving: once the workers are gone (or at the bound), tell
        the master (after their exits, on the same ordered link), then answer."""
        leaving = self.leaving
        assert leaving is not None and self.joiner is not None
        if leaving["told"] or (self._hosted_workers() and now < leaving["deadline"]):
            return
        leaving["told"] = True
        left = self._hosted_workers() == 0
        if not left:
            get_logger().warning("host_leave_undrained", workers=self._hosted_workers())
        if leaving["master"]:
            self._link(leaving["master"], self.joiner.master_url).submit(
                "leave", {"incarnation": self.incarnation, "drained": True}, ("left", left))
        else:
            self._left(left)

    def _left(self, drained: bool, error: str | None = None) -> None:
        leaving = self.leaving
        assert leaving is not None and self.joiner is not None
        get_logger().info("host_left_cluster", master=self.joiner.master_url, error=error)
        self.send(leaving["reply_to"], m.StatusReply(corr=leaving["corr"], status={
            "left": self.joiner.master_url, "workers": leaving["drained"],
            "drained": drained, "master_error": error or ""}))  # "error" would fail it

    # -- worker's side: a session of another host's master -----------------------------
    def _start_workers(self, master: str, body: dict) -> tuple[str, Any]:
        """(endpoint thread) Start this host's part of a session; answer with its workers."""
        sid, url, ids = body.get("session"), body.get("master_url"), body.get("worker_ids")
        user = body.get("user") if isinstance(body.get("user"), str) else ""
        if not (isinstance(sid, str) and SESSION_ID.match(sid) and isinstance(url, str)
                and isinstance(ids, list) and 0 < len(ids) <= 256
                and all(isinstance(w, str) and WORKER_ID.match(w)
                        and w.endswith(f"@{self.info.name}") for w in ids)):
            return "refused", {"message": "malformed start_workers request"}
        event, box = threading.Event(), {}
        self.inbox.put((self._host_session, master, sid, url, tuple(ids), user, event, box))
        if not event.wait(START_WAIT):
            return "refused", {"message": f"the workers did not start within {START_WAIT:g} s"}
        if "error" in box:
            return "refused", {"message": box["error"]}
        if START_ANSWER_DELAY:  # tests: the master hears late that the part runs
            time.sleep(START_ANSWER_DELAY)
        return "ok", {"workers": box["workers"]}

    def _host_session(self, master: str, sid: str, url: str, ids: tuple[str, ...], user: str,
                      event: threading.Event, box: dict) -> None:
        hosted = self.hosted.get(sid)
        if hosted is not None:  # more workers for a session already here (added on the fly)
            if hosted.master != master or hosted.ref is None or hosted.waiter is not None:
                box["error"] = f"session {sid} is not ready for more workers here"
                event.set()
                return
            new = tuple(w for w in ids if w not in hosted.workers)
            hosted.expected = len(hosted.workers) + len(new)
            hosted.waiter = (event, box)
            hosted.tunnel.add_contexts(len(new))
            self.send(hosted.ref, m.ChangeRemoteWorkers(add=new))
            return
        run_dir = self.config["run_dir"]
        try:
            tunnel = Tunnel(address=f"ipc://{os.path.join(run_dir, f'tunnel-{sid}.ipc')}",
                            session_id=sid, name=self.info.name, master=master,
                            master_url=url, secret=self.secret, tls=self.tls,
                            contexts=len(ids) + 1)
        except (pynng.NNGException, ClusterError) as exc:
            box["error"] = f"cannot open the tunnel to {master}: {exc}"
            event.set()
            return
        corr = f"hosts-{next(self._ids)}"
        self.hosted[sid] = Hosted(master=master, master_url=url, expected=len(ids),
                                  tunnel=tunnel, waiter=(event, box), corr=corr, user=user)
        try:  # so that a restarted daemon re-opens its tunnel (`_readopt`)
            Registry(run_dir).set_remote(sid, master, url)
        except sqlite3.Error as exc:
            get_logger().warning("remote_part_not_recorded", session=sid, error=str(exc))
        self.master_ok.setdefault(master, time.monotonic())
        self.send(self.sessions, m.CreateSession(
            corr=corr, session_id=sid, workers=len(ids), run_dir=run_dir,
            log_dir=self.config["log_dir"], reply_to=self.myAddress, user=user,
            remote_of=master, worker_ids=ids, packet_address=tunnel.address))

    def _remote_worker(self, message: m.RemoteWorker, sender) -> None:
        hosted = self.hosted.get(message.session_id)
        if hosted is None:
            return
        first, hosted.ref = hosted.ref is None, sender
        if first:  # the part's supervisor speaks first: the queries waiting for it go
            self._send_queries(hosted)
        known = hosted.workers.get(message.worker_id) == message.pid
        if message.alive:
            hosted.workers[message.worker_id] = message.pid
        elif hosted.workers.get(message.worker_id) == message.pid:
            del hosted.workers[message.worker_id]
        if hosted.waiter is not None:
            if len(hosted.workers) == hosted.expected:
                event, box = hosted.waiter
                box["workers"] = dict(hosted.workers)
                hosted.waiter = None
                event.set()
                # the master just asked for it: its silence is counted from now
                self.master_ok[hosted.master] = time.monotonic()
            return
        if message.alive and known:  # a re-adopted part saying who runs: no news
            return
        link = self._link(hosted.master, hosted.master_url)
        link.submit("worker_event", {"session": message.session_id,
                                     "worker": message.worker_id, "pid": message.pid,
                                     "alive": message.alive})

    def _stop_workers(self, master: str, sid: str, ids: tuple[str, ...]) -> None:
        hosted = self.hosted.get(sid)
        if hosted is None or hosted.master != master or hosted.ref is None:
            return
        hosted.expected = max(0, hosted.expected - len(ids))
        self.send(hosted.ref, m.ChangeRemoteWorkers(remove=ids))

    def _check_masters(self, now: float) -> None:
        """Ask each master whether our sessions of it still run; close those that do not,
        and all of a master silent for longer than a lost host would be."""
        masters = {h.master: h.master_url for h in self.hosted.values() if h.waiter is None}
        silent = max(3 * float(self.config["lost_after"]), 10.0) + SESSIONS_CHECK
        for master, url in masters.items():
            if now - self.master_ok.get(master, now) > silent:
                for sid in [s for s, h in self.hosted.items() if h.master == master]:
                    get_logger().warning("remote_session_orphaned", session=sid, master=master)
                    self._drop_hosted(sid)
                self.master_ok.pop(master, None)
                continue
            sids = [s for s, h in self.hosted.items() if h.master == master]
            self._link(master, url).submit("sessions_alive", {"sessions": sids},
                                           ("alive", master))

    def _drop_hosted(self, sid: str) -> None:
        hosted = self.hosted.pop(sid, None)
        if hosted is None:
            return
        hosted.tunnel.close()
        if hosted.user:  # its package versions may be evicted from now on
            try:
                PackageStore(hosted.user).unpin(f"{sid}@{hosted.master}")
            except PackageError as exc:
                get_logger().warning("packages_unpin_failed", session=sid, error=str(exc))
        # the master, if it still hears us, re-queues what these workers had not delivered
        link = self._link(hosted.master, hosted.master_url)
        for worker_id, pid in hosted.workers.items():
            link.submit("worker_event", {"session": sid, "worker": worker_id, "pid": pid,
                                         "alive": False})
        self.send(self.sessions, m.CloseSession(corr=f"hosts-{next(self._ids)}",
                                                session_id=sid, admin=True,
                                                reply_to=self.myAddress))
