"""Starting a Thespian actor system that nobody outside this host can reach.

Thespian's TCP transport binds its admin socket to all interfaces and accepts
unauthenticated pickle. We set THESPIAN_BASE_IPADDR to loopback (so it
advertises 127.0.0.1 and does not probe a public route) and patch the one
place that widens the bind address to '' so every Thespian socket binds
127.0.0.1 only. Must run in the daemon process before the system starts;
actors are forked from it and inherit the patch.
"""

from __future__ import annotations

import logging
import os
import socket

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


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


def start_system(log_dir: str):
    """Start a multiprocTCPBase system on a free loopback port; returns (system, port)."""
    bind_thespian_to_loopback()
    os.environ["THESPLOG_FILE"] = os.path.join(log_dir, "thespian-internal.log")
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")
    from thespian.actors import ActorSystem

    last_error: Exception | None = None
    for _ in range(5):
        port = free_port()
        try:
            system = ActorSystem(
                "multiprocTCPBase",
                {"Admin Port": port},
                logDefs=thespian_log_defs(log_dir),
            )
            return system, port
        except Exception as exc:  # port taken between probe and bind: try another
            last_error = exc
    raise RuntimeError(f"cannot start the Thespian actor system: {last_error!r}")
