"""A worker's stdout, stderr and `logging`, captured into its own log with the worker named.

A selector's `print()` would otherwise go wherever the daemon's stdout goes
(a daemon file, with no worker named). `capture_worker_output()` runs once in
each worker process: Python-level writes to `sys.stdout`/`sys.stderr` become
`selector_output` events (one per line, `stream` = stdout|stderr) and
records of the `logging` module become `selector_log` events (`logger`,
`message`, the record's level), all in the worker's structlog file
(`worker-N.jsonl`), which `proofctl logs --worker N` shows.

The last lines each thread wrote are kept (`tail(thread)`), so a failing
query can carry the failing worker's last words in its `QueryError`.
Output written by C code straight to file descriptors 1 and 2 is not seen.
"""

from __future__ import annotations

import collections
import io
import logging
import sys
import threading
from typing import Any

from pyproof.logs import get_logger, get_unfiltered_logger

TAIL_LINES = 20
MAX_LINE = 4000  # a line longer than this is cut (a runaway print must not fill the log)

_lock = threading.Lock()
_tails: dict[int, collections.deque[str]] = {}
_installed = False


def _remember(thread: int, text: str) -> None:
    with _lock:
        tail = _tails.get(thread)
        if tail is None:
            tail = _tails[thread] = collections.deque(maxlen=TAIL_LINES)
        tail.append(text)


def tail(thread: int | None = None) -> list[str]:
    """The last lines (`stdout: ...`, `stderr: ...`, `WARNING analysis: ...`) `thread` wrote."""
    with _lock:
        return list(_tails.get(threading.get_ident() if thread is None else thread, ()))


def clear_tail(thread: int | None = None) -> None:
    """Forget what `thread` wrote (a new query starts)."""
    with _lock:
        _tails.pop(threading.get_ident() if thread is None else thread, None)


class _LineStream(io.TextIOBase):
    """A text stream that logs each complete line (per thread: prints never interleave)."""

    def __init__(self, name: str, original: Any) -> None:
        self.name = name
        self.original = original
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # code that asks for a file descriptor (faulthandler, subprocess) gets the real one
        return self.original.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        buffered = getattr(self._partial, "text", "") + text
        *lines, rest = buffered.split("\n")
        self._partial.text = rest[-MAX_LINE:]
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._partial, "text", "")
        if rest:
            self._partial.text = ""
            self._emit(rest)

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")[:MAX_LINE]
        _remember(threading.get_ident(), f"{self.name}: {line}")
        get_logger().info("selector_output", stream=self.name, line=line)


class _LogHandler(logging.Handler):
    """`logging` records of user code, as structlog events at the record's level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not kill the worker
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        level = record.levelname.lower()
        _remember(threading.get_ident(), f"{record.levelname} {record.name}: {message}")
        # the user's loggers chose what to let through: a debug record they pass is kept
        method = getattr(get_unfiltered_logger(), level if level in _LEVELS else "info")
        method("selector_log", logger=record.name, message=message[:MAX_LINE])


_LEVELS = ("debug", "info", "warning", "error", "critical")


def capture_worker_output() -> None:
    """Send this process's stdout, stderr and logging to its structlog file (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stdout = _LineStream("stdout", sys.__stdout__)
    sys.stderr = _LineStream("stderr", sys.__stderr__)
    handler = _LogHandler()
    # Thespian makes an actor's logging.root a forwarder that refuses addHandler (and
    # the manager's root may be another object): attach to each through Logger itself
    roots = {id(r): r for r in (logging.root, logging.Logger.manager.root)}
    for root in roots.values():
        logging.Logger.addHandler(root, handler)
        if root.level == logging.WARNING:
            root.setLevel(logging.INFO)  # logging's default would drop the user's info lines
