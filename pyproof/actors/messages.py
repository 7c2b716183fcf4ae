"""Control messages between actors (Thespian messages, inside one daemon).

Every request carries a correlation id `corr`, because Thespian's `ask()`
does not match replies to requests (a timed-out ask gets a stale reply next).
Clients never send these: they speak CBOR frames to the gateway, which
validates them and turns them into these messages.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.query.spec import QuerySpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Boot:
    corr: str
    control_address: str
    run_dir: str
    log_dir: str
    daemon_pid: int
    limits: dict[str, int] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)
    cluster: dict[str, Any] | None = None  # HostsStart.config, when started with a cluster secret
    # a lite daemon opens its client's first session while it boots (see SessionsStart)
    preopen: CreateSession | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Booted:
    corr: str
    control_address: str
    root_pid: int = 0  # the daemon exits if this process is gone (the tree gave up)


@dataclass(frozen=True, slots=True, kw_only=True)
class BootFailed:
    corr: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionsStart:
    log_dir: str
    limits: dict[str, int] = field(default_factory=dict)
    run_dir: str = ""  # holds the durable session registry (actors/registry.py)
    # a session to open at once, while the gateway starts and the client logs in: the
    # client's `open_session` with the same request_id then gets it (the retry path)
    preopen: CreateSession | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListSessions:
    corr: str
    reply_to: Any = None
    user: str | None = None  # None: every user's (admins)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resend:
    """Sessions -> session: announce yourself again (a client retried its open request)."""

    corr: str
    reply_to: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStart:
    corr: str
    control_address: str
    sessions: Any  # ActorAddress of the sessions supervisor
    root: Any = None
    hosts: Any = None  # ActorAddress of the hosts actor (None: not in a cluster)
    auth: dict[str, Any] = field(default_factory=dict)  # see gateway.Authenticator
    run_dir: str
    log_dir: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSession:
    corr: str
    session_id: str
    workers: int
    run_dir: str
    log_dir: str
    reply_to: Any = None
    user: str = ""
    request_id: str = ""  # the client's id for its open request: a retry gets the same session
    data_key: bytes = b""  # seals the session's data frames (transport/sealing.py)
    # a session's part on another host (actors/remote_session.py): the master's host,
    # the workers' names and where they dial (this host's tunnel to that master)
    remote_of: str = ""
    worker_ids: tuple[str, ...] = ()
    packet_address: str = ""
    orphan_grace: float = 600.0  # with no supervisor pinging it this long, the session stops
    # the hosts actor that spread this session over hosts (actors/hosts.py): told when the
    # session's master is restarted (MasterRestarted), so its workers there join the new one
    hosts: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady:
    corr: str
    session_id: str
    master: Any
    workers: tuple[str, ...]
    host: str = ""  # the master's host name, in a cluster


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed:
    corr: str
    session_id: str
    error: str
    retry: bool = False  # not a refusal: the daemon is starting; the client asks again


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseSession:
    corr: str
    session_id: str
    reply_to: Any = None
    user: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed:
    corr: str
    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterStart:
    session_id: str
    run_dir: str
    log_dir: str
    packet_address: str
    data_key: bytes = b""
    bind_host: str = "127.0.0.1"  # where the master listens for clients that dial in
    user: str = ""  # the session's (its queries that come straight from the client run as)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStart:
    session_id: str
    worker_id: str
    packet_address: str
    log_dir: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartQuery:
    corr: str
    session_id: str = ""
    query_id: str
    spec: QuerySpec
    reply_to: Any = None
    user: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryAccepted:
    corr: str
    query_id: str
    # the accepting master (StartQuery only): the gateway sends the session's next queries
    # straight to it, past the sessions and session supervisors
    master: Any = None
    # where the master takes its client's next starts and stops itself (master_direct.py)
    direct: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTouched:
    """Gateway -> sessions: a request went straight to the session's master (idle checks)."""
    session_id: str
    kind: str = "StartQuery"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryRejected:
    corr: str
    query_id: str
    error: str
    retry: bool = False  # not a refusal: the session's master is restarting; ask again


