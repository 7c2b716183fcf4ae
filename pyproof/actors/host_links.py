"""The hosts actor's network pieces (threads; the actor never blocks on the network).

- `ClusterEndpoint`: a daemon's cluster endpoint (nng rep on the control
  port + 1): logins answered, sealed requests handed to the actor's handler.
- `ClusterClient`: calls to another daemon's endpoint, one at a time, bounded.
- `PeerLink`: calls to one other daemon's cluster endpoint, in order, on a
  thread of its own; each answer (or failure) is handed to `deliver`, which
  queues it for the actor thread.
- `Tunnel` (on a worker's host): the address a session's workers here dial
  for their master. Each request a worker sends is sealed with the session's
  worker key (derived from the cluster secret and the session id; it never
  travels) and carried to the master's host over the cluster channel, where
  `Forwarder` unseals it, checks the session has workers on the calling host,
  and hands it to the session's master data plane; the answer goes back the
  same way. Workers and master speak as they do on one host.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import pynng

from pyproof.actors import protocol as p
from pyproof.errors import ProofError
from pyproof.hosts import registry as reg
from pyproof.hosts.channel import CLUSTER, ChannelClient, ChannelError, ChannelServer, worker_key
from pyproof.logs import get_logger
from pyproof.transport import auth, sealing
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.server import ContextPoolServer, Request
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT

CLUSTER_PORT_OFFSET = 1  # the cluster endpoint listens on the control port + 1
CONTEXTS = 32  # requests served at once (remote workers' data requests among them)
CALL_TIMEOUT = 2.0
DATA_TIMEOUT = 70.0  # above a worker's own request timeout (60 s): its answer, or its error


class ClusterError(ProofError):
    """A call to another daemon of the cluster failed (refused, or no answer in time)."""


def cluster_address(url: str) -> str:
    """``proof://HOST:PORT`` -> the nng address of that daemon's cluster endpoint."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "proof" or not parts.hostname or not port:
        raise ClusterError(f"{url!r} is not a daemon URL: use proof://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port + CLUSTER_PORT_OFFSET}"


class ClusterEndpoint:
    """The nng side: handshakes answered here; sealed requests passed to `handler`
    (peer name, kind, body) -> (kind, body), from several threads."""

    def __init__(self, address: str, server: ChannelServer, handler, *,
                 tls: TLSSettings | None = None, contexts: int = CONTEXTS) -> None:
        self.server = server
        self.handler = handler
        socket = pynng.Rep0(send_timeout=5_000, recv_max_size=RECV_LIMIT)
        try:
            if tls is not None and tls.enabled:
                address = tls.address(address)
                socket.tls_config = tls.server_config()
            socket.listen(address)
        except BaseException:
            socket.close()
            raise
        self.address = address
        self.pool = ContextPoolServer(socket, self._answer, contexts=contexts, name="cluster",
                                      on_error=_endpoint_failed)

    @property
    def socket(self) -> pynng.Socket:
        return self.pool.socket

    def _answer(self, request: Request) -> bytes:
        """Run by a `cluster-N` thread (see ContextPoolServer): one request's answer."""
        log = get_logger()
        peer = request.peer
        try:
            frame = decode_frame(request.data)
        except ProtocolError as exc:
            log.warning("bad_cluster_frame", peer=peer, error=str(exc))
            return encode_frame("error", {"reason": "malformed", "message": str(exc)})
        now = time.monotonic()
        try:
            if frame.type == auth.AUTH_CHALLENGE:
                return encode_frame(auth.AUTH_CHALLENGE, self.server.challenge(now))
            if frame.type == auth.AUTH_ANSWER:
                ok = self.server.accept(frame.payload, now, peer=peer)
                log.info("cluster_login", peer=peer, host=ok["ok"]["user"])
                return encode_frame(auth.AUTH_OK, ok)
            if frame.type != CLUSTER:
                return encode_frame("error", {"reason": "malformed",
                                              "message": f"unknown frame {frame.type!r}"})
            channel_id, name, kind, seq, body = self.server.open(frame.payload)
        except auth.AuthError as exc:
            log.warning("cluster_refused", peer=peer, host=exc.user, reason=exc.reason,
                        detail=exc.detail)
            return encode_frame("error", {"reason": exc.reason,
                                          "message": f"not admitted: {exc.reason}"})
        except ChannelError as exc:
            log.warning("cluster_refused", peer=peer, reason=exc.reason, detail=exc.detail)
            return encode_frame("error", {"reason": exc.reason, "message": str(exc)})
        try:
            kind, body = self.handler(name, kind, body, peer)
        except reg.HostListError as exc:
            kind, body = "refused", {"message": str(exc)}
        except Exception as exc:  # a bug answers an error, never kills the endpoint
            log.error("cluster_request_failed", host=name, error=repr(exc), exc_info=True)
            kind, body = "refused", {"message": f"the daemon failed: {exc!r}"}
        try:
            return encode_frame(CLUSTER, self.server.seal_reply(channel_id, seq, kind, body))
        except ChannelError as exc:
            return encode_frame("error", {"reason": exc.reason, "message": str(exc)})

    def close(self) -> None:
        self.pool.close()


def _endpoint_failed(request: Request, exc: Exception) -> bytes:
    """The answer to a request the endpoint itself failed on (logged: a bug)."""
    return encode_frame("error", {"reason": "failed",
                                  "message": f"the daemon failed on this request: {exc!r}"})


class ClusterClient:
    """Calls to one other daemon's cluster endpoint: logs in on first use (and again when
    the channel is gone), one call at a time, each bounded by `timeout`."""

    def __init__(self, address: str, name: str, secret: bytes, *, server_id: str | None = None,
                 timeout: float = CALL_TIMEOUT, tls: TLSSettings | None = None) -> None:
        self.channel = ChannelClient(name, secret, server_id=server_id)
        self.timeout = timeout
        self.socket = pynng.Req0(recv_timeout=int(timeout * 1000), send_timeout=int(
            timeout * 1000), resend_time=-1, recv_max_size=RECV_LIMIT)
        if tls is not None and tls.enabled:
            address = tls.address(address)
            self.socket.tls_config = tls.dial_config(address)
        self.address = address
        self.socket.dial(address, block=False)
        self._lock = threading.Lock()

    def _exchange(self, kind: str, payload: Any) -> tuple[str, Any]:
        try:
            self.socket.send(encode_frame(kind, payload))
            frame = decode_frame(self.socket.recv())
        except pynng.NNGException as exc:
            # a Req0 socket whose answer never came cannot send again until it is
            # reset: a fresh request on it does that (nng cancels the old one)
            raise ClusterError(f"no answer from the cluster endpoint at {self.address} "
                               f"within {self.timeout:g} s ({exc})") from None
        except ProtocolError as exc:
            raise ClusterError(f"bad answer from {self.address}: {exc}") from None
        if frame.type == "error":
            payload = frame.payload if isinstance(frame.payload, dict) else {}
            raise _Refused(str(payload.get("reason")), str(payload.get("message")))
        return frame.type, frame.payload

    def _login(self) -> None:
        try:
            _, challenge = self._exchange(auth.AUTH_CHALLENGE, {})
            _, ok = self._exchange(auth.AUTH_ANSWER, self.channel.answer(challenge))
            self.channel.confirm(ok, peer=self.address)
        except auth.AuthError as exc:
            self.channel.reset()
            raise ClusterError(f"the daemon at {self.address} is not a member of this "
                               f"cluster: {exc.reason} ({exc.detail})") from None
        except _Refused as exc:
            self.channel.reset()
            raise ClusterError(f"the daemon at {self.address} refused to admit this host "
                               f"({exc.reason}): check that both use the same "
                               f"--cluster-secret file") from None

    def call(self, kind: str, body: Any) -> tuple[str, Any]:
        with self._lock:
            for attempt in (1, 2):
                if not self.channel.open:
                    self._login()
                seq, payload = self.channel.request(kind, body)
                try:
                    answer_kind, answer = self._exchange(CLUSTER, payload)
                except _Refused as exc:
                    if exc.reason in ("unknown channel", "replayed") and attempt == 1:
                        self.channel.reset()  # it restarted: log in again, once
                        continue
                    raise ClusterError(f"{self.address} refused {kind!r}: {exc.message}") \
                        from None
                except ClusterError:
                    self.channel.reset()  # a lost answer leaves the numbering unknown
                    raise
                try:
                    return self.channel.reply(seq, answer)
                except ChannelError as exc:
                    self.channel.reset()
                    raise ClusterError(f"forged or stray answer from {self.address}: "
                                       f"{exc}") from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        self.socket.close()


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class PeerLink:
    """One other daemon, called in order from a thread: `submit(kind, body, tag)`;
    `deliver(tag, kind, body, error)` gets each outcome (error: a message, or None)."""

    def __init__(self, *, name: str, peer: str, url: str, secret: bytes,
                 deliver: Callable[[Any, str, Any, str | None], None],
                 tls: TLSSettings | None, timeout: float = 40.0) -> None:
        self.peer, self.url = peer, url
        self.client = ClusterClient(cluster_address(url), name, secret, server_id=peer,
                                    timeout=timeout, tls=tls)
        self.deliver = deliver
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"link-{peer}", daemon=True)
        self._thread.start()

    def submit(self, kind: str, body: Any, tag: Any = None) -> None:
        self.queue.put((kind, body, tag))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            kind, body, tag = item
            try:
                answer_kind, answer = self.client.call(kind, body)
                self.deliver(tag, answer_kind, answer, None)
            except ClusterError as exc:
                self.deliver(tag, "", None, str(exc))

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(1.0)
        self.client.close()


