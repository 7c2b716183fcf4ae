"""Starting a Thespian actor system that only its own user on this host can reach.

Thespian's TCP transport binds its admin socket to all interfaces and accepts
unauthenticated pickle. We set THESPIAN_BASE_IPADDR to loopback (so it
advertises 127.0.0.1 and does not probe a public route) and patch the one
place that widens the bind address to '' so every Thespian socket binds
127.0.0.1 only; a second patch closes, unread, every connection that another
local user opened (the peer's uid comes from /proc/net/tcp). Must run in the
daemon process before the system starts; actors are forked from it and
inherit the patches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

LOOPBACK = "127.0.0.1"


def bind_thespian_to_loopback() -> None:
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK
    from thespian.system.transport import IPBase

    cls = IPBase.IPActorAddress
    if getattr(cls, "_pyproof_loopback", False):
        return
    original_init = cls.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.bindname and self.bindname[0] in ("", "0.0.0.0"):
            self.bindname = (LOOPBACK, *self.bindname[1:])

    cls.__init__ = init
    cls._pyproof_loopback = True


def start_actors_quicker() -> None:
    """Make two steps of Thespian's start of every actor process cheaper (together about a
    millisecond per actor, and a session's start waits for four actors in a row: root,
    sessions, session supervisor, master and workers). Must run in the daemon before the
    system starts, like the patches above (the admin and every actor inherit it).

    - Each actor gives each of the 64 signals a Python handler through `signal.signal`,
      whose wrapper converts each number, and each handler it returns, to an enum: the
      `_signal.signal` it wraps does the same (Thespian reads no returned handler) in a
      tenth of the time (0.35 ms per actor).
    - Each actor looks for the optional `setproctitle` (it names processes in `ps`): not
      installed, each look is a failed import, a search of the whole `sys.path` in a
      process just forked (0.5 ms per actor). Looked for once here instead: the actors use
      what was found (the same names in `ps` when it is installed).
    """
    import _signal

    from thespian.system import logdirector, multiprocCommon, utilis

    if getattr(multiprocCommon, "_pyproof_quicker", False):
        return
    try:
        from setproctitle import setproctitle
    except Exception:  # noqa: BLE001 - as Thespian's own look (a bare except)
        setproctitle = None

    def set_proc_name(name, actor_address) -> None:
        if setproctitle is not None:
            setproctitle(f"{name} {actor_address}")

    for module in (utilis, multiprocCommon, logdirector):
        module.setProcName = set_proc_name
    multiprocCommon.set_signal_handler = _signal.signal
    multiprocCommon._pyproof_quicker = True


def tcp_peer_uid(sock: socket.socket) -> int | None:
    """The uid that owns the other end of a loopback TCP connection, or None.

    Asked of the kernel by the connection's addresses (netlink sock_diag, ~40 us);
    /proc/net/tcp (milliseconds: the kernel writes out every socket) if that fails.
    """
    try:
        peer = sock.getpeername()[:2]
        local = sock.getsockname()[:2]
    except OSError:
        return None
    try:
        return _sock_diag_uid(peer, local)
    except (OSError, struct.error):
        return _proc_net_tcp_uid(peer, local)


_SOCK_DIAG_BY_FAMILY = 20
_NETLINK_SOCK_DIAG = 4
_UID_OFFSET = 16 + 64  # nlmsghdr, then inet_diag_msg up to its uid


def _sock_diag_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The peer socket's uid, looked up by its exact 4-tuple (NETLINK_SOCK_DIAG)."""
    sockid = (struct.pack(">HH", peer[1], local[1]) + socket.inet_aton(peer[0]) + bytes(12)
              + socket.inet_aton(local[0]) + bytes(12) + struct.pack("=I", 0)
              + b"\xff" * 8)  # interface any; cookie "none"
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        netlink.send(header + request)
        answer = netlink.recv(65536)
    _, kind = struct.unpack_from("=IH", answer)
    if kind != _SOCK_DIAG_BY_FAMILY:  # an error: no such socket (it is gone)
        return None
    return struct.unpack_from("=I", answer, _UID_OFFSET)[0]


def _proc_net_tcp_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The same from /proc/net/tcp: the line whose local address is the peer's."""
    want = (_proc_address(*peer), _proc_address(*local))
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if (fields[1], fields[2]) == want:
                    return int(fields[7])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


