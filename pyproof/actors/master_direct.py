"""The master's direct route: a session's own client starts and stops queries here.

The long way (client -> gateway -> sessions -> session -> master, Thespian hops
each) costs most of a trivial query's latency. Once the gateway has let a
client into its session (open, first query), that client sends the session's
next starts and stops straight to its master on an nng rep socket beside the
data plane. The gateway's authorisation is not repeated per query: the request
is sealed with the session's data key (transport/sealing.py), which only the
session's user (their secret) and the master (handed it by the gateway when
the session was made) can compute. Anything else is refused with a reason.

The socket is served on the master's actor thread (Thespian watches its
receive descriptor), so a direct start and a start that came the long way
are handled one after the other by the same code: a retry under the same
query id, by either route, is answered, never run twice.

`parse_request` is the pure part (bytes in, a request or a refusal out).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pynng

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.query.spec import QuerySpec, SpecError
from pyproof.sandbox import make_private_paths
from pyproof.transport import sealing
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.wire import RECV_LIMIT

SEND_TIMEOUT_MS = 1_000  # a reply that cannot leave by then is dropped (the client falls back)
KINDS = ("start_query", "stop_query")


def direct_address(packet_address: str) -> str:
    """Where a session's master serves its client, beside its data plane (`trees.master_address`:
    deterministic, so a restarted master is found at the same place). "" when there is none."""
    if not packet_address.startswith("ipc://"):
        return ""
    head, _, name = packet_address.rpartition("/")
    if not name.startswith("master-"):
        return ""
    return f"{head}/direct-{name[len('master-'):]}"


class BadDirectRequest(Exception):
    """A direct request the master will not serve (not sealed with the session's key, another
    session's, malformed): the message says which, for the client's QueryError."""


@dataclass(frozen=True, slots=True)
class DirectRequest:
    kind: str  # "start_query" or "stop_query"
    query_id: str
    spec: QuerySpec | None = None  # start_query
    abort: bool = False  # stop_query


def parse_request(data_key: bytes, session_id: str, wire: bytes | memoryview) -> DirectRequest:
    """The request in `wire`, checked: sealed with `data_key`, for `session_id`, well formed.

    Pure (no socket, no clock). Raises BadDirectRequest naming what is wrong.
    """
    if not data_key:
        raise BadDirectRequest(f"session {session_id} has no data key: its master takes queries "
                            "only through the daemon's gateway")
    try:
        frame = decode_frame(sealing.unseal(data_key, wire))
    except sealing.SealError:
        raise BadDirectRequest(f"the request is not sealed with session {session_id}'s key "
                            "(another user's, or another session's)") from None
    except ProtocolError as exc:
        raise BadDirectRequest(f"malformed request: {exc}") from None
    if frame.session != session_id:
        raise BadDirectRequest(f"unknown session {frame.session!r}: this master serves session "
                            f"{session_id}")
    if frame.type not in KINDS:
        raise BadDirectRequest(f"unknown request {frame.type!r} (a master's direct route takes "
                            f"{', '.join(KINDS)})")
    payload = frame.payload if isinstance(frame.payload, dict) else {}
    query_id = payload.get("query")
    if not isinstance(query_id, str) or not query_id or len(query_id) > 128:
        raise BadDirectRequest("'query' must be a query id (a non-empty string)")
    if frame.type == "stop_query":
        return DirectRequest(kind=frame.type, query_id=query_id, abort=payload.get("abort") is True)
    try:
        spec = QuerySpec.from_wire(payload.get("spec"))
    except SpecError as exc:
        raise BadDirectRequest(f"query {query_id}: {exc}") from None
    return DirectRequest(kind=frame.type, query_id=query_id, spec=spec)


class DirectServer:
    """The rep socket of the direct route; the master's actor thread serves it (`serve`) when
    Thespian reports `fd` readable. Every request is answered before the next is read."""

    def __init__(self, address: str) -> None:
        self.address = address
        path = address[len("ipc://"):]
        self.socket = pynng.Rep0(send_timeout=SEND_TIMEOUT_MS, recv_max_size=RECV_LIMIT)
        try:
            self.socket.listen(address)
            make_private_paths([path])  # this user only (the request is sealed too)
            self.fd: int = self.socket.recv_fd
        except BaseException:
            self.socket.close()
            raise

    def serve(self, answer: Any) -> int:
        """Answer every request waiting; how many there were.

        `answer(data, reply)` handles one request and calls `reply(bytes)` once, as
        early as it can (a query's start is answered before its workers are told);
        one that returned without replying is answered with an error, so the next
        request can be read. Never blocks on a receive; a reply is bounded by the send
        timeout (a client gone meanwhile: nng drops it).
        """
        served = 0
        while True:
            try:
                data = self.socket.recv(block=False)
            except (pynng.TryAgain, pynng.Closed):
                return served
            served += 1
            reply = _Reply(self.socket)
            try:
                answer(data, reply)
            finally:
                reply(encode_frame("error", {"message": "the master did not answer", "retry":
                                             True}))

    def close(self) -> None:
        self.socket.close()  # nng removes the socket file


class _Reply:
    """Sends the answer to one request, once (later calls do nothing)."""

    def __init__(self, socket: pynng.Socket) -> None:
        self.socket, self.sent = socket, False

    def __call__(self, frame: bytes) -> None:
        if self.sent:
            return
        self.sent = True
        # a client that timed out first went the long way: its answer is dropped
        with contextlib.suppress(pynng.Timeout, pynng.Closed):
            self.socket.send(frame)
