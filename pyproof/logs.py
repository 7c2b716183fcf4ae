"""structlog set-up: one JSON-lines file per actor, every line with fixed ids.

Each actor process calls `configure_actor_log(log_dir, actor=..., session=...)`
once; the file is private (0600), as the whole sandbox. The actor, session
and pid are process-wide (not context variables, which new threads would not
see: the data planes log from their own threads); loggers add the query with
`get_logger().bind(query=...)`.
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


def configure_actor_log(log_dir: str, *, actor: str, session: str | None = None) -> None:
    make_private_dir(log_dir)
    stream = open_private(os.path.join(log_dir, f"{actor}.jsonl"), "a", buffering=1)
    _FIXED.clear()
    _FIXED.update(actor=actor, session=session, pid=os.getpid())
    structlog.configure(
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