def _proc_address(ip: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp writes it: host-order hex, then the port."""
    return f"{int.from_bytes(socket.inet_aton(ip), sys.byteorder):08X}:{port:04X}"


class _OtherUser(Exception):
    """A connection from another local user, closed unread (not an OSError on purpose:
    Thespian's own accept-error path queues a bogus envelope that kills the actor)."""


def refuse_other_users() -> None:
    """Close every Thespian connection that another local user opened, before reading it.

    Thespian's sockets take pickled messages from whoever connects; binding them
    to loopback keeps other hosts out, this keeps other users of this host out.
    A peer whose uid cannot be read (already gone) is refused too.
    """
    from thespian.system.transport.TCPTransport import TCPTransport

    if getattr(TCPTransport, "_pyproof_same_user", False):
        return
    original_new_socket = TCPTransport.new_socket
    original_accept = TCPTransport._acceptNewIncoming
    me = os.geteuid()

    def new_socket(self, op, *args, **kwargs):
        result = original_new_socket(self, op, *args, **kwargs)
        if getattr(op, "__name__", None) == "accept":
            uid = tcp_peer_uid(result[0])
            if uid != me:
                result[0].close()
                raise _OtherUser(f"uid {uid}")
        return result

    def accept_new_incoming(self):
        try:
            original_accept(self)
        except _OtherUser as refused:
            logging.getLogger("pyproof.thespian").warning(
                "refused a connection from %s to %s: only uid %d may talk to this actor "
                "system", refused, self.myAddress, me)

    TCPTransport.new_socket = new_socket
    TCPTransport._acceptNewIncoming = accept_new_incoming
    TCPTransport._pyproof_same_user = True


def free_port() -> int:
    """A loopback port free now (the kernel's choice, from its ephemeral range).

    Good for a socket bound at once. For one bound later by another process (a
    daemon's control port), use `spare_port`: meanwhile any socket bound to port 0
    may get this one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


SPARE_PORTS_FROM = 10_000
SPARE_BAND = 2_000


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out for a bind to port 0 (Linux's default if unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def spare_port(tries: int = 200) -> int:
    """A loopback port free now and outside the kernel's ephemeral range, for a server
    that another process starts listening on a while later (the test suite's and the
    stress harness's daemons).

    A port from `free_port` may meanwhile be taken by any socket bound to port 0
    (every Thespian actor binds one; so do other tests' daemons), and the daemon then
    fails to start with "Address in use"; a port below the ephemeral range is only
    ever taken on request. Concurrent callers under pytest-xdist draw from disjoint
    bands (by worker number), so they cannot pick the same port either. Falls back to
    `free_port` where the kernel's range leaves no room below it.
    """
    import random

    low, _ = ephemeral_range()
    bands = (low - SPARE_PORTS_FROM) // SPARE_BAND
    if bands < 1:
        return free_port()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else os.getpid()
    first = SPARE_PORTS_FROM + (index % bands) * SPARE_BAND
    for _ in range(tries):
        port = random.randrange(first, first + SPARE_BAND)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    return free_port()


def thespian_log_defs(log_dir: str) -> dict:
    """Route Thespian's own `logging` output to a file in the log directory."""
    return {
        "version": 1,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(actorAddress)s %(message)s"}
        },
        "filters": {"actor": {"()": _ActorAddressFilter}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": os.path.join(log_dir, "thespian-actors.log"),
                "formatter": "plain",
                "filters": ["actor"],
                "level": logging.WARNING,
            }
        },
        "root": {"handlers": ["file"], "level": logging.WARNING},
    }


class _ActorAddressFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "actorAddress"):
            record.actorAddress = "-"
        return True


PRELOAD_WAIT = 120.0
"""Seconds a fork in the admin waits for its preload at most (imports stuck that long: go
on, the child then imports what it needs itself)."""


@contextlib.contextmanager
def _admin_runs_first(preload: Callable[[], None]) -> Iterator[None]:
    """While in this block, a Thespian admin process started from here runs `preload` once
    it has started its logger process, on a thread, and forks nothing (no actor) before
    `preload` is done.

    Thespian forks the admin from this process (`multiprocCommon.startAdmin` is the
    new process's target, looked up when it starts) and every actor from the admin:
    what `preload` imports there, every actor has, while this process (the daemon) is
    spared the work. Meanwhile the admin serves: its handshakes with its logger and
    with us, and our first request (to create the root), which then waits for
    `preload` in the admin instead of being sent only once it is done. A fork waits for
    the thread (`fork_gate`): a child forked while it imports would inherit the import
    locks it holds, held for ever.
    """
    from thespian.system import multiprocCommon

    from pyproof.actors import fork_gate

    original = multiprocCommon.startAdmin

    def start_admin(admin_class, *args, **kwargs):  # the admin process (forked) runs this
        serve = admin_class.run

        def run(admin):
            def load() -> None:
                try:
                    preload()
                except Exception:  # noqa: BLE001 - serve anyway: each actor then imports
                    # what it needs itself, and a broken module fails there, with its
                    # traceback
                    traceback.print_exc()  # the admin's stderr: the daemon's output file

            loading = threading.Thread(target=load, name="pyproof-preload", daemon=True)

            def before_fork() -> None:  # (inherited by forked children: a no-op there)
                if loading.is_alive() and loading is not threading.current_thread():
                    loading.join(PRELOAD_WAIT)

            fork_gate.gate(before_fork)
            loading.start()
            return serve(admin)

        admin_class.run = run  # in the admin process only
        return original(admin_class, *args, **kwargs)

    multiprocCommon.startAdmin = start_admin
    try:
        yield
    finally:
        multiprocCommon.startAdmin = original


def start_system(log_dir: str, *, admin_preload: Callable[[], None] | None = None):
    """Start a multiprocTCPBase system on a free loopback port; returns (system, port).

    `admin_preload`: run in the admin process before it creates the first actor
    (see `_admin_runs_first`): what the actors need loaded, loaded once.
    """
    bind_thespian_to_loopback()
    refuse_other_users()
    start_actors_quicker()
    os.environ["THESPLOG_FILE"] = os.path.join(log_dir, "thespian-internal.log")
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")
    from thespian.actors import ActorSystem

    last_error: Exception | None = None
    for _ in range(5):
        port = free_port()
        try:
            # transientUnique: not Thespian's process-wide singleton (a later system in
            # the same process, e.g. the next test module's, must not find a dead one)
            with (_admin_runs_first(admin_preload) if admin_preload is not None
                  else contextlib.nullcontext()):
                system = ActorSystem(
                    "multiprocTCPBase",
                    {"Admin Port": port},
                    logDefs=thespian_log_defs(log_dir),
                    transientUnique=True,
                )
            return system, port
        except Exception as exc:  # port taken between probe and bind: try another
            last_error = exc
    raise RuntimeError(f"cannot start the Thespian actor system: {last_error!r}")
