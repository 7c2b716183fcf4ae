"""The client's control connection to a gateway: CBOR frames on nng req/rep, with retries.

The gateway may be restarted at any moment (that is the point of supervising
it). nng's dialer reconnects by itself; this class retries a request that
got no answer, with the same request id, so the daemon can recognise a
retry: every control request is idempotent by id.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pynng

from pyproof.errors import ConnectError, ProofError
from pyproof.transport.codec import ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame

ATTEMPT_TIMEOUT = 5.0
DEFAULT_DEADLINE = 60.0


class RequestRefused(ProofError):
    """The daemon answered with an error (the message is the daemon's)."""


class ControlClient:
    def __init__(self, address: str, *, attempt_timeout: float = ATTEMPT_TIMEOUT) -> None:
        self.address = address
        self.attempt_timeout = attempt_timeout
        self.socket = pynng.Req0(recv_timeout=int(attempt_timeout * 1000), send_timeout=5_000,
                                 resend_time=-1)
        self.socket.dial(address, block=False)
        # one request at a time: a second send on a req socket cancels the first
        self._lock = threading.Lock()

    def call(self, kind: str, payload: dict[str, Any] | None = None, *,
             session: str | None = None, deadline: float = DEFAULT_DEADLINE) -> dict[str, Any]:
        """Send a request and return the answer's payload; retries until `deadline` seconds.

        Raises RequestRefused when the daemon says no, ConnectError when it
        never answers.
        """
        request_id = uuid.uuid4().hex
        data = encode_frame(kind, dict(payload or {}), session=session, request_id=request_id)
        end = time.monotonic() + deadline
        if not self._lock.acquire(timeout=deadline):
            raise ConnectError(f"another request to {self.address} held the connection "
                               f"for {deadline:.0f} s")
        try:
            return self._exchange(kind, data, request_id, end, deadline)
        finally:
            self._lock.release()

    def _exchange(self, kind: str, data: bytes, request_id: str, end: float,
                  deadline: float) -> dict[str, Any]:
        attempts = 0
        while True:
            attempts += 1
            try:
                self.socket.send(data)
                frame = decode_frame(self.socket.recv())
            except (pynng.NNGException, ProtocolError):
                if time.monotonic() >= end:
                    raise ConnectError(
                        f"the daemon at {self.address} did not answer {kind!r} "
                        f"({attempts} attempts in {deadline:.0f} s)") from None
                continue
            if frame.request_id not in (None, request_id):
                continue  # a late answer to an earlier attempt of another request
            if frame.type == "error":
                message = frame.payload.get("message") if isinstance(frame.payload, dict) else None
                raise RequestRefused(str(message or frame.payload))
            return frame.payload if isinstance(frame.payload, dict) else {}

    def close(self) -> None:
        self.socket.close()
