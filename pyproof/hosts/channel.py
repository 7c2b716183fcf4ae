"""The cluster channel: how two daemons of one cluster know each other (pure: no sockets).

1. A mutual HMAC handshake on the cluster secret (transport/auth.py's, with
   purpose ``"cluster"``): the dialing daemon proves it holds the secret *and*
   binds its host name into the MAC; the listening daemon proves the same back
   (its server id is its host name). The secret never travels.
2. Both ends then derive a channel key from the secret and the two nonces;
   every later frame, both ways, is sealed with it (HMAC-SHA256 tag) and
   numbered: a request whose number is not above the last one is a replay and
   refused, an answer must echo its request's number. So no one without the
   secret can join, ask anything, or forge or replay an answer; and a host's
   name is the one it proved, never what a frame says.

Wire: the handshake travels as plain ``auth_challenge``/``auth_answer``/
``auth_ok`` frames; everything else as a ``cluster`` frame whose payload is
``{"channel": id, "sealed": seal(key, inner frame)}`` (the answer without
``channel``). The inner frame carries ``{"seq", "dir", "body"}``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import threading
from typing import Any

from pyproof.errors import ProofError
from pyproof.transport import auth, sealing
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame

PURPOSE = "cluster"
CLUSTER = "cluster"  # frame type of a sealed channel message
_LABEL = b"pyproof-cluster-channel-v1"
_WORKER_LABEL = b"pyproof-cluster-worker-v1"


class ChannelError(ProofError):
    """A cluster frame is refused (`reason`: unknown channel, bad seal, replayed, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"cluster channel refused: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


UNKNOWN_CHANNEL = "unknown channel"
BAD_SEAL = "bad seal"
REPLAYED = "replayed"
MALFORMED = "malformed"


def channel_key(secret: bytes, server_nonce: bytes, client_nonce: bytes, name: str,
                server_id: str) -> bytes:
    data = b"\0".join([_LABEL, server_nonce, client_nonce, name.encode(), server_id.encode()])
    return hmac.new(secret, data, hashlib.sha256).digest()


def worker_key(secret: bytes, session_id: str) -> bytes:
    """The key a session's remote workers seal their frames with: derived on each host
    from the cluster secret and the session id, so it never travels, and a worker of
    another session (another key) is not heard."""
    return hmac.new(secret, _WORKER_LABEL + b"\0" + session_id.encode(),
                    hashlib.sha256).digest()


def _seal(key: bytes, kind: str, seq: int, direction: str, body: Any) -> bytes:
    return sealing.seal(key, encode_frame(kind, {"seq": seq, "dir": direction, "body": body}))


def _unseal(key: bytes, sealed: Any, direction: str) -> tuple[str, int, Any]:
    if not isinstance(sealed, bytes):
        raise ChannelError(MALFORMED, "'sealed' must be bytes")
    try:
        inner = decode_frame(bytes(sealing.unseal(key, sealed)))
    except sealing.SealError as exc:
        raise ChannelError(BAD_SEAL, str(exc)) from None
    except ProtocolError as exc:
        raise ChannelError(MALFORMED, str(exc)) from None
    payload = inner.payload
    if not (isinstance(payload, dict) and isinstance(payload.get("seq"), int)
            and payload.get("dir") == direction):
        raise ChannelError(MALFORMED, "inner frame lacks seq/dir (or a reflected frame)")
    return inner.type, payload["seq"], payload.get("body")


class _Channel:
    __slots__ = ("key", "last_seq", "name")

    def __init__(self, name: str, key: bytes) -> None:
        self.name, self.key, self.last_seq = name, key, 0


class ChannelServer:
    """The listening side: handshakes in, channels out; thread-safe (one lock)."""

    def __init__(self, server_id: str, secret: bytes, *, max_channels: int = 4096) -> None:
        self.server_id = server_id
        self._secret = secret
        self._handshake = auth.ServerHandshake(server_id, lambda _name: secret, purpose=PURPOSE)
        self._channels: collections.OrderedDict[str, _Channel] = collections.OrderedDict()
        self._max = max_channels
        self._lock = threading.Lock()

    def challenge(self, now: float) -> dict[str, Any]:
        with self._lock:
            return self._handshake.challenge(now)

    def accept(self, answer: Any, now: float, *, peer: str | None = None) -> dict[str, Any]:
        """``{"ok": auth_ok dict, "channel": the new channel's id}``; AuthError if refused."""
        with self._lock:
            login, ok = self._handshake.verify(answer, now, peer=peer)
            key = channel_key(self._secret, answer["server_nonce"], answer["client_nonce"],
                              login.user, self.server_id)
            channel_id = secrets.token_hex(12)
            self._channels[channel_id] = _Channel(login.user, key)
            while len(self._channels) > self._max:
                self._channels.popitem(last=False)
            return {"ok": ok, "channel": channel_id}

    def open(self, payload: Any) -> tuple[str, str, str, int, Any]:
        """(channel id, peer name, kind, seq, body) of a sealed request; ChannelError if not."""
        if not isinstance(payload, dict) or not isinstance(payload.get("channel"), str):
            raise ChannelError(MALFORMED, "a cluster frame needs 'channel' and 'sealed'")
        channel_id = payload["channel"]
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise ChannelError(UNKNOWN_CHANNEL, "no such channel (this daemon restarted, "
                                                    "or never admitted you); log in again")
            kind, seq, body = _unseal(channel.key, payload.get("sealed"), "req")
            if seq <= channel.last_seq:
                raise ChannelError(REPLAYED, f"request number {seq} is not above "
                                             f"{channel.last_seq}")
            channel.last_seq = seq
            self._channels.move_to_end(channel_id)
            return channel_id, channel.name, kind, seq, body

    def seal_reply(self, channel_id: str, seq: int, kind: str, body: Any) -> dict[str, Any]:
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise ChannelError(UNKNOWN_CHANNEL, "the channel closed meanwhile")
            return {"sealed": _seal(channel.key, kind, seq, "rep", body)}

    def statistics(self) -> dict[str, Any]:
        stats = self._handshake.statistics()
        return {"channels": len(self._channels), "logins": stats.logins,
                "refusals": dict(stats.refusals)}


class ChannelClient:
    """The dialing side of one channel (use from one thread at a time)."""

    def __init__(self, name: str, secret: bytes, *, server_id: str | None = None) -> None:
        self.name = name
        self._secret = secret
        self.expected_server = server_id
        self._handshake: auth.ClientHandshake | None = None
        self._answer: dict[str, Any] | None = None
        self.channel_id: str | None = None
        self.server_id: str | None = None
        self._key = b""
        self._seq = 0

    @property
    def open(self) -> bool:
        return self.channel_id is not None

    def reset(self) -> None:
        self.channel_id, self._handshake, self._answer = None, None, None

    def answer(self, challenge: Any, *, peer: str | None = None) -> dict[str, Any]:
        self.reset()
        self._handshake = auth.ClientHandshake(self.name, self._secret, purpose=PURPOSE,
                                               server_id=self.expected_server)
        self._answer = self._handshake.answer(challenge, peer=peer)
        return self._answer

    def confirm(self, accepted: Any, *, peer: str | None = None) -> None:
        """Check the server's answer (:meth:`ChannelServer.accept`'s): AuthError if the
        peer did not prove it holds the cluster secret."""
        if self._handshake is None or self._answer is None:
            raise auth.AuthError(auth.OUT_OF_ORDER, "no challenge answered", peer=peer,
                                 user=self.name)
        accepted = accepted if isinstance(accepted, dict) else {}
        login = self._handshake.confirm(accepted.get("ok"), peer=peer)
        channel_id = accepted.get("channel")
        if not isinstance(channel_id, str):
            raise auth.AuthError(auth.MALFORMED, "auth ok lacks a channel id", peer=peer,
                                 user=self.name)
        self._key = channel_key(self._secret, self._answer["server_nonce"],
                                self._answer["client_nonce"], self.name, login.server_id)
        self.channel_id, self.server_id, self._seq = channel_id, login.server_id, 0

    def request(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        """(seq, payload of the ``cluster`` frame to send)."""
        if self.channel_id is None:
            raise ChannelError(UNKNOWN_CHANNEL, "not logged in")
        self._seq += 1
        return self._seq, {"channel": self.channel_id,
                           "sealed": _seal(self._key, kind, self._seq, "req", body)}

    def reply(self, seq: int, payload: Any) -> tuple[str, Any]:
        """(kind, body) of the answer to request `seq`; ChannelError if it is not one."""
        if not isinstance(payload, dict):
            raise ChannelError(MALFORMED, "a cluster answer must be a map")
        kind, got, body = _unseal(self._key, payload.get("sealed"), "rep")
        if got != seq:
            raise ChannelError(REPLAYED, f"answer to request {got}, expected {seq}")
        return kind, body
