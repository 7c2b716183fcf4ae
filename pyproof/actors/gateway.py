"""The gateway: serves the control endpoint (CBOR frames on nng req/rep).

An nng thread receives and validates requests and queues them, then writes
a byte on a pipe that Thespian watches for the actor (`ThespianWatch`): the
actor wakes on that event (no timer: an idle gateway uses no CPU), drains
the queue, turns each request into
control messages, and completes it when the reply message arrives. The
gateway never unpickles what a client sends: frames are CBOR, fields checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import field
from datetime import timedelta
from typing import Any

import pynng
from thespian.actors import ActorExitRequest, WakeupMessage, WatchMessage

from pyproof.actors import messages as m
from pyproof.actors.base import TEST_HOOKS, ProofActor
from pyproof.actors.kept import MAX_NONCE, valid_nonce
from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.datasets import records as _records  # noqa: F401  (decodes its CBOR tag)
from pyproof.logs import get_logger
from pyproof.packages import service as packages
from pyproof.packages.errors import PackageError
from pyproof.query.spec import QuerySpec, SpecError
from pyproof.transport import auth, sealing
from pyproof.transport.codec import DEFAULT_MAX_FRAME, ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.server import ContextPoolServer, Request
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT

REQUEST_TIMEOUT = 20.0
CONTEXTS = 16
START_CONTEXTS = 2  # served before the gateway says it started; the rest right after
MAX_WORKERS = 256
# a query sent straight to a session's master not answered by then goes the long way (the
# master was restarted: its old address is dead, or another actor's now)
DIRECT_FALLBACK = 0.5
KEEP_MASTERS = 1024  # (session, user) -> master address, most recently used last



class RequestError(ValueError):
    """A control request is malformed; the message says which field."""


@dataclass(slots=True)
class _Pending:
    frame: Any
    user: str = ""
    admin: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    reply: bytes = b""


LOGIN_SESSION = "*login*"


def visible_tree(tree: dict[str, Any], user: str) -> dict[str, Any]:
    """The supervision tree as `user` may see it: other users' sessions left out."""
    children = []
    for child in tree.get("children", []):
        if child.get("id") == "sessions" and "tree" in child:
            sessions = child["tree"]
            mine = [s for s in sessions.get("children", []) if s.get("user") == user]
            child = {**child, "tree": {**sessions, "children": mine}}
        children.append(child)
    return {**tree, "children": children}


class Authenticator:
    """Logins (HMAC challenge-response, see transport/auth.py) and the tokens they earn.

    The token key is made once per daemon boot and survives gateway restarts,
    so a client's token stays valid while the gateway comes and goes.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.token_key: bytes = config["token_key"]
        self.owner: str = config["owner"]
        self.admins = set(config.get("admins") or [self.owner])
        self.secret_file: str = config["secret_file"]
        self.users_dir: str | None = config.get("users_dir")
        self.handshake = auth.ServerHandshake(config.get("server_id", "proofd"), self.secret_of)
        self.tls = TLSSettings(**config["tls"]) if config.get("tls") else None

    def secret_of(self, user: str) -> bytes | None:
        if self.users_dir:
            path = os.path.join(self.users_dir, user)
            if os.path.exists(path):
                return auth.read_secret(path)
        if user == self.owner:
            return auth.read_secret(self.secret_file)
        return None

    def check(self, payload: Any, peer: str) -> tuple[str, bool]:
        """The (user, admin) a request's token proves; AuthError otherwise."""
        token = payload.get("token") if isinstance(payload, dict) else None
        if token is None:
            raise auth.AuthError("malformed", "not logged in (no token)", peer=peer, user=None)
        user = auth.verify_token(self.token_key, token, session=LOGIN_SESSION, peer=peer).user
        return user, user in self.admins