class Tunnel:
    """Where a session's workers on this host dial their master (see the module docstring)."""

    def __init__(self, *, address: str, session_id: str, name: str, master: str,
                 master_url: str, secret: bytes, tls: TLSSettings | None, contexts: int) -> None:
        self.session_id = session_id
        self.key = worker_key(secret, session_id)
        self.address = address
        socket = pynng.Rep0(send_timeout=5_000, recv_max_size=RECV_LIMIT)
        try:
            socket.listen(address)
        except BaseException:
            socket.close()
            raise
        self._dial = (cluster_address(master_url), name, secret, master, tls)
        self._lock = threading.Lock()
        self._clients: list[ClusterClient] = []  # one per thread of the pool, by its slot
        self.pool = ContextPoolServer(socket, self._forward, contexts=0, name="tunnel")
        self.add_contexts(contexts)

    def add_contexts(self, count: int) -> None:
        """Serve `count` more requests at once (one per worker, plus one)."""
        address, name, secret, master, tls = self._dial
        with self._lock:
            if self.pool.closed:
                return
            for _ in range(count):  # the pool's next threads take the next slots
                self._clients.append(ClusterClient(address, name, secret, server_id=master,
                                                   timeout=DATA_TIMEOUT, tls=tls))
            self.pool.add_contexts(count)

    def _forward(self, request: Request) -> bytes:
        """Run by a `tunnel-N` thread: a worker's request there and back, through this
        thread's own cluster client (one call at a time each)."""
        with self._lock:
            client = self._clients[request.slot]
        try:
            kind, body = client.call("data", {"session": self.session_id,
                                              "sealed": sealing.seal(self.key,
                                                                     bytes(request.data))})
            if kind != "data" or not isinstance(body, dict):
                raise ClusterError(str((body or {}).get("message", kind)))
            return bytes(sealing.unseal(self.key, body.get("sealed") or b""))
        except (ClusterError, sealing.SealError) as exc:
            get_logger().warning("tunnel_failed", session=self.session_id, error=str(exc))
            # whether the master got the request (and granted packets) may be unknown (a
            # reset mid-call, its host's daemon restarting; "did not answer"): the worker
            # exits, as when its master does not answer (worker_loop.py), and what it held
            # goes back to the queue
            return encode_frame(p.ABORT, {"reason": f"the master's host is not "
                                                    f"reachable: {exc}", "unreachable": True},
                                session=self.session_id)

    def close(self) -> None:
        # the clients first: that ends the calls the pool's threads wait in (a plain
        # Req0 socket may be closed under a thread in send or recv: it gets Closed)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        self.pool.close()


