"""Send a frame's parts and read a received frame in place, on pynng sockets.

pynng's ``send`` takes one ``bytes`` and ``recv`` copies nng's message into a
new ``bytes``. A sealed frame is several parts (tag, header, CBOR item, the raw
memory of large arrays), so going through pynng would cost two extra copies of
every large message: one to join the parts, one out of nng's message. Here the
parts are copied once, straight into an nng message (the copy bare pynng makes
too), and a received message is read through a view that owns it: nng frees
the message when the last view of it is gone, so no view can outlive it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import pynng
from pynng import ffi, lib
from pynng.exceptions import check_err
from pynng.sockaddr import _nng_sockaddr

from pyproof.transport.codec import DEFAULT_MAX_FRAME

__all__ = ["RECV_LIMIT", "SMALL", "ContextIO", "SendGuard", "parts_size",
           "recv_view",
           "send_parts"]

SMALL = 64 * 1024
"""Messages under this many bytes are joined and copied as pynng does (fewer calls)."""

RECV_LIMIT = DEFAULT_MAX_FRAME + 1024 * 1024
"""``recv_max_size`` of every socket that listens: nng drops a larger message (and the
connection) before allocating it. The slack covers a seal and buffer headers."""


def send_parts(sock: pynng.Socket, parts: Sequence[bytes | memoryview], *,
               block: bool = True) -> None:
    """Send the concatenation of ``parts`` as one message (one copy of each part).

    Raises what ``sock.send`` raises (``pynng.TryAgain`` when not blocking and the
    peer cannot take it, ``pynng.Timeout``, ``pynng.Closed``).
    """
    total = parts_size(parts)
    if total < SMALL:  # joining a few KiB is cheaper than building the message by hand
        sock.send(parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts),
                  block=block)
        return
    message = ffi.new("nng_msg **")
    check_err(lib.nng_msg_alloc(message, total))
    msg = message[0]
    try:
        body, offset = ffi.cast("char *", lib.nng_msg_body(msg)), 0
        for part in parts:
            size = _size(part)
            if size:
                ffi.memmove(body + offset, part, size)
                offset += size
    except BaseException:
        lib.nng_msg_free(msg)
        raise
    status = lib.nng_sendmsg(sock.socket, msg, 0 if block else lib.NNG_FLAG_NONBLOCK)
    if status:
        lib.nng_msg_free(msg)  # nng owns the message only once it was sent
    check_err(status)


def recv_view(sock: pynng.Socket, *, block: bool = True) -> bytes | memoryview:
    """Receive one message; a large one as a read-only view of nng's own buffer (no copy).

    The view keeps the message alive; slicing it (``sealing.unseal`` does) keeps
    it alive too. Decoders copy what they keep, so the message goes with the view.
    A small message (under :data:`SMALL` bytes) is copied into ``bytes`` and freed.
    """
    message = ffi.new("nng_msg **")
    flags = 0 if block else lib.NNG_FLAG_NONBLOCK
    check_err(lib.nng_recvmsg(sock.socket, message, flags))
    return _view(message[0])


class ContextIO:
    """One thread's receive and reply on Rep0 contexts, with two aios allocated once.

    A Rep0 context holds its request's reply route, so one thread can leave a
    request unanswered (the master holds a worker's "next packet" until there is
    one) while it serves others on new contexts. pynng's `Context.send` (and a
    receive of our own making) allocate and free an aio (and pynng a `Message`
    with its lock) per call; a master granting thousands of packets a second does
    it once. One owner thread runs `recv`, `recv_from`, `send` and, when done,
    `close`; any thread may `cancel`. Used by the master's plane thread and by
    each thread of a `ContextPoolServer`.

    Why `cancel`: closing the socket under a thread that waits in a context
    receive or send makes nng abort the whole process now and then (about once
    in 20 closes here). The owner of the socket cancels instead (the thread's
    wait ends with ``pynng.Closed`` at once, and every later call too), joins the
    thread, and only then closes the socket. Operations start under a lock that
    `cancel` and `close` take too, so a cancel never misses an operation about to
    start, nor touches an aio already freed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._aios = []
        for _ in range(2):
            aio_p = ffi.new("nng_aio **")
            check_err(lib.nng_aio_alloc(aio_p, ffi.NULL, ffi.NULL))
            self._aios.append(aio_p[0])
        self._recv, self._send = self._aios

    def _start(self, aio, timeout_ms: int, start) -> None:
        with self._lock:
            if self._cancelled:
                raise pynng.Closed("cancelled: the socket is closing", lib.NNG_ECLOSED)
            lib.nng_aio_set_timeout(aio, timeout_ms)
            start()  # asynchronous: returns at once

    def recv(self, ctx: pynng.Context, timeout_ms: int) -> bytes | memoryview:
        """A request on `ctx` (a large one as a view, see `recv_view`); pynng.Timeout after
        `timeout_ms`, pynng.Closed once cancelled."""
        return _view(self._recv_msg(ctx, timeout_ms))

    def recv_from(self, ctx: pynng.Context,
                  timeout_ms: int) -> tuple[bytes | memoryview, str]:
        """As `recv`, with the peer the message came from ("tcp:127.0.0.1:5555"), for logs
        and logins ("unknown peer" when its connection is already gone)."""
        msg = self._recv_msg(ctx, timeout_ms)
        try:
            peer = _peer_of(msg)
        except BaseException:
            lib.nng_msg_free(msg)
            raise
        return _view(msg), peer

    def _recv_msg(self, ctx: pynng.Context, timeout_ms: int):
        aio = self._recv
        self._start(aio, timeout_ms, lambda: lib.nng_ctx_recv(ctx.context, aio))
        lib.nng_aio_wait(aio)
        status = lib.nng_aio_result(aio)
        if status and self._cancelled:
            raise pynng.Closed("cancelled: the socket is closing", lib.NNG_ECLOSED)
        check_err(status)
        return lib.nng_aio_get_msg(aio)

    def send(self, ctx: pynng.Context, data: bytes, timeout_ms: int) -> None:
        """Reply `data` on `ctx`; raises what `Context.send` raises (the message is freed)."""
        message = ffi.new("nng_msg **")
        check_err(lib.nng_msg_alloc(message, len(data)))
        msg = message[0]
        if data:
            ffi.memmove(lib.nng_msg_body(msg), data, len(data))
        aio = self._send
        lib.nng_aio_set_msg(aio, msg)

        def start() -> None:
            lib.nng_ctx_send(ctx.context, aio)

        try:
            self._start(aio, timeout_ms, start)
        except pynng.Closed:
            lib.nng_msg_free(msg)
            raise
        lib.nng_aio_wait(aio)
        status = lib.nng_aio_result(aio)
        if status:  # not sent: the message is still ours
            lib.nng_msg_free(msg)
            if self._cancelled:
                raise pynng.Closed("cancelled: the socket is closing", lib.NNG_ECLOSED)
            check_err(status)

    def cancel(self) -> None:
        """End the running wait (if any) and refuse every later one (any thread)."""
        with self._lock:
            self._cancelled = True
            for aio in self._aios:
                lib.nng_aio_cancel(aio)

    def close(self) -> None:
        """Free the aios (the owner thread, with no operation of its own running)."""
        with self._lock:
            self._cancelled = True
            aios, self._aios = self._aios, []
            for aio in aios:
                lib.nng_aio_free(aio)  # stops anything still running first


