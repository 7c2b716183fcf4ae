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

from collections.abc import Sequence

import pynng
from pynng import ffi, lib
from pynng.exceptions import check_err

from pyproof.transport.codec import DEFAULT_MAX_FRAME

__all__ = ["RECV_LIMIT", "SMALL", "ContextIO", "context_recv_view", "parts_size", "recv_view",
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


def context_recv_view(ctx: pynng.Context) -> bytes | memoryview:
    """`recv_view` on a socket's context: a request whose reply may be sent later.

    A Rep0 context holds its request's reply route, so one thread can leave a
    request unanswered (the master holds a worker's "next packet" until there is
    one) while it serves others on new contexts. Waits up to the socket's
    ``recv_timeout`` (nng gives each context the socket's value when it opens);
    raises ``pynng.Timeout`` or ``pynng.Closed`` as ``recv`` does.
    """
    aio_p = ffi.new("nng_aio **")
    check_err(lib.nng_aio_alloc(aio_p, ffi.NULL, ffi.NULL))
    aio = aio_p[0]
    try:
        lib.nng_ctx_recv(ctx.context, aio)  # void: the result is the aio's
        lib.nng_aio_wait(aio)
        check_err(lib.nng_aio_result(aio))
        msg = lib.nng_aio_get_msg(aio)
    finally:
        lib.nng_aio_free(aio)
    return _view(msg)


class ContextIO:
    """One thread's receive and reply on Rep0 contexts, with two aios allocated once.

    `context_recv_view` and pynng's `Context.send` allocate and free an aio
    (and pynng a `Message` with its lock) per call; a master granting tens of
    thousands of packets a second does it once. Not thread-safe: one owner
    thread, which calls `close` when done (after its socket closed, or with no
    operation running).
    """

    def __init__(self) -> None:
        self._aios = []
        for _ in range(2):
            aio_p = ffi.new("nng_aio **")
            check_err(lib.nng_aio_alloc(aio_p, ffi.NULL, ffi.NULL))
            self._aios.append(aio_p[0])
        self._recv, self._send = self._aios

    def recv(self, ctx: pynng.Context, timeout_ms: int) -> bytes | memoryview:
        """A request on `ctx` (see `context_recv_view`); pynng.Timeout after `timeout_ms`."""
        aio = self._recv
        lib.nng_aio_set_timeout(aio, timeout_ms)
        lib.nng_ctx_recv(ctx.context, aio)
        lib.nng_aio_wait(aio)
        check_err(lib.nng_aio_result(aio))
        return _view(lib.nng_aio_get_msg(aio))

    def send(self, ctx: pynng.Context, data: bytes, timeout_ms: int) -> None:
        """Reply `data` on `ctx`; raises what `Context.send` raises (the message is freed)."""
        message = ffi.new("nng_msg **")
        check_err(lib.nng_msg_alloc(message, len(data)))
        msg = message[0]
        if data:
            ffi.memmove(lib.nng_msg_body(msg), data, len(data))
        aio = self._send
        lib.nng_aio_set_timeout(aio, timeout_ms)
        lib.nng_aio_set_msg(aio, msg)
        lib.nng_ctx_send(ctx.context, aio)
        lib.nng_aio_wait(aio)
        status = lib.nng_aio_result(aio)
        if status:  # not sent: the message is still ours
            lib.nng_msg_free(msg)
            check_err(status)

    def close(self) -> None:
        for aio in self._aios:
            lib.nng_aio_free(aio)  # stops anything still running first
        self._aios = []


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
