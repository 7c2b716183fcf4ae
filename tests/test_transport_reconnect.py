"""A broken data connection is re-established and the query still comes back exact.

The TCP connection carrying a session's data frames is cut from the client's
side (a duplicate of nng's own descriptor, shut down: the peer sees a reset),
twice, while a query runs. nng redials (the master in callback mode, the
client in client-dials mode); frames lost on the cut connection are progress
or, at worst, the final result, which the client then fetches from the
master's kept results. Either way the histogram must equal the sequential one.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

import pyproof
from tests.daemon_helpers import Background, Daemon
from tests.test_proofd_faults import assert_exact, slow_query, wait_running


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def data_port(session) -> tuple[str, int]:
    """('local' or 'peer', port) identifying the data connection's end in this process."""
    if session.data_address:  # callback: we listen, the master dialed us
        return "local", int(session.data_address.rsplit(":", 1)[1])
    dialed = session.data.dialers[0].url  # client-dials: we dialed the session
    return "peer", int(dialed.rsplit(":", 1)[1])


def data_connections(session) -> list[tuple[tuple, socket.socket]]:
    """This process's TCP sockets on the data port, as ((local, peer), duplicate)."""
    side, port = data_port(session)
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                      socket.AF_INET6):
                raise OSError
            ends = (sock.getsockname(), sock.getpeername())
        except OSError:
            sock.close()
            continue
        if ends[0 if side == "local" else 1][1] == port:
            found.append((ends, sock))
        else:
            sock.close()
    return found


def cut(session) -> set[tuple]:
    """Reset every data connection; return their (local, peer) addresses."""
    cut_ends = set()
    for ends, sock in data_connections(session):
        try:
            sock.shutdown(socket.SHUT_RDWR)
            cut_ends.add(ends)
        except OSError:
            pass  # already ending
        finally:
            sock.close()  # the duplicate only: nng closes its own descriptor
    return cut_ends


def wait_reconnected(session, old: set[tuple], timeout: float = 10.0) -> None:
    """Until a connection other than the `old` ones carries the data port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = data_connections(session)
        for _, sock in live:
            sock.close()
        if any(ends not in old for ends, _ in live):
            return
        time.sleep(0.02)
    raise AssertionError("the data connection was not re-established")


@pytest.mark.parametrize("connection", ["callback", "dial"])
def test_a_cut_data_connection_is_redialed_and_the_result_is_exact(daemon, connection):
    with pyproof.connect(f"{daemon.url}?workers=2&connection={connection}") as session:
        running = Background(slow_query, session)
        wait_running(session)
        old: set[tuple] = set()
        for _ in range(2):
            cut_now = cut(session) - old
            assert cut_now, "no data connection found to cut"
            old |= cut_now
            wait_reconnected(session, old)
            time.sleep(0.3)
        assert_exact(running.result(60))
        assert_exact(slow_query(session))  # and the next query runs on the new connection
