"""ContextPoolServer: requests served on a pool of contexts, and a close that never aborts.

nng aborts the whole process when a socket is closed under a thread in a
context's send or receive, so the close tests run `tests/server_stress.py` in
a subprocess: an abort shows as its exit status (134), not as a dead pytest.
The old pattern (kept in that script as `OldServer`) aborted in 3 runs of 4
of 200 closes here; `ContextPoolServer` in none of dozens.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pynng
import pytest

from pyproof.transport.server import ContextPoolServer, Request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def stress(kind: str, iterations: int = 200) -> subprocess.CompletedProcess[str]:
    seed = int(os.environ.get("PYPROOF_STRESS_SEED") or random.randrange(1 << 30))
    print(f"server_stress {kind} seed={seed} (replay: PYPROOF_STRESS_SEED={seed})")
    return subprocess.run([sys.executable, "-X", "faulthandler",
                           os.path.join(HERE, "server_stress.py"), kind, str(iterations),
                           str(seed)], capture_output=True, text=True, timeout=100, cwd=ROOT)


@pytest.mark.parametrize("kind", ["pool", "plain"])
def test_closing_a_context_pool_server_with_requests_in_flight_never_aborts(kind):
    # plain: the clients' own (plain Req0) sockets are closed under their threads too
    run = stress(kind)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-4000:]}"
    assert run.stdout.startswith(f"{kind}: 200 closes, "), run.stdout


@pytest.fixture
def address(tmp_path):
    return f"ipc://{tmp_path / 's.ipc'}"


def ask(address: str, data: bytes, timeout_ms: int = 2_000) -> bytes:
    with pynng.Req0(dial=address, recv_timeout=timeout_ms, send_timeout=timeout_ms,
                    resend_time=-1) as sock:
        sock.send(data)
        return sock.recv()


def listening(address: str) -> pynng.Rep0:
    sock = pynng.Rep0(send_timeout=1_000)
    sock.listen(address)
    return sock


def test_a_handler_that_raises_answers_its_own_request_and_the_server_goes_on(address):
    def handler(request: Request) -> bytes:
        if request.data == b"boom":
            raise ValueError("bad request")
        return b"echo " + bytes(request.data)

    server = ContextPoolServer(listening(address), handler, contexts=1, name="test",
                               on_error=lambda request, exc: f"failed: {exc}".encode())
    try:
        assert ask(address, b"boom") == b"failed: bad request"
        assert ask(address, b"hi") == b"echo hi"  # the same (only) thread serves on
    finally:
        server.close()


def test_the_handler_sees_where_a_request_came_from_and_which_thread_serves_it(address):
    seen: list[Request] = []

    def handler(request: Request) -> bytes:
        seen.append(request)
        return b"ok"

    server = ContextPoolServer(listening(address), handler, contexts=3, name="test")
    try:
        assert ask(address, b"x") == b"ok"
    finally:
        server.close()
    assert seen[0].peer.startswith("ipc:"), seen[0].peer
    assert seen[0].slot in (0, 1, 2)


def test_close_gives_up_on_a_stuck_handler_within_its_bound_and_drops_its_reply(address):
    entered, release = threading.Event(), threading.Event()

    def handler(request: Request) -> bytes:
        entered.set()
        release.wait(10)
        return b"too late"

    server = ContextPoolServer(listening(address), handler, contexts=2, name="test")
    outcome: list[object] = []

    def asking() -> None:
        try:
            outcome.append(ask(address, b"x", 3_000))
        except pynng.NNGException as exc:
            outcome.append(exc)

    asker = threading.Thread(target=asking, daemon=True)
    asker.start()
    assert entered.wait(5)
    t0 = time.monotonic()
    server.close(timeout=0.5)
    assert time.monotonic() - t0 < 2.0
    stuck = [t for t in threading.enumerate() if t.name.startswith("test-")]
    assert [t.is_alive() for t in stuck] == [True]  # only the one in its handler
    release.set()  # its reply is dropped (the socket is closed), then the thread ends
    stuck[0].join(5)
    assert not stuck[0].is_alive()
    asker.join(5)
    assert isinstance(outcome[0], pynng.NNGException), outcome  # "too late" never went out
    server.add_contexts(2)  # closed: no more threads
    assert not [t for t in threading.enumerate() if t.name.startswith("test-")]
