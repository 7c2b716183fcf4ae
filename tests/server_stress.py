"""Close a context-pool server while requests are in flight, again and again (a script).

    python tests/server_stress.py {pool|old|plain} ITERATIONS SEED

`pool` is `pyproof.transport.server.ContextPoolServer`; `old` is the pattern it
replaced (kept here, verbatim in spirit, as the control): threads in
``context.recv_msg()`` / ``context.send()`` with `close` closing the socket
under them. nng aborts the process now and then with the old one (seen: exit
134, "panic: pthread_mutex_lock: Invalid argument" in 3 runs of 4), so the
test runs this in a subprocess and reads its exit status. `plain` is `pool`,
and in addition each client's plain Req0 socket is closed by the main thread
while the client's thread is in its send or recv (the pattern of
`ClusterClient`, `Forwarder` and the tunnel's close). Prints one line per run:
iterations done, requests answered.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import threading
import time

import pynng

from pyproof.transport.server import ContextPoolServer, Request

CONTEXTS = 6
CLIENTS = 4


class OldServer:
    """The gateway's and host links' server as it was before ContextPoolServer."""

    def __init__(self, socket: pynng.Socket, handler, *, contexts: int, name: str) -> None:
        self.socket, self.handler = socket, handler
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(socket.new_context(),),
                                          name=f"{name}-{i}", daemon=True)
                         for i in range(contexts)]
        for thread in self._threads:
            thread.start()

    def _serve(self, context) -> None:
        while not self._closed.is_set():
            try:
                message = context.recv_msg()
            except pynng.NNGException:  # closed
                return
            reply = self.handler(Request(data=message.bytes, peer="", slot=0))
            with contextlib.suppress(pynng.NNGException):
                context.send(reply)

    def close(self) -> None:
        self._closed.set()
        self.socket.close()
        for thread in self._threads:
            thread.join(1.0)


def handler(request: Request) -> bytes:
    if random.random() < 0.3:  # noqa: S311 (a slow answer now and then: a send in flight)
        time.sleep(random.random() / 2000)  # noqa: S311
    return bytes(request.data)


def client(sock: pynng.Socket, stop: threading.Event, answered: list[int]) -> None:
    with sock:
        while not stop.is_set():
            try:
                sock.send(b"x" * random.randrange(1, 200))  # noqa: S311
                sock.recv()
                answered[0] += 1
            except pynng.NNGException:
                if stop.wait(0.001):
                    return


def main(kind: str, iterations: int, seed: int) -> int:
    random.seed(seed)
    answered = [0]
    with tempfile.TemporaryDirectory(prefix="pyproof-stress-") as tmp:
        for i in range(iterations):
            address = f"ipc://{os.path.join(tmp, f's{i}.ipc')}"
            sock = pynng.Rep0(send_timeout=1_000)
            sock.listen(address)
            if kind in ("pool", "plain"):
                server = ContextPoolServer(sock, handler, contexts=CONTEXTS, name="stress")
            else:
                server = OldServer(sock, handler, contexts=CONTEXTS, name="stress")
            stop = threading.Event()
            socks = [pynng.Req0(recv_timeout=200, send_timeout=200, resend_time=-1)
                     for _ in range(CLIENTS)]
            for s in socks:
                s.dial(address, block=False)
            clients = [threading.Thread(target=client, args=(s, stop, answered), daemon=True)
                       for s in socks]
            for c in clients:
                c.start()
            time.sleep(random.random() / 200)  # noqa: S311 (requests in flight, at random)
            if kind == "plain":  # under the clients' threads, mid-call
                for s in socks:
                    s.close()
            server.close()
            stop.set()
            for c in clients:
                c.join(2.0)
    print(f"{kind}: {iterations} closes, {answered[0]} requests answered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
