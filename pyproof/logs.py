"""structlog set-up: one JSON-lines file per actor, every line with fixed ids.

Each actor process calls `configure_actor_log(log_dir, actor=..., session=...)`
once; the file is private (0600), as the whole sandbox. The actor, session
and pid are process-wide (not context variables, which new threads would not
see: the data planes log from their own threads); loggers add the query with
`get_logger().bind(query=...)`.

Lines below the level `PYPROOF_LOG_LEVEL` (debug, info, warning, error; info
by default), read by each actor as it configures its log (so set it where the
daemon starts), are dropped by the logger's method itself (structlog's
filtering bound logger: the call returns at once), not built, rendered and
then thrown away. What a selector logs through `logging` is kept at every
level its own loggers let through (`get_unfiltered_logger`).
"""

from __future__ import annotations

import os
from typing import Any

import structlog

from pyproof.sandbox import make_private_dir, open_private

_FIXED: dict[str, Any] = {}


def _add_fixed(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in _FIXED.items():
        event_dict.setdefault(key, value)
    return event_dict


LOG_LEVEL_ENV = "PYPROOF_LOG_LEVEL"
DEFAULT_LEVEL = "info"
_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def log_level() -> int:
    """The level below which actors drop log lines (`PYPROOF_LOG_LEVEL`; a value that
    names no level counts as the default, info: a typo must not silence the logs)."""
    name = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LEVEL).strip().lower()
    return _LEVEL_NUMBERS.get(name, _LEVEL_NUMBERS[DEFAULT_LEVEL])


def configure_actor_log(log_dir: str, *, actor: str, session: str | None = None) -> None:
    make_private_dir(log_dir)
    stream = open_private(os.path.join(log_dir, f"{actor}.jsonl"), "a", buffering=1)
    _FIXED.clear()
    _FIXED.update(actor=actor, session=session, pid=os.getpid())
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(log_level()),
        processors=[
            _add_fixed,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger()


def get_unfiltered_logger() -> Any:
    """A logger that writes every level: for what user code logs (a selector's `logging`
    records), which its own loggers' levels have already filtered."""
    return structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(0))


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
