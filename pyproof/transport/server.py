"""A request/reply server on an nng Rep0 socket: a pool of threads, one context each.

The gateway's control endpoint, the cluster endpoint and a worker host's
tunnel are all this: N threads each receive a request on their own context,
call the owner's handler (which may take its time: a slow answer holds one
context, never the socket) and send its reply back on that context.

Why a class of its own: nng aborts the whole process (``Fatal Python error:
Aborted``, no exception) when a socket is closed while a thread waits in a
receive or a send on one of its contexts (seen about once in 20 closes). So
no thread ever does: each thread receives and replies through its own
cancellable `ContextIO` (the master's plane thread uses one too), each
send goes through a `SendGuard`, and `close` refuses new sends, waits for the
ones under way, cancels every receive, joins the threads, and only then
closes the socket. A thread still inside its handler when `close` gives up on
it touches the socket no more: its reply is dropped, its next receive ends at
once. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pynng

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.logs import get_logger
from pyproof.transport.wire import ContextIO, SendGuard

__all__ = ["POLL_MS", "ContextPoolServer", "Request"]

POLL_MS = 30_000
"""A receive waits this long at most, then again: bounded, yet an idle server wakes
rarely (each of its threads about twice a minute)."""
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the handler gets it."""

    data: bytes | memoryview
    """The message; a large one is a read-only view of nng's buffer (see `wire.recv_view`)."""
    peer: str
    """Where it came from, "tcp:127.0.0.1:41234" ("unknown peer" if already gone)."""
    slot: int
    """Which of the server's threads serves it (0, 1, ...): for state kept per thread."""


Handler = Callable[[Request], "bytes | None"]
"""Returns the reply (None: no reply; the requester's own timeout or resend then acts)."""


class ContextPoolServer:
    """Serve `socket` (a listening Rep0) with `contexts` threads named ``{name}-N``.

    `handler` runs on those threads, several at once. If it raises, the error is
    logged (``{name}_request_failed``) and `on_error(request, exc)`'s reply is sent (None: no
    reply): one bad request never ends a thread. The server owns the socket from
    here on: `close` closes it.
    """

    def __init__(self, socket: pynng.Socket, handler: Handler, *, contexts: int, name: str,
                 on_error: Callable[[Request, Exception], bytes | None] | None = None,
                 poll_ms: int = POLL_MS) -> None:
        self.socket = socket
        self.handler = handler
        self.name = name
        self.on_error = on_error
        self.poll_ms = poll_ms
        self._guard = SendGuard()
        self._lock = threading.Lock()  # the thread and io lists
        self._ios: list[ContextIO] = []
        timeout = socket.send_timeout  # nng's: -1 (none) when unset, as a context's
        self._send_ms = -1 if timeout is None else int(timeout)
        self._threads: list[threading.Thread] = []
        self.add_contexts(contexts)

    @property
    def closed(self) -> bool:
        return self._guard.closed

    def add_contexts(self, count: int) -> None:
        """Serve `count` more requests at once (nothing once closed)."""
        with self._lock:
            if self._guard.closed:
                return
            for _ in range(count):
                slot = len(self._threads)
                io = ContextIO()
                thread = threading.Thread(target=self._serve,
                                          args=(slot, self.socket.new_context(), io),
                                          name=f"{self.name}-{slot}", daemon=True)
                self._ios.append(io)
                self._threads.append(thread)
                thread.start()

    def _serve(self, slot: int, context: pynng.Context, io: ContextIO) -> None:
        """Run by each thread until `close`: receive, handle, reply; on its own context."""
        try:
            while not self._guard.closed:
                try:
                    data, peer = io.recv_from(context, self.poll_ms)
                except pynng.Timeout:
                    continue
                except pynng.NNGException:  # cancelled by `close` (or the socket is gone)
                    return
                reply = self._handle(Request(data=data, peer=peer, slot=slot))
                if reply is not None:
                    self._send(io, context, reply)
        finally:
            io.close()  # its aios: this thread owns them, and is done with them
            # a context close is safe while its socket closes (only sends and receives
            # are not); after the socket closed it, nng says so: nothing to do
            with contextlib.suppress(pynng.NNGException):
                context.close()

    def _handle(self, request: Request) -> bytes | None:
        try:
            return self.handler(request)
        except Exception as exc:  # one request's failure stays its own
            get_logger().error(f"{self.name}_request_failed", peer=request.peer,
                               error=repr(exc), exc_info=True)
            if self.on_error is None:
                return None
            try:
                return self.on_error(request, exc)
            except Exception as again:
                get_logger().error(f"{self.name}_error_reply_failed", error=repr(again))
                return None

    def _send(self, io: ContextIO, context: pynng.Context, reply: bytes) -> None:
        with self._guard.sending() as usable:
            if not usable:  # closing: the reply is dropped (the client asks again)
                return
            with contextlib.suppress(pynng.NNGException):  # timed out, peer gone
                io.send(context, reply, self._send_ms)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop serving and close the socket, never under a thread in a send or receive.

        Waits up to `timeout` s for the threads (and at most one send timeout for the
        replies being sent). Threads still in their handler then are left to end by
        themselves (they are daemon threads and touch the socket no more).
        """
        end = time.monotonic() + timeout
        send_timeout = max(0.0, (self.socket.send_timeout or 0) / 1000)
        with self._lock:
            sends_done = self._guard.close(max(timeout, send_timeout + 0.5))
            ios, threads = list(self._ios), list(self._threads)
        for io in ios:
            io.cancel()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        busy = [t.name for t in threads if t.is_alive()]
        if busy or not sends_done:
            get_logger().warning(f"{self.name}_closed_busy", threads=busy,
                                 sends_done=sends_done)
        if sends_done:
            self.socket.close()
        else:  # a send still under way: closing now could abort the process
            get_logger().error(f"{self.name}_socket_left_open")
