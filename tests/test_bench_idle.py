"""bench.idle runs end to end and names each process by its role (not timing-sensitive)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_idle_bench_reports_every_process_by_its_role():
    # a process of its own: the bench makes itself a subreaper, which pytest must not become
    out = subprocess.run([sys.executable, "-m", "pyproof.bench.idle", "--workers", "1",
                          "--seconds", "0.5", "--settle", "0", "--by-process", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    summary = json.loads(out.stdout.splitlines()[-1])
    names = {name.split(" ", 1)[1] for name in summary["rounds"][0]["by_process"]}
    assert {"root", "sessions", "gateway", "master", "worker-0"} <= names, names
    assert any(name.startswith("session ") for name in names)
    assert summary["min"] >= 0.0
