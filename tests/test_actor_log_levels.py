"""Actor logs drop lines below `PYPROOF_LOG_LEVEL` (info by default) in the logger's method
itself; what a selector logs keeps the levels its own loggers let through."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from pyproof.logs import configure_actor_log, get_logger, get_unfiltered_logger


@pytest.fixture
def actor_log(tmp_path, monkeypatch):
    """Configure this process's log as an actor's; the lines written, read back."""
    def configure(level: str | None) -> object:
        if level is None:
            monkeypatch.delenv("PYPROOF_LOG_LEVEL", raising=False)
        else:
            monkeypatch.setenv("PYPROOF_LOG_LEVEL", level)
        configure_actor_log(str(tmp_path), actor="worker-0", session="s")
        return lambda: [json.loads(line) for line in
                        (tmp_path / "worker-0.jsonl").read_text().splitlines()]

    yield configure
    stream = getattr(structlog.get_config()["logger_factory"], "_file", None)
    structlog.reset_defaults()
    if stream is not None:  # an actor keeps its log open for its life; this test does not
        stream.close()


def test_debug_lines_are_dropped_by_default_and_the_rest_written(actor_log):
    lines = actor_log(None)
    log = get_logger()
    log.debug("file_looked_up", file="a.root")
    log.bind(query="q").info("query_started")
    log.warning("slow", seconds=2)
    assert [(r["event"], r["level"]) for r in lines()] == [("query_started", "info"),
                                                           ("slow", "warning")]
    assert lines()[0]["query"] == "q" and lines()[0]["actor"] == "worker-0"


def test_a_dropped_line_costs_no_rendering(actor_log):
    actor_log(None)

    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("a dropped line was rendered")

    get_logger().debug("nothing", value=Loud())  # the filtering logger's no-op method


@pytest.mark.parametrize(("level", "kept"), [("debug", ["d", "i", "w"]), ("WARNING", ["w"]),
                                             ("no-such-level", ["i", "w"])])
def test_the_level_comes_from_the_environment(actor_log, level, kept):
    lines = actor_log(level)
    log = get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [r["event"] for r in lines()] == kept


def test_a_selectors_debug_record_is_kept_at_the_default_level(actor_log):
    from pyproof.worker_output import _LogHandler

    lines = actor_log(None)
    user = logging.getLogger("my.analysis")
    record = user.makeRecord("my.analysis", logging.DEBUG, __file__, 1, "cut at %d", (3,),
                             None)
    _LogHandler().emit(record)
    get_unfiltered_logger().debug("also_kept")
    assert [(r["event"], r["level"], r.get("message")) for r in lines()] == [
        ("selector_log", "debug", "cut at 3"), ("also_kept", "debug", None)]