class ControlServer:
    """The nng side of the gateway: logins are answered here, the rest queued for the actor.

    Several threads each serve their own nng context, so a request whose
    answer is slow (a session starting, a master that just died) holds one
    context, never the whole gateway.
    """

    def __init__(self, address: str, authenticator: Authenticator, *,
                 contexts: int = CONTEXTS) -> None:
        self.auth = authenticator
        socket = pynng.Rep0(send_timeout=5_000, recv_max_size=RECV_LIMIT)
        try:
            if address.startswith("tls+"):
                socket.tls_config = authenticator.tls.server_config()
            socket.listen(address)
        except BaseException:
            socket.close()
            raise
        self.inbox: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        # a byte here after each queued request: the actor's event (Thespian watches it)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()  # the handshake state is shared by the threads
        self._waiting: dict[int, _Pending] = {}  # queued requests whose thread waits
        self._closing = False
        self.pool = ContextPoolServer(socket, self._handle, contexts=contexts, name="control",
                                      on_error=_failed_answer)

    @property
    def socket(self) -> pynng.Socket:
        return self.pool.socket

    def _handle(self, request: Request) -> bytes:
        """Run by a `control-N` thread (see ContextPoolServer): answer logins here, queue the
        rest for the actor and wait for its answer.

        Bad frames and refused logins are answered with an error frame; a request the
        actor does not complete within REQUEST_TIMEOUT is answered "retry".
        """
        log = get_logger()
        peer = request.peer
        try:
            frame = decode_frame(request.data)
        except ProtocolError as exc:
            log.warning("bad_control_frame", peer=peer, error=str(exc))
            return encode_frame("error", {"message": f"protocol error: {exc}"})
        try:
            reply = self._login(frame, peer)
            if reply is not None:
                return reply
            user, admin = self.auth.check(frame.payload, peer)
        except auth.AuthError as exc:
            log.warning("auth_refused", peer=peer, user=exc.user, reason=exc.reason,
                        detail=exc.detail)
            return encode_frame(
                "error", {"message": f"not authenticated: {exc.reason}", "auth": exc.reason},
                request_id=frame.request_id)
        pending = _Pending(frame=frame, user=user, admin=admin)
        with self._lock:
            if self._closing:  # the gateway is going: the client asks its successor
                return b""
            self._waiting[id(pending)] = pending
        try:
            self.inbox.put(pending)
            self._wake()
            if not pending.done.wait(REQUEST_TIMEOUT):
                # not a refusal: the request may still complete (a session starting under
                # load); the client asks again with the same request id, which is idempotent
                pending.reply = encode_frame("error", {
                    "message": f"the daemon did not answer {frame.type!r} "
                               f"within {REQUEST_TIMEOUT:.0f} s", "retry": True},
                    request_id=frame.request_id)
        finally:
            with self._lock:
                self._waiting.pop(id(pending), None)
        return pending.reply or None

    def _login(self, frame: Any, peer: str) -> bytes | None:
        with self._lock:
            return self._login_locked(frame, peer)

    def _login_locked(self, frame: Any, peer: str) -> bytes | None:
        now = time.monotonic()
        if frame.type == auth.AUTH_CHALLENGE:
            return encode_frame(auth.AUTH_CHALLENGE, self.auth.handshake.challenge(now),
                                request_id=frame.request_id)
        if frame.type == auth.AUTH_ANSWER:
            login, ok = self.auth.handshake.verify(frame.payload, now, peer=peer)
            token = auth.issue_token(self.auth.token_key, login.user, LOGIN_SESSION)
            get_logger().info("login", peer=peer, user=login.user)
            # the frame cap: a client checks what it sends against ours, not only its own
            return encode_frame(auth.AUTH_OK, {**ok, "token": token.to_wire(),
                                               "max_frame": DEFAULT_MAX_FRAME},
                                request_id=frame.request_id)
        return None

    def _wake(self) -> None:
        """Run by a control thread after queueing: makes the actor's pipe readable.

        A full pipe is readable already (the actor is behind, not asleep); a closed one
        means the server is closing.
        """
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_w, b"!")

    def woken(self) -> None:
        """Run by the actor (its thread) on a WatchMessage, before draining the queue:
        empties the pipe, so it is readable again only for requests queued after this."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.wake_r, 4096):
                pass

    def close(self) -> None:
        """Run by the actor on its exit: stop serving (the socket is closed after every
        control thread left it; see ContextPoolServer) and release waiting threads."""
        with self._lock:
            self._closing = True
            waiting = list(self._waiting.values())
        for pending in waiting:  # no answer will come: their clients ask the next gateway
            pending.done.set()
        self.pool.close()
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _failed_answer(request: Request, exc: Exception) -> bytes:
    """What a client is told when its control thread failed on its request (a bug, logged
    as control_request_failed): "retry" would only fail again."""
    try:
        frame = decode_frame(request.data)
        what, request_id = f"request {frame.type!r}", frame.request_id
    except ProtocolError:
        what, request_id = "a request", None
    return encode_frame("error", {"message": f"the daemon failed on {what} ({exc!r}); it "
                                             f"logged the error (control_request_failed)"},
                        request_id=request_id)


def _error(message: str, retry: bool) -> dict[str, Any]:
    """An error answer; `retry`: not a refusal (a master or the daemon restarting), the
    client asks again under the same request id, with a short back-off, until its deadline."""
    return {"message": message, "retry": True} if retry else {"message": message}


REPLIES = (m.SessionReady, m.SessionFailed, m.SessionClosed, m.QueryAccepted,
           m.QueryRejected, m.StatusReply, m.TreeReply)
"""Messages that answer a request the gateway dispatched (each has its `corr`)."""


class Gateway(ProofActor):
    def __init__(self, *args, **kwargs) -> None:
        """Run by Thespian in the new actor process; nothing here can fail but memory.

        If it raised, the process would end before answering GatewayStart and the
        root supervisor would count a start failure.
        """
        super().__init__(*args, **kwargs)
        self.server: ControlServer | None = None
        self.start: m.GatewayStart | None = None
        self.pending: dict[str, _Pending] = {}
        self._ids = itertools.count()
        # where each session's master answered a user's query (the sessions supervisor had
        # checked the session is theirs): their next queries go straight there
        self.masters: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.direct: dict[str, tuple[tuple[str, str], m.StartQuery]] = {}  # corr -> sent

    def receive(self, message, sender) -> None:
        """Run by Thespian (via `ProofActor.receiveMessage`) on the actor thread, per message.

        Starts the control server (a port that cannot be taken is answered as
        StartError), drains its queue when its pipe says a request came, and completes
        pending requests with the replies of sessions and masters. A failure while
        handling one request or its reply stays that request's (see `_request_failed`):
        its client resends a request that crashed the gateway, so a crash would loop.
        Anything else it raises, `ProofActor.receiveMessage` logs and ends the process
        (exit 70); the supervisor restarts the actor from a clean state. Clients whose
        requests were pending ask again with the same request id.
        """
        if isinstance(message, m.GatewayStart):
            self.start = message
            self.start_log(message.log_dir, actor="gateway")
            try:
                self.server = ControlServer(message.control_address, Authenticator(message.auth),
                                            contexts=START_CONTEXTS)
            except (pynng.NNGException, auth.SecretFileError) as exc:
                self.send(sender, m.StartError(
                    reason=f"cannot listen on {message.control_address}: {exc}"))
                return
            get_logger().info("gateway_started", address=message.control_address)
            self.watch_fds = (self.server.wake_r,)
            self.send(sender, m.Started(pid=os.getpid()))
            # the other threads once Started is sent: each takes the GIL as it starts, and
            # the daemon's boot (ready.json, its client's login) waited for them
            self.server.pool.add_contexts(CONTEXTS - START_CONTEXTS)
            self._drain()  # requests queued before the watch began
        elif isinstance(message, WatchMessage):
            if self.server is not None:
                self.server.woken()
                self._drain()
        elif isinstance(message, REPLIES):
            try:
                self._reply(message)
            except Exception as exc:  # this request's failure, not the gateway's
                self._request_failed(message.corr, exc, type(message).__name__)
        elif isinstance(message, WakeupMessage) and isinstance(message.payload, str):
            self._direct_unanswered(message.payload)  # a query sent straight to a master
        elif isinstance(message, ActorExitRequest) and self.server is not None:
            self.server.close()

    def _reply(self, message: Any) -> None:
        """Run by `receive` for a reply message (REPLIES): complete its pending request."""
        if isinstance(message, m.SessionReady):
            self._complete(message.corr, "ok", {"session": message.session_id,
                                                "workers": list(message.workers),
                                                **({"host": message.host} if message.host
                                                   else {})})
        elif isinstance(message, m.SessionFailed):
            self._complete(message.corr, "error", _error(message.error, message.retry))
        elif isinstance(message, m.SessionClosed):
            self._complete(message.corr, "ok", {"session": message.session_id})
        elif isinstance(message, m.QueryAccepted):
            self._learn_master(message)
            self._complete(message.corr, "ok", {"query": message.query_id,
                                                **self._direct_offer(message)})
        elif isinstance(message, m.QueryRejected):
            self.direct.pop(message.corr, None)
            self._complete(message.corr, "error", _error(message.error, message.retry))
        elif isinstance(message, m.StatusReply):
            if "error" in message.status:
                self._complete(message.corr, "error", _error(
                    message.status["error"], message.status.get("retry") is True))
            else:
                self._complete(message.corr, "ok", message.status)
        elif isinstance(message, m.TreeReply):
            pending = self.pending.get(message.corr)
            tree = message.tree
            if pending is not None and not pending.admin:  # users see their own sessions
                tree = visible_tree(tree, pending.user)
            self._complete(message.corr, "ok", {"tree": tree})

    def _learn_master(self, message: m.QueryAccepted) -> None:
        """A master accepted a query: remember it for its session's (and user's) next ones."""
        sent = self.direct.pop(message.corr, None)
        pending = self.pending.get(message.corr)
        if message.master is None or pending is None or pending.frame.type != "start_query":
            return
        key = sent[0] if sent else (str(pending.frame.session), pending.user)
        self.masters[key] = message.master
        self.masters.move_to_end(key)
        while len(self.masters) > KEEP_MASTERS:
            self.masters.popitem(last=False)

    def _direct_offer(self, message: m.QueryAccepted) -> dict[str, Any]:
        """Where the client may send its session's next starts and stops itself (the master's
        direct route, master_direct.py): the session is the user's (checked on this query's
        way). Not offered in a cluster (a session's master may run on another host, whose
        package store is not this one's) nor with TLS (the route is a local socket: a client
        on this host needs no TLS to reach it, one elsewhere cannot)."""
        pending = self.pending.get(message.corr)
        if not message.direct or pending is None or pending.frame.type != "start_query" \
                or self.start is None or self.start.hosts is not None \
                or (self.server is not None and self.server.auth.tls is not None):
            return {}
        return {"direct": message.direct}

    def _direct_unanswered(self, corr: str) -> None:
        """A query sent straight to a master got no answer in DIRECT_FALLBACK s: forget that
        master and send the query the long way (a master that was only slow answers the
        second one as a retry: the query id is the same)."""
        sent = self.direct.pop(corr, None)
        if sent is None or corr not in self.pending or self.start is None:
            return
        key, message = sent
        self.masters.pop(key, None)
        get_logger().info("direct_route_unanswered", session=key[0], query=message.query_id)
        self.send(self.start.sessions, message)

    def _drain(self) -> bool:
        """Run by `receive` when a request came: dispatch every queued request; True if any.

        A bad request (RequestError, SpecError) is answered to its client; any other
        exception is this request's failure (`_request_failed`): logged, answered, and
        the next request is served.
        """
        assert self.server is not None
        drained = False
        while True:
            try:
                pending = self.server.inbox.get_nowait()
            except queue.Empty:
                return drained
            drained = True
            corr = f"c{next(self._ids)}"
            self.pending[corr] = pending
            try:
                self._dispatch(corr, pending)
            except (RequestError, SpecError) as exc:
                self._complete(corr, "error", {"message": str(exc)})
            except Exception as exc:  # a bug: this request fails, the gateway goes on
                self._request_failed(corr, exc, "dispatch")

    def _dispatch(self, corr: str, pending: _Pending) -> None:
        """Run by `_drain` (actor thread): send one request to the actor that can answer it.

        Raises RequestError or SpecError for a bad request (`_drain` answers them).
        """
        assert self.start is not None
        frame = pending.frame
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        kind = frame.type
        sessions = self.start.sessions
        if kind == "open_session":
            workers = payload.get("workers")
            if not isinstance(workers, int) or isinstance(workers, bool) or not (
                    1 <= workers <= MAX_WORKERS):
                raise RequestError(f"'workers' must be an integer from 1 to {MAX_WORKERS}")
            request_id = frame.request_id or ""
            session_id = uuid.uuid4().hex[:12]
            user = pending.user
            secret = self.server.auth.secret_of(user) if self.server else None
            create = m.CreateSession(
                data_key=sealing.data_key(secret, session_id) if secret else b"",
                corr=corr, session_id=session_id, workers=workers,
                run_dir=self.start.run_dir, log_dir=self.start.log_dir, reply_to=self.myAddress,
                user=user, request_id=request_id)
            placement = payload.get("placement", "")
            if not isinstance(placement, str) or len(placement) > 4096:
                raise RequestError("'placement' must be a string of host:count pairs")
            if self.start.hosts is not None:  # in a cluster: workers spread over its hosts
                self.send(self.start.hosts, m.PlaceSession(create=create, placement=placement))
            elif placement:
                raise RequestError("this daemon is not part of a cluster: workers cannot be "
                                   "placed on hosts (start it with --cluster-secret FILE)")
            else:
                self.send(sessions, create)
        elif kind == "status":
            self.send(sessions, m.ListSessions(corr=corr, reply_to=self.myAddress,
                                               user=None if pending.admin else pending.user))
        elif kind == "tree":
            self.send(self.start.root, m.TreeRequest(corr=corr, reply_to=self.myAddress))
        elif kind in packages.KINDS:  # stored and checked here; never imported (packages/)
            self._complete(corr, *packages.handle_request(kind, payload, user=pending.user,
                                                          session=frame.session))
        elif kind == "hosts":
            if self.start.hosts is None:
                raise RequestError("this daemon is not part of a cluster: start it with "
                                   "--cluster-secret FILE (see proofctl daemon start --help)")
            self.send(self.start.hosts, m.HostsRequest(corr=corr, reply_to=self.myAddress))
        elif kind == "leave_cluster":  # proofctl daemon stop, on a joined host (hosts.py)
            if not pending.admin:
                raise RequestError("only an admin of this daemon may make it leave its cluster")
            if self.start.hosts is None:
                self._complete(corr, "ok", {"left": None})
            else:
                self.send(self.start.hosts, m.HostsRequest(corr=corr, reply_to=self.myAddress,
                                                           op="leave"))
        elif kind == "debug_crash" and TEST_HOOKS:
            raise RuntimeError("crash requested by a test")
        elif kind in ("add_workers", "remove_workers", "list_workers"):
            self._workers_request(corr, kind, frame.session, payload, pending)
        elif kind in ("start_query", "stop_query", "session_status", "close_session",
                      "fetch_result", "data_endpoint"):
            session_id = frame.session
            if not isinstance(session_id, str) or not session_id:
                raise RequestError(f"{kind!r} needs a session id")
            self._session_request(corr, kind, session_id, payload, pending)
        else:
            raise RequestError(f"unknown control request {kind!r}")

    def _session_request(self, corr: str, kind: str, session_id: str,
                         payload: dict[str, Any], pending: _Pending) -> None:
        assert self.start is not None
        # the sessions supervisor checks the session belongs to this user (or an admin)
        sessions = self.start.sessions
        who = {"user": pending.user, "admin": pending.admin}
        if kind == "start_query":
            query_id = payload.get("query")
            if not isinstance(query_id, str):
                raise RequestError("'query' must be a string id")
            spec = QuerySpec.from_wire(payload.get("spec"))
            try:  # the session's enabled packages, fixed for this query's lifetime
                spec = spec.with_packages(packages.query_packages(pending.user, session_id))
            except PackageError as exc:
                raise RequestError(str(exc)) from None
            message = m.StartQuery(**who, corr=corr, session_id=session_id, query_id=query_id,
                                   spec=spec, reply_to=self.myAddress)
            key = (session_id, pending.user)
            master = self.masters.get(key)
            if master is None:
                self.send(sessions, message)  # it checks the session is this user's
                return
            # the session's master is known: two actor hops fewer for a trivial query
            self.direct[corr] = (key, message)
            self.send(master, message)
            self.send(sessions, m.SessionTouched(session_id=session_id))  # the idle check
            self.wakeupAfter(timedelta(seconds=DIRECT_FALLBACK), payload=corr)
        elif kind == "stop_query":
            self.send(sessions, m.StopQuery(**who, corr=corr, session_id=session_id,
                                            query_id=str(payload.get("query")),
                                            abort=payload.get("abort") is True,
                                            reply_to=self.myAddress))
        elif kind == "session_status":
            self.send(sessions, m.StatusRequest(**who, corr=corr, session_id=session_id,
                                                reply_to=self.myAddress))
        elif kind == "data_endpoint":
            tls = self.server.auth.tls if self.server else None
            self.send(sessions, m.OpenOutbox(**who, corr=corr, session_id=session_id,
                                             address=self._outbox_address(session_id, payload),
                                             tls=dataclasses.asdict(tls) if tls else None,
                                             reply_to=self.myAddress))
        elif kind == "fetch_result":
            query_id = payload.get("query")
            if not isinstance(query_id, str):
                raise RequestError("'query' must be a string id")
            resend, address = payload.get("resend", ""), payload.get("address", "")
            if resend and not valid_nonce(resend):
                raise RequestError("'resend' must be a nonce (letters and digits, at most "
                                   f"{MAX_NONCE})")
            if not isinstance(address, str) or len(address) > 4096:
                raise RequestError("'address' must be the client's data address")
            self.send(sessions, m.FetchResult(**who, corr=corr, session_id=session_id,
                                              query_id=query_id, reply_to=self.myAddress,
                                              resend=resend, address=address))
        else:
            for key in [k for k in self.masters if k[0] == session_id]:
                del self.masters[key]
            self.send(sessions, m.CloseSession(**who, corr=corr, session_id=session_id,
                                               reply_to=self.myAddress))

    def _workers_request(self, corr: str, kind: str, session_id: Any, payload: dict[str, Any],
                         pending: _Pending) -> None:
        """Workers on the fly: in a cluster the hosts actor places and stops them; else the
        session's own supervisor (through the sessions supervisor) does, on this host."""
        assert self.start is not None
        if not isinstance(session_id, str) or not session_id:
            raise RequestError(f"{kind!r} needs a session id")
        count, host, names = payload.get("count", 0), payload.get("host") or "", payload.get(
            "names") or []
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_WORKERS:
            raise RequestError(f"'count' must be an integer from 0 to {MAX_WORKERS}")
        if not isinstance(host, str) or not (isinstance(names, list) and all(
                isinstance(n, str) for n in names)):
            raise RequestError("'host' must be a host name and 'names' a list of worker names")
        op = {"add_workers": "add", "remove_workers": "rm", "list_workers": "ls"}[kind]
        if self.start.hosts is None and host:
            raise RequestError(f"this daemon is not part of a cluster: workers can be added "
                               f"only on its own host, not on {host!r} (start the daemons "
                               f"with --cluster-secret FILE)")
        # in a cluster the hosts actor places them; else the session adds them here itself
        self.send(self.start.hosts or self.start.sessions, m.SessionWorkers(
            corr=corr, session_id=session_id, op=op, count=count, host=host, names=tuple(names),
            reply_to=self.myAddress, user=pending.user, admin=pending.admin,
            request_id=pending.frame.request_id or ""))

    def _outbox_address(self, session_id: str, payload: dict[str, Any]) -> str:
        """Where a session listens for its client in client-dials mode: beside the gateway."""
        assert self.start is not None
        control = self.start.control_address
        if not control.startswith("tcp://"):
            return f"ipc://{os.path.join(self.start.run_dir, f'outbox-{session_id}.ipc')}"
        port = payload.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise RequestError("'port' must be an integer from 0 to 65535")
        return f"{control.rsplit(':', 1)[0]}:{port}"

    def _request_failed(self, corr: str, exc: Exception, stage: str) -> None:
        """One request made the gateway raise (a bug, or damaged state such as a package
        index): log it with the request's type and id, answer its client with an error
        that says so (not "retry": the same request would fail again), and go on.
        `stage`: "dispatch", or the name of the reply message being completed.

        Failing only the request matters here more than anywhere: the client resends a
        request whose connection was reset, so a gateway that crashed on it would crash
        again on every resend until its supervisor gave up.
        """
        pending = self.pending.get(corr)
        kind = getattr(getattr(pending, "frame", None), "type", None)
        request_id = getattr(getattr(pending, "frame", None), "request_id", None)
        get_logger().error("request_failed", request=kind, request_id=request_id,
                           user=getattr(pending, "user", None), stage=stage,
                           error=repr(exc), exc_info=True)
        if pending is None:
            return
        self._complete(corr, "error", {"message": (
            f"the daemon failed while handling request {kind!r} (request id {request_id}): "
            f"{type(exc).__name__}: {exc}. It logged the error with the request id (event "
            f"'request_failed' in the gateway's log: `proofctl logs`); other requests are "
            f"not affected")})

    def _complete(self, corr: str, kind: str, payload: dict[str, Any]) -> None:
        pending = self.pending.get(corr)
        if pending is None:
            return
        # encoded before it is taken out: an answer that cannot be encoded leaves the
        # request pending for `_request_failed` to answer
        reply = encode_frame(kind, payload, session=pending.frame.session,
                             request_id=pending.frame.request_id)
        del self.pending[corr]
        pending.reply = reply
        pending.done.set()
