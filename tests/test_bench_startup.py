"""`python -m pyproof.bench.startup` runs end to end and accounts for every phase (no timing)."""

from __future__ import annotations

import re

import pytest

from pyproof.bench import startup


def test_the_startup_bench_runs_a_cycle_and_prints_every_phase(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert startup.main(["--cycles", "1", "--workers", "2", "--first-query"]) == 0
    printed = capsys.readouterr().out
    assert "lite session start-up, 2 workers, median of 1 cycles" in printed
    for name in (*startup.PHASES, "connect (total)", "first cycles=1 query",
                 "cluster cpu (whole cycle)", "close"):
        # every milestone is recorded (ready.json's t_* and the actors' logs): no "-"
        assert re.search(rf"^  {re.escape(name)} +\d+\.\d", printed, re.MULTILINE), name


def test_the_phases_add_up_to_the_connect_time() -> None:
    report = startup.run(workers=1, cycles=1)
    row = report["rows"][0]
    assert all(v is not None and v >= 0 for v in row["phases"].values()), row["phases"]
    assert sum(row["phases"].values()) == pytest.approx(row["connect"], abs=1e-6)
    assert row["close"] > 0 and row["first_query"] is None and row["cluster_cpu"] > 0
