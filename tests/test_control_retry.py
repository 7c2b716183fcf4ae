"""A request the daemon could not finish in time is asked again, under the same id."""

from __future__ import annotations

import threading

import pynng
import pytest

from pyproof.client.control import ControlClient, RequestRefused
from pyproof.transport.frames import decode_frame, encode_frame

# the fake waits for requests as long as the client goes on sending them (its deadline, 10 s),
# and more: a client starved of CPU on a loaded 2-core machine may send its first one late
SERVE_WITHIN = 20.0


def fake_gateway(address: str, answers: list[tuple[str, dict]], seen: list,
                 ) -> tuple[threading.Thread, threading.Event]:
    """Serves `answers` in order; the socket stays open until the returned event is set
    (the client has its answer): nng sends a reply after `send` returns, and a socket
    closed at once drops it, which the client sees as a lost answer (ConnectionReset)."""
    done = threading.Event()

    def serve() -> None:
        with pynng.Rep0(listen=address, recv_timeout=int(SERVE_WITHIN * 1000)) as rep:
            for kind, payload in answers:
                frame = decode_frame(rep.recv())
                seen.append(frame)
                rep.send(encode_frame(kind, payload, request_id=frame.request_id))
            done.wait(SERVE_WITHIN)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, done


def logged_in_client(address: str) -> ControlClient:
    client = ControlClient(address, user="alice", secret=b"a" * 32, attempt_timeout=2.0)
    client._token = {"fake": "token"}  # the fake gateway does not check it
    return client


def test_a_timed_out_request_is_resent_with_the_same_id_until_it_completes(tmp_path):
    address = f"ipc://{tmp_path}/gw.ipc"
    seen: list = []
    late = {"message": "the daemon did not answer 'open_session' within 20 s", "retry": True}
    server, done = fake_gateway(address, [("error", late), ("error", late),
                                          ("ok", {"session": "s1", "workers": ["worker-0"]})],
                                seen)
    client = logged_in_client(address)
    try:
        assert client.call("open_session", {"workers": 1}, deadline=10)["session"] == "s1"
    finally:
        done.set()
        client.close()
        server.join(SERVE_WITHIN)
    assert len(seen) == 3 and len({f.request_id for f in seen}) == 1


def test_a_refusal_is_not_retried(tmp_path):
    address = f"ipc://{tmp_path}/gw.ipc"
    seen: list = []
    server, done = fake_gateway(address, [("error", {"message": "refused: too many sessions"})],
                                seen)
    client = logged_in_client(address)
    try:
        with pytest.raises(RequestRefused, match="too many sessions"):
            client.call("open_session", {"workers": 1}, deadline=10)
    finally:
        done.set()
        client.close()
        server.join(SERVE_WITHIN)
    assert len(seen) == 1
