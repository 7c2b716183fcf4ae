"""`proofctl bench`: a worker scan on tiny generated data writes its JSON and plots (no timing)."""

from __future__ import annotations

import json
import os

import hist
import pytest

from pyproof.bench import suite
from pyproof.cli.main import main
from pyproof.errors import BenchError

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_cpu_scan_with_a_pool_beside_it_writes_json_and_plots(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["bench", "cpu", "--workers", "2,1", "--events", "4000", "--files", "2",
            "--chunk", "1500", "--peers", "pool", "--out", str(out), "--data", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pyproof / pool = " in printed and "sequential uproot" in printed
    report = json.loads((out / "bench-cpu.json").read_text())
    assert report["kind"] == "cpu" and report["events"] == 4000 and report["files"] == 2
    rows = report["rows"]
    assert [r["workers"] for r in rows] == [1, 2]
    for r in rows:
        assert r["mode"] == "pyproof" and r["wall"] > 0 and r["mb_per_s"] > 0
        assert r["events_per_s"] == pytest.approx(4000 / r["wall"])
        assert len(r["share"]) == r["workers"]
        # the warm query looked every file up, as the peers' chunks are counted untimed
        assert r["lookups_opened"] == 0
        assert sum(r["share"].values()) == pytest.approx(1.0)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert [(p["mode"], p["workers"]) for p in report["peers"]] == [
        ("sequential", 1), ("pool", 1), ("pool", 2)]
    assert [(r["peer"], r["workers"]) for r in report["ratios"]] == [("pool", 1), ("pool", 2)]
    for name in ("bench-cpu-events.png", "bench-cpu-speedup.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_generated_data_is_written_once_and_reused(tmp_path) -> None:
    first = suite.ensure_data(str(tmp_path), files=2, events=100)
    stamps = [os.stat(s.rpartition(":")[0]).st_mtime_ns for s in first]
    again = suite.ensure_data(str(tmp_path), files=2, events=100)
    assert again == first
    assert [os.stat(s.rpartition(":")[0]).st_mtime_ns for s in again] == stamps
    tasks = suite.chunks(first, 30)
    assert sum(stop - start for _, _, start, stop in tasks) == 100
    assert max(stop - start for _, _, start, stop in tasks) == 30


def test_outputs_that_disagree_with_pyproofs_stop_the_bench() -> None:
    a = hist.Hist.new.Reg(4, 0, 4).Double().fill([1, 2])
    b = hist.Hist.new.Reg(4, 0, 4).Double().fill([1])
    assert suite.same_outputs({"h": a}, {"h": a.copy()}) == []
    with pytest.raises(BenchError, match=r"^bench: pool with 2 worker\(s\) gave outputs h "
                                         r"that differ from pyproof's"):
        suite._check("pool", {"h": a}, {"h": b}, 2)


def test_bad_arguments_are_refused_by_name(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "io", "--workers", "1,x", "--out", str(tmp_path)])
    assert "--workers wants numbers of workers >= 1" in capsys.readouterr().err
    assert main(["bench", "io", "--peers", "spark", "--out", str(tmp_path)]) == 1
    assert "bench: unknown peer 'spark'; valid peers: pool, dask, coffea" in (
        capsys.readouterr().err)
    assert main(["bench", "io", "--events", "1", "--files", "2", "--out", str(tmp_path)]) == 1
    assert "need --files >= 1 and --events >= --files" in capsys.readouterr().err


def _report() -> dict:
    rows = [{"mode": "pyproof", "workers": k, "wall": 1.0 / k, "events_per_s": 1000.0 * k,
             "mb_per_s": 1.0, "speedup": float(k)} for k in (1, 2)]
    return {"kind": "cpu", "events": 1000, "files": 2, "url": "lite://", "rows": rows,
            "peers": [{"mode": "pool", "workers": 2, "events_per_s": 1500.0}]}


def test_the_bench_plots_are_in_mplhep_style_and_keep_the_users_backend(tmp_path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt
    import mplhep

    figures = dict(suite.bench_figures(_report()))
    ax = figures["bench-cpu-events.png"].axes[0]
    assert ax.get_xlabel() == "Workers" and ax.get_ylabel() == "Events / s"
    assert [line.get_label() for line in ax.get_lines()] == ["pyproof", "ideal (linear)",
                                                             "pool"]
    # mplhep's CMS style (matplotlib's default: ticks out, on two sides only)
    assert mplhep.style.CMS["xtick.direction"] == "in" and mplhep.style.CMS["xtick.top"]
    tick = ax.xaxis.get_major_ticks()[0]
    assert tick.tick1line.get_marker() == matplotlib.lines.TICKUP  # pointing in
    assert tick.tick2line.get_visible()                          # on the top axis too
    before = matplotlib.get_backend()
    open_figures = plt.get_fignums()
    matplotlib.use("svg")
    try:
        paths = suite.plot(_report(), str(tmp_path))
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures
    finally:
        matplotlib.use(before)
    assert sorted(os.path.basename(p) for p in paths) == ["bench-cpu-events.png",
                                                          "bench-cpu-speedup.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == PNG