@dataclass(frozen=True, slots=True, kw_only=True)
class RunQuery:
    """Master -> worker: start pulling packets of this query."""

    query_id: str
    spec: QuerySpec
    # the master's running and queued queries as it sends this one (it among them), in
    # order; () if not known. A session's part on another host keeps these for the workers
    # that start there later (actors/remote_session.py) and forgets the others (ended)
    active: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryEnded:
    """Worker on another host -> its part's supervisor (remote_session.py): the master
    answered that this query is over, so a worker starting there is not given it."""

    session_id: str
    query_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopQuery:
    """Stop a query (finish what is in flight, partial result); `abort`: discard, fail it."""

    corr: str
    session_id: str = ""
    query_id: str
    abort: bool = False
    reply_to: Any = None
    user: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequest:
    corr: str
    session_id: str = ""
    reply_to: Any = None
    user: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    """A query's kept final frame: with `resend` (a nonce), sent again on the client's data
    plane (to `address`, or the outbox if "") and answered {"resend", "bytes"}; without,
    answered with the frame itself (small frames only: see actors/kept.py)."""

    corr: str
    session_id: str = ""
    query_id: str
    reply_to: Any = None
    user: str = ""
    admin: bool = False
    resend: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOutbox:
    """Make the master listen for a client that dials in; answered with its address."""

    corr: str
    session_id: str = ""
    address: str
    tls: dict[str, Any] | None = None  # TLSSettings fields, when the daemon uses TLS
    reply_to: Any = None
    user: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply:
    corr: str
    status: dict[str, Any]


# -- supervision: what every supervised child understands -------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorStart:
    """How a supervisor starts a child: the actor class ("module:Class") and its first message.

    The child answers the init message with `Started` (or `StartError`).
    """

    actor: str
    init: Any = None
    start_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptStart:
    """How a supervisor "starts" a child that already runs (re-adopted from the registry):
    it sends `Adopt` to `address` ((ip, port)), and the child answers `Started` as usual."""

    address: tuple = ()
    pid: int = 0
    start_timeout: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Adopt:
    """To a running session supervisor: you have a new supervisor (the sender)."""

    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    pid: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmUp:
    """Session supervisor -> master or worker, once its `Started` came: start the warm-up
    (actors/warmup.py) now. Not at once after sending `Started`: the warm-up thread holds
    the GIL while it imports, and the actor thread, still sending `Started`, waited for it
    (the session's start with it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartError:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PingChild:
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PongChild:
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeRequest:
    corr: str
    reply_to: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeReply:
    corr: str
    tree: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJoined:
    """Session supervisor -> master: a worker (re)started."""

    worker_id: str
    ref: Any
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLost:
    """Session supervisor -> master: a worker process is gone; re-queue its work."""

    worker_id: str
    pid: int
    reason: str = ""  # how it died, e.g. "crashed: killed by signal SIGSEGV"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLeaving:
    """Session supervisor or hosts actor -> master: this worker is being removed (it
    drains); give it no new query. Its WorkerLost follows when it has exited."""

    worker_id: str


# -- hosts (many hosts: see actors/hosts.py) ----------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HostsStart:
    """Root -> hosts actor. `config`: info (this host, HostInfo wire form), secret_file,
    join (a master's URL or None), listed (HostInfo wire forms), heartbeat, lost_after,
    incarnation, tls (TLSSettings fields or None)."""

    log_dir: str
    config: dict[str, Any]
    sessions: Any = None  # ActorAddress of the sessions supervisor (given by the root)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostsRequest:
    """Gateway -> hosts actor: the registry (op "list"), or leave the cluster (op "leave":
    `proofctl daemon stop` on a joined host, answered once its workers drained); answered
    with StatusReply."""

    corr: str
    reply_to: Any = None
    op: str = "list"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceSession:
    """Gateway -> hosts actor: open this session with its workers spread over the hosts.
    `placement`: "" (the daemon's strategy) or host:count pairs ("h2:4,h3:4")."""

    create: CreateSession
    placement: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteWorker:
    """Remote session supervisor -> its host's hosts actor: a worker (re)started or exited."""

    session_id: str
    worker_id: str
    pid: int
    alive: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterRestarted:
    """Session supervisor -> the hosts actor that spread its session over hosts
    (`CreateSession.hosts`): its master was restarted, at `master`. The hosts actor tells
    the new master of the session's workers on other hosts (WorkerJoined) and takes its
    queries (RunQuery) for them from now on. Also hosts actor -> a remote session
    supervisor (actors/remote_session.py), `master` None: its master's host says the
    master was restarted, so its queries are over."""

    session_id: str
    master: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class HostsReadopt:
    """A restarted hosts actor -> the supervisor of a session it had spread over hosts (its
    record: hosts/spans.py): it is the session's hosts actor now (`CreateSession.hosts`).
    Answered with MasterRestarted naming the running master (none while one restarts: its
    MasterRestarted comes when it runs)."""

    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionWorkers:
    """Gateway -> hosts actor: list (`op="ls"`), add or remove a session's workers."""

    corr: str
    session_id: str
    op: str  # "ls", "add", "rm"
    count: int = 0
    host: str = ""
    names: tuple[str, ...] = ()
    reply_to: Any = None
    user: str = ""
    admin: bool = False
    request_id: str = ""  # the client's: a retried add is answered, never done twice


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRemoteWorkers:
    """Hosts actor -> a remote session supervisor: start (`add`) or stop these workers."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
