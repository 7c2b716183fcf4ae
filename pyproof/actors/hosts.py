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

Thespian never leaves the host: daemons meet only here, over authenticated nng.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pynng
from thespian.actors import ActorExitRequest, WakeupMessage

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.errors import ProofError
from pyproof.hosts import registry as reg
from pyproof.hosts.channel import CLUSTER, ChannelClient, ChannelError, ChannelServer
from pyproof.logs import get_logger
from pyproof.transport import auth
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT

CLUSTER_PORT_OFFSET = 1  # the cluster endpoint listens on the control port + 1
CONTEXTS = 4
TICK = timedelta(seconds=0.25)
CALL_TIMEOUT = 2.0


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


def _peer(message: Any) -> str:
    try:
        address = message.pipe.remote_address
        return f"{address.family_as_str}:{address}"
    except Exception:
        return "unknown peer"


class ClusterEndpoint:
    """The nng side: handshakes answered here; sealed requests passed to `handler`
    (peer name, kind, body) -> (kind, body), from several threads."""

    def __init__(self, address: str, server: ChannelServer, handler, *,
                 tls: TLSSettings | None = None, contexts: int = CONTEXTS) -> None:
        self.server = server
        self.handler = handler
        self.socket = pynng.Rep0(send_timeout=5_000, recv_max_size=RECV_LIMIT)
        if tls is not None and tls.enabled:
            address = tls.address(address)
            self.socket.tls_config = tls.server_config()
        self.address = address
        self.socket.listen(address)
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(self.socket.new_context(),),
                                          name=f"cluster-{i}", daemon=True)
                         for i in range(contexts)]
        for thread in self._threads:
            thread.start()

    def _serve(self, context: Any) -> None:
        while not self._closed.is_set():
            try:
                message = context.recv_msg()
            except pynng.NNGException:  # closed
                return
            reply = self._answer(message)
            with contextlib.suppress(pynng.NNGException):
                context.send(reply)

    def _answer(self, message: Any) -> bytes:
        log = get_logger()
        peer = _peer(message)
        try:
            frame = decode_frame(message.bytes)
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
        self._closed.set()
        self.socket.close()
        for thread in self._threads:
            thread.join(1.0)


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
        # no goodbye: the supervisor kills this actor's process on shutdown, so a host
        # that stops is found lost by its silence (lost_after)
        self._stop.set()
        self._thread.join(self.client.timeout + 1.0)
        self.client.close()


class Hosts(ProofActor):
    """The shell around the registry; see the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint: ClusterEndpoint | None = None
        self.joiner: Joiner | None = None
        self.lock = threading.Lock()
        self.changes: queue.SimpleQueue = queue.SimpleQueue()

    def receive(self, message, sender) -> None:
        if isinstance(message, m.HostsStart):
            self._start(message, sender)
        elif isinstance(message, WakeupMessage):
            self._tick()
            self.wakeupAfter(TICK)
        elif isinstance(message, m.HostsRequest):
            now = time.monotonic()
            with self.lock:
                rows = self.registry.snapshot(now)
            joined = None if self.joiner is None else {
                "master": self.joiner.master_url, "state": self.joiner.state,
                "error": self.joiner.last_error if not self.joiner.joined else ""}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status={
                "name": self.info.name, "address": self.info.address, "hosts": rows,
                "joined": joined, "channel": self.endpoint.server.statistics()
                if self.endpoint else {}}))
        elif isinstance(message, ActorExitRequest):
            if self.joiner is not None:
                self.joiner.stop()
            if self.endpoint is not None:
                self.endpoint.close()

    def _start(self, message: m.HostsStart, sender) -> None:
        config = message.config
        self.start_log(message.log_dir, actor="hosts")
        self.incarnation = config.get("incarnation") or uuid.uuid4().hex
        self.info = reg.HostInfo.from_wire(config["info"])
        secret = auth.read_secret(config["secret_file"])
        tls = TLSSettings(**config["tls"]) if config.get("tls") else None
        listed = [reg.HostInfo.from_wire(h) for h in config.get("listed", [])]
        self.registry = reg.HostRegistry(lost_after=float(config["lost_after"]),
                                         listed=[h for h in listed if h.name != self.info.name])
        self._self_heard(time.monotonic())
        try:
            self.endpoint = ClusterEndpoint(cluster_address(self.info.address),
                                            ChannelServer(self.info.name, secret),
                                            self._handle, tls=tls)
        except (pynng.NNGException, ClusterError) as exc:
            self.send(sender, m.StartError(reason=f"cannot listen for the cluster on "
                                                  f"{self.info.address} (+1): {exc}"))
            return
        if config.get("join"):
            self.joiner = Joiner(master_url=config["join"], info=self.info,
                                 incarnation=self.incarnation, secret=secret,
                                 interval=float(config["heartbeat"]), tls=tls)
        get_logger().info("hosts_started", name=self.info.name, endpoint=self.endpoint.address,
                          join=config.get("join"))
        self.wakeupAfter(TICK)
        self.send(sender, m.Started(pid=os.getpid(), info={"endpoint": self.endpoint.address}))

    def _self_heard(self, now: float) -> None:
        with self.lock:
            changes = self.registry.handle(reg.Heartbeat(
                name=self.info.name, incarnation=self.incarnation, now=now))
            if changes:  # first time (or after a long stall): this host is its own member
                self.registry.handle(reg.Announce(info=self.info, incarnation=self.incarnation,
                                                  now=now))

    def _tick(self) -> None:
        now = time.monotonic()
        self._self_heard(now)
        with self.lock:
            changes = self.registry.handle(reg.Tick(now=now))
        self._log(changes)

    def _handle(self, name: str, kind: str, body: Any, peer: str) -> tuple[str, Any]:
        """A sealed request from host `name` (the name it proved, not one it claims)."""
        body = body if isinstance(body, dict) else {}
        incarnation = body.get("incarnation")
        if kind in ("announce", "heartbeat", "leave") and not (
                isinstance(incarnation, str) and 0 < len(incarnation) <= 64):
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
            self._log(changes, peer=peer)
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
        if kind == "leave":
            with self.lock:
                changes = self.registry.handle(reg.Leave(name=name, incarnation=incarnation,
                                                         now=now))
            self._log(changes, peer=peer)
            return "ok", {}
        return "refused", {"message": f"unknown cluster request {kind!r}"}

    def _log(self, changes: list, peer: str | None = None) -> None:
        log = get_logger()
        for change in changes:
            if isinstance(change, reg.HostJoined):
                log.info("host_joined", host=change.name, rejoined=change.rejoined, peer=peer)
            elif isinstance(change, reg.HostRestarted):
                log.warning("host_restarted", host=change.name)
            elif isinstance(change, reg.HostLost):
                log.warning("host_lost", host=change.name, reason=change.reason)