class SendGuard:
    """Lets threads send on contexts until the owner closes their socket, never during it.

    nng aborts the whole process (no exception) when a context is sent on while
    its socket closes. Every send goes through `sending()`; `close` refuses new
    ones and waits for those under way (each is bounded by the socket's
    ``send_timeout``) before the owner closes the socket.
    """

    def __init__(self) -> None:
        self._closed = False
        self._active = 0
        self._idle = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def sending(self) -> Iterator[bool]:
        """Yield True while this thread may send (`close` waits for it); False once closed."""
        with self._idle:
            usable = not self._closed
            if usable:
                self._active += 1
        try:
            yield usable
        finally:
            if usable:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float) -> bool:
        """Refuse every later send; wait up to `timeout` s for those under way (True: done)."""
        with self._idle:
            self._closed = True
            return self._idle.wait_for(lambda: self._active == 0, timeout)


def _peer_of(msg) -> str:
    """"family:address" of the pipe a received message came by (pynng's `Pipe` spelling)."""
    try:
        address = ffi.new("nng_sockaddr []", 1)
        check_err(lib.nng_pipe_get_addr(lib.nng_msg_get_pipe(msg), b"remote-address", address))
        sockaddr = _nng_sockaddr(address)
        return f"{sockaddr.family_as_str}:{sockaddr}"
    except Exception:  # the connection closed since: the message is still good
        return "unknown peer"


def _view(msg) -> bytes | memoryview:
    """The body of a received nng message, which this call now owns (see `recv_view`)."""
    size = lib.nng_msg_len(msg)
    if size < SMALL:
        data = ffi.unpack(ffi.cast("char *", lib.nng_msg_body(msg)), size)
        lib.nng_msg_free(msg)
        return data
    body = ffi.gc(ffi.cast("char *", lib.nng_msg_body(msg)), lambda _: lib.nng_msg_free(msg))
    return memoryview(ffi.buffer(body, size)).toreadonly()


def parts_size(parts: Sequence[bytes | memoryview]) -> int:
    """Bytes in the message the parts make."""
    return sum(_size(part) for part in parts)


def _size(part: bytes | memoryview) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)
