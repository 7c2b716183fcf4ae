"""structlog set-up: one JSON-lines file per actor, every line with fixed ids.

Each actor process calls `configure_actor_log(log_dir, actor=..., session=...)`
once; `bind(query=...)` adds the query id for the lines of a query.
"""

from __future__ import annotations

import os
from typing import Any

import structlog


def configure_actor_log(log_dir: str, *, actor: str, session: str | None = None) -> None:
    os.makedirs(log_dir, exist_ok=True)
    stream = open(os.path.join(log_dir, f"{actor}.jsonl"), "a", buffering=1)  # noqa: SIM115
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(actor=actor, session=session, pid=os.getpid())


def bind(**fields: Any) -> None:
    structlog.contextvars.bind_contextvars(**fields)


def get_logger() -> Any:
    return structlog.get_logger()
