"""An actor's log lines: structlog's JSON shape, written without structlog."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

from pyproof import logs


def _lines_of(code: str, tmp_path) -> list[dict]:
    """Run `code` in a fresh interpreter whose log is configured in `tmp_path`; its lines."""
    prelude = ("from pyproof import logs\n"
               f"logs.configure_actor_log({str(tmp_path)!r}, actor='worker-1', session='s1')\n"
               "log = logs.get_logger()\n")
    subprocess.run([sys.executable, "-c", prelude + code], check=True, timeout=60)
    with open(tmp_path / "worker-1.jsonl") as f:
        return [json.loads(line) for line in f]


def test_a_line_has_the_events_keys_the_fixed_ids_level_and_utc_time(tmp_path):
    before = datetime.datetime.now(datetime.UTC)
    (line, warned) = _lines_of("log.bind(query='q1').info('packet_done', entries=5, ranges=(1, 2),"
                               " blob=b'x')\nlog.warn('late')\n", tmp_path)
    stamp = datetime.datetime.fromisoformat(line.pop("timestamp").replace("Z", "+00:00"))
    assert before - datetime.timedelta(seconds=1) <= stamp <= datetime.datetime.now(
        datetime.UTC)
    assert isinstance(line.pop("pid"), int)
    assert line == {"query": "q1", "entries": 5, "ranges": [1, 2], "blob": "b'x'",
                    "event": "packet_done", "actor": "worker-1", "session": "s1",
                    "level": "info"}
    assert warned["level"] == "warning" and warned["event"] == "late"


def test_exc_info_becomes_the_traceback_text(tmp_path):
    code = ("try:\n    1 / 0\nexcept ZeroDivisionError:\n"
            "    log.error('crashed', exc_info=True)\n    log.exception('again')\n"
            "log.error('no_trace', exc_info=False)\n")
    crashed, again, plain = _lines_of(code, tmp_path)
    for line in (crashed, again):
        assert line["level"] == "error"
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert line["exception"].endswith("ZeroDivisionError: division by zero")
    assert "exception" not in plain and "exc_info" not in plain


def test_a_configured_process_logs_without_importing_structlog(tmp_path):
    _lines_of("log.info('x')\nimport sys\nassert 'structlog' not in sys.modules\n", tmp_path)


def test_lines_from_many_threads_are_never_interleaved(tmp_path):
    code = ("import threading\n"
            "def run(i):\n"
            "    for j in range(200):\n"
            "        log.info('tick', thread=i, j=j, pad='x' * 500)\n"
            "threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]\n"
            "[t.start() for t in threads]\n[t.join() for t in threads]\n")
    lines = _lines_of(code, tmp_path)
    assert sorted((r["thread"], r["j"]) for r in lines) == [
        (i, j) for i in range(4) for j in range(200)]


def test_a_process_that_never_configured_its_log_gets_structlogs_default_logger():
    # a client, or a test that runs an actor's parts in its own process (and may
    # configure structlog to quiet them, as bench.transport does)
    code = ("import structlog; from pyproof import logs\n"
            "assert type(logs.get_logger()) is type(structlog.get_logger())\n"
            "assert not isinstance(logs.get_logger(), logs.ActorLogger)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_timestamps_keep_their_microseconds_so_they_sort_as_text():
    assert logs.timestamp(0.0) == "1970-01-01T00:00:00.000000Z"
    assert logs.timestamp(1.5) == "1970-01-01T00:00:01.500000Z"
    assert logs.timestamp(86400.25) < logs.timestamp(86400.250001 + 0.00001)
