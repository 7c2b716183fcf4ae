"""proofctl from the shell: demo, run and logs, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import data_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def proofctl(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyproof.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_writes_data_runs_two_workers_and_plots(tmp_path):
    plot = tmp_path / "mass.png"
    out = proofctl(
        "demo",
        "--events",
        "30000",
        "--files",
        "3",
        "--data",
        str(tmp_path / "d"),
        "--plot",
        str(plot),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["stats"]["entries"] == 30000
    assert set(report["stats"]["workers"]) == {"worker-0", "worker-1"}
    values, edges = report["mass"]["values"], report["mass"]["edges"][0]
    peak = max(range(len(values)), key=values.__getitem__)
    assert 85 <= (edges[peak] + edges[peak + 1]) / 2 <= 95  # the Z peak, in 5 GeV bins
    assert edges[0] == 40.0 and edges[-1] == 120.0 and min(values) >= 0
    assert plot.stat().st_size > 1000
    human = proofctl(
        "demo", "--data", str(tmp_path / "d"), "--files", "3", "--plot", str(plot), "--no-progress"
    )
    assert human.returncode == 0, human.stderr
    assert "#" in human.stdout and "ev/s" in human.stdout


def test_run_a_selector_file_over_a_dataset_and_read_the_logs(tmp_path):
    source = tmp_path / "count.py"
    source.write_text(
        "import pyproof\n"
        "class Count(pyproof.Selector):\n"
        "    branches = ['M']\n"
        "    def begin(self, ctx):\n"
        "        ctx.outputs['n'] = 0\n"
        "    def process(self, events, ctx):\n"
        "        ctx.outputs['n'] += len(events)\n"
    )
    out = proofctl(
        "run",
        f"{source}:Count",
        "--dataset",
        data_file("uproot-Zmumu.root") + ":events",
        "--workers",
        "2",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["outputs"]["n"] == 2304
    assert report["stats"]["entries"] == 2304
    logs = proofctl("logs", "--json")
    assert logs.returncode == 0, logs.stderr
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert {"master", "worker-0", "worker-1", "gateway"} <= {e["actor"] for e in events}
    finished = [e for e in events if e["event"] == "query_finished"]
    assert finished and finished[-1]["entries"] == 2304 and finished[-1]["query"]


def test_run_reports_a_bad_file_with_a_clear_error(tmp_path):
    out = proofctl(
        "run",
        "tests/sample_selectors.py:ZmumuMass",
        "--dataset",
        str(tmp_path / "missing.root") + ":events",
    )
    assert out.returncode == 1
    assert "file not found" in out.stderr and "missing.root" in out.stderr


def test_run_accepts_a_catalog_name_as_python_does(tmp_path):
    from pyproof.client.control import current_user
    from pyproof.datasets import Catalog
    from pyproof.datasets.cli import default_catalog_path

    # the sandbox's catalog (PYPROOF_SANDBOX is inherited by proofctl)
    with Catalog(default_catalog_path(), user=current_user()) as catalog:
        catalog.register("cli_zmumu", [data_file("uproot-Zmumu.root") + ":events"],
                         overwrite=True)
    out = proofctl("run", "tests/sample_selectors.py:ZmumuMass", "--dataset", "cli_zmumu",
                   "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["stats"]["entries"] == 2304
    assert {e["dataset"] for e in report["lineage"]["elements"]} == {
        f"/default/{current_user()}/cli_zmumu"}
    # neither a dataset nor a file: the error says both were tried
    out = proofctl("run", "tests/sample_selectors.py:ZmumuMass", "--dataset", "cli_zmumu.root")
    assert out.returncode == 1
    assert "no dataset '/default/" in out.stderr and "/cli_zmumu.root'" in out.stderr
    assert "'cli_zmumu.root' was tried as a file too: no such file" in out.stderr