def close_host_links(*, forwarder: Forwarder | None = None, endpoint: ClusterEndpoint | None = None,
                     clients: Iterable[Any] = ()) -> None:
    """Close a host daemon's cluster parts, in the order that never waits needlessly.

    The forwarder goes first: an endpoint thread in `Forwarder.forward` waits for a
    session master's reply for up to the data timeout, and the endpoint's close
    joins its threads, so closing the endpoint first sat out the whole join
    (`CLOSE_TIMEOUT`) whenever a worker's request was in flight. A plain Req0
    socket closed under a thread in recv ends that recv at once (`Closed`), and the
    forward answers a refusal. Then the outgoing clients (tunnels, links), which
    endpoint threads may also be calling, and the endpoint last.
    """
    if forwarder is not None:
        forwarder.close()
    for client in clients:
        client.close()
    if endpoint is not None:
        endpoint.close()


class Forwarder:
    """On the master's host: a worker's sealed request -> the session's master data plane."""

    def __init__(self, secret: bytes, master_address: Callable[[str], str]) -> None:
        self.secret = secret
        self.master_address = master_address
        self._sockets: dict[tuple[int, str], pynng.Req0] = {}  # (thread, session) -> socket
        self._lock = threading.Lock()

    def forward(self, session_id: str, sealed: Any) -> tuple[str, Any]:
        key = worker_key(self.secret, session_id)
        if not isinstance(sealed, bytes):
            return "refused", {"message": "'sealed' must be bytes"}
        try:
            raw = bytes(sealing.unseal(key, sealed))
        except sealing.SealError:
            get_logger().warning("data_refused", session=session_id,
                                 reason="not sealed with the session's worker key")
            return "refused", {"message": f"frame not sealed with session {session_id}'s "
                                          f"worker key"}
        slot = (threading.get_ident(), session_id)
        with self._lock:
            sock = self._sockets.get(slot)
            if sock is None:
                sock = pynng.Req0(recv_timeout=int(DATA_TIMEOUT * 1000) - 5_000,
                                  send_timeout=5_000, resend_time=-1, recv_max_size=RECV_LIMIT)
                sock.dial(self.master_address(session_id), block=False)
                self._sockets[slot] = sock
        try:
            sock.send(raw)
            reply = sock.recv()
        except pynng.NNGException as exc:
            with self._lock:
                self._sockets.pop(slot, None)
            sock.close()
            return "refused", {"message": f"session {session_id}'s master did not answer: "
                                          f"{exc}"}
        return "data", {"sealed": sealing.seal(key, reply)}

    def forget(self, session_id: str) -> None:
        """The session ended: close its sockets."""
        with self._lock:
            slots = [s for s in self._sockets if s[1] == session_id]
            socks = [self._sockets.pop(s) for s in slots]
        for sock in socks:
            sock.close()

    def close(self) -> None:
        with self._lock:
            socks, self._sockets = list(self._sockets.values()), {}
        for sock in socks:
            sock.close()
