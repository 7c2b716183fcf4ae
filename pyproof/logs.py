"""Actor logs: one JSON-lines file per actor, every line with fixed ids.

Each actor process calls `configure_actor_log(log_dir, actor=..., session=...)`
once; the file is private (0600), as the whole sandbox. The actor, session
and pid are process-wide (not context variables, which new threads would not
see: the data planes log from their own threads); loggers add the query with
`get_logger().bind(query=...)`.

The lines are what structlog's JSON renderer wrote with our processors (the
event's keys, `event`, `actor`, `session`, `pid`, `level`, an ISO UTC
`timestamp`, and `exception` with the traceback for `exc_info=True`), but a
configured process writes them itself: importing and configuring structlog
was a tenth of a lite session's start-up (every actor is forked from a daemon
that had to import it), and each call went through its processor chain. A
process that never configured its log (a client, a test calling an actor's
parts directly) gets structlog's default logger, as before.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

from pyproof.sandbox import make_private_dir, open_private

_FIXED: dict[str, Any] = {}
_sink: TextIO | None = None  # the configured file (None: structlog's default logger)
_lock = threading.Lock()  # one line at a time from the actor's threads


def configure_actor_log(log_dir: str, *, actor: str, session: str | None = None) -> None:
    global _sink
    make_private_dir(log_dir)
    stream = open_private(os.path.join(log_dir, f"{actor}.jsonl"), "a", buffering=1)
    _FIXED.clear()
    _FIXED.update(actor=actor, session=session, pid=os.getpid())
    _sink = stream


def timestamp(now: float) -> str:
    """`now` (seconds since the epoch) as structlog's ISO UTC stamp, always with microseconds
    (so that the stamps of one file sort as text)."""
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def _exception_text(exc_info: Any) -> str:
    import traceback

    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def render(context: dict[str, Any], level: str, event: Any, fields: dict[str, Any],
           now: float) -> str:
    """One log line (no newline): the bound and the event's keys, then this process's fixed
    ones (`configure_actor_log`), as JSON."""
    record = {**context, **fields, "event": event}
    for key, value in _FIXED.items():
        record.setdefault(key, value)
    record["level"] = level
    record["timestamp"] = timestamp(now)
    exc_info = record.pop("exc_info", None)
    if exc_info:
        record["exception"] = _exception_text(exc_info)
    return json.dumps(record, default=repr)


class ActorLogger:
    """What `get_logger()` returns once the process logs to its file: structlog's
    methods that pyproof uses (`bind`, `debug` ... `critical`, `exception`)."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}

    def bind(self, **fields: Any) -> ActorLogger:
        return ActorLogger({**self._context, **fields})

    def unbind(self, *keys: str) -> ActorLogger:
        return ActorLogger({k: v for k, v in self._context.items() if k not in keys})

    def new(self, **fields: Any) -> ActorLogger:
        return ActorLogger(fields)

    def _log(self, level: str, event: Any, fields: dict[str, Any]) -> None:
        line = render(self._context, level, event, fields, time.time())
        with _lock:
            _sink.write(line + "\n")  # type: ignore[union-attr]  # set: we were handed out

    def debug(self, event: Any = None, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: Any = None, **fields: Any) -> None:
        self._log("info", event, fields)

    msg = info

    def warning(self, event: Any = None, **fields: Any) -> None:
        self._log("warning", event, fields)

    warn = warning

    def error(self, event: Any = None, **fields: Any) -> None:
        self._log("error", event, fields)

    def exception(self, event: Any = None, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log("error", event, fields)

    def critical(self, event: Any = None, **fields: Any) -> None:
        self._log("critical", event, fields)

    fatal = critical


_LOGGER = ActorLogger()


def get_logger() -> Any:
    if _sink is not None:
        return _LOGGER
    import structlog  # not configured here: structlog's default (and its configuration)

    return structlog.get_logger()


# -- reading the logs back (proofctl logs) ----------------------------------------------

LEVELS = ("debug", "info", "warning", "error", "critical")
_QUIET_KEYS = ("timestamp", "event", "actor", "level", "session", "pid")


def read_records(log_dir: str, offsets: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The JSON records of every `*.jsonl` file in `log_dir`, in time order.

    With `offsets` (path -> bytes already read, updated in place) only what
    was appended since is read: `proofctl logs --follow` polls this way.
    """
    import glob
    import json

    records = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*.jsonl"))):
        start = 0 if offsets is None else offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        if offsets is not None:
            offsets[path] = start + end
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    records.sort(key=lambda r: str(r.get("timestamp", "")))
    return records


def keep_record(record: dict[str, Any], *, session: str | None = None,
                worker: str | None = None, level: str | None = None) -> bool:
    """Whether `proofctl logs` shows `record`: its session, worker and at least `level`.

    `worker` matches the actor name (`worker-1`) or its number (`1`).
    """
    if session is not None and record.get("session") != session:
        return False
    if worker is not None:
        name = str(worker) if not str(worker).isdigit() else f"worker-{worker}"
        if record.get("actor") != name:
            return False
    if level is not None:
        have = str(record.get("level", "info")).lower()
        if have in LEVELS and LEVELS.index(have) < LEVELS.index(level):
            return False
    return True


def format_record(record: dict[str, Any]) -> str:
    """One human line: time, level, actor, then the event (a selector's line as it printed)."""
    head = (f"{record.get('timestamp', '')} {record.get('level', ''):7s} "
            f"{record.get('actor', ''):14s}")
    event = record.get("event", "")
    if event == "selector_output":
        return f"{head} {record.get('stream', 'stdout')}: {record.get('line', '')}"
    if event == "selector_log":
        return f"{head} {record.get('logger', '')}: {record.get('message', '')}"
    rest = {k: v for k, v in record.items() if k not in _QUIET_KEYS}
    extra = " ".join(f"{k}={v}" for k, v in rest.items())
    return f"{head} {event} {extra}".rstrip()
