"""Short seeded runs of the chaos and connect-storm harnesses, for CI.

Each harness runs in a subprocess (`python -m stress.chaos --json ...`): it
starts and stops its own daemon in its own sandbox, makes itself a child
subreaper and audits its own leaks; the test checks the exit status and the
report's key numbers. A killed subprocess (timeout) takes nothing with it:
the daemon was started in the harness's process tree, which we kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from pyproof.supervision.process_tree import kill_tree
from stress import REPO
from stress.chaos import make_plan

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

CHAOS_ARGS = ["--seed", "1", "--duration", "12", "--clients", "3", "--workers", "2",
              "--join-grace", "65"]
STORM_ARGS = ["--clients", "60", "--limit", "4", "--hold", "0.3"]
RUN_TIMEOUT = 150.0  # far above the expected ~25 s: only a hung harness reaches it


def run_harness(module: str, args: list[str]) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ)
    env.pop("PYPROOF_SANDBOX", None)  # the harness makes its own
    process = subprocess.Popen([sys.executable, "-m", module, *args, "--json"], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        out, err = process.communicate(timeout=10)
        pytest.fail(f"{module} did not finish within {RUN_TIMEOUT} s\n{err[-3000:]}")
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"{module} printed no JSON report (exit {process.returncode}):\n"
                    f"{out[-2000:]}\n{err[-3000:]}")
    return process.returncode, report, err


@pytest.fixture(scope="module")
def chaos() -> tuple[int, dict[str, Any], str]:
    return run_harness("stress.chaos", CHAOS_ARGS)


@pytest.fixture(scope="module")
def storm() -> tuple[int, dict[str, Any], str]:
    return run_harness("stress.connect_storm", STORM_ARGS)


def summary(report: dict[str, Any]) -> str:
    skip = {"plan", "faults", "faults_skipped"}
    return json.dumps({k: v for k, v in report.items() if k not in skip}, indent=1,
                      default=str)[:6000]


def test_the_same_seed_gives_the_same_injection_plan_and_another_seed_another():
    assert make_plan(1, 12, 3, 2) == make_plan(1, 12, 3, 2)
    assert make_plan(1, 12, 3, 2) != make_plan(2, 12, 3, 2)
    plan = make_plan(1, 12, 3, 2)
    assert plan and all(0 < f.at < 12 for f in plan)
    assert {f.role for f in plan} <= {"gateway", "master", "worker", "sessions", "logger",
                                      "admin", "root", "main", "restart"}


def test_a_long_plan_hits_every_control_process_and_spaces_out_daemon_restarts():
    plan = make_plan(3, 400, 3, 2)
    assert {f.role for f in plan} == {"gateway", "master", "worker", "sessions", "logger",
                                      "admin", "root", "main", "restart"}
    restarts = [f.at for f in plan if f.role in ("logger", "admin", "root", "main", "restart")
                and f.action == "kill"]
    assert all(b - a >= 5.0 for a, b in zip(restarts, restarts[1:], strict=False))


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_chaos_run_injects_faults_and_every_answer_is_exact_or_a_clean_error(chaos):
    code, report, _ = chaos
    assert code == 0, summary(report)
    assert report["ok"], summary(report)
    assert report["wrong"] == 0, summary(report)
    assert report["unexpected"] == 0, summary(report)
    assert report["faults_injected"] >= 3, summary(report)
    assert report["exact"] >= 3, summary(report)
    assert report["final_check"]["ok"], summary(report)
    assert not report["stuck_clients"], summary(report)
    assert report["sessions_lost"] == 0, summary(report)
    assert report["daemon_restarts"] >= 1 and not report["daemon_restarts_failed"], \
        summary(report)  # seed 1 kills the daemon's main process: its sessions are adopted


def test_chaos_run_leaves_no_process_and_no_socket_file_behind(chaos):
    _, report, _ = chaos
    assert report["processes_leaked"] == 0, summary(report)
    assert report["socket_files_left"] == [], summary(report)


def test_chaos_report_prints_the_plan_it_was_given(chaos):
    _, report, _ = chaos
    expected = [f.describe() for f in make_plan(1, 12.0, 3, 2)]
    assert report["plan"] == expected


def test_a_soak_is_asked_for_faults_and_gets_a_plan_longer_than_it_needs_and_a_bound():
    from stress.chaos import parse_args, soak_horizon

    args = parse_args(["--faults", "1000"])
    assert args.duration == soak_horizon(1000)
    assert len(make_plan(1, args.duration, 3, 2)) > 2 * 1000  # skips never starve it
    assert 1000 * 1.5 < args.max_wall < 3 * 3600


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_a_short_soak_runs_until_exactly_the_faults_asked_were_injected_and_says_so():
    code, report, _ = run_harness("stress.chaos", ["--seed", "2", "--faults", "4",
                                                   "--clients", "2", "--workers", "1"])
    assert code == 0, summary(report)
    assert report["faults_asked"] == report["faults_injected"] == 4, summary(report)
    assert sum(report["faults_by_kind"].values()) == 4, summary(report)
    assert report["faults_not_reached"] == [], summary(report)
    assert report["wrong"] == report["sessions_lost"] == report["processes_leaked"] == 0
    assert report["chaos_seconds"] > 0 and report["seconds_per_fault"] > 0


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_connect_storm_is_served_refused_clearly_and_the_daemon_stays_healthy(storm):
    code, report, _ = storm
    assert code == 0, summary(report)
    assert report["not_returned"] == 0, summary(report)
    assert report["health_at_once"]["ok"], summary(report)  # no wait for the closes
    assert report["health"]["ok"], summary(report)
    assert report["connects_ok"] >= 1, summary(report)
    assert report["refused_unclear"] == 0, summary(report)
    answered = report["connects_ok"] + report["refused"] + report["failed"]
    assert answered == report["clients"], summary(report)
    if report["refused"]:
        assert "limit 4" in report["refusal_example"], summary(report)


def test_connect_storm_leaves_no_session_process_or_socket_file_behind(storm):
    _, report, _ = storm
    assert report["sessions_left"] == 0, summary(report)
    assert report["processes_leaked"] == 0, summary(report)
    assert report["socket_files_left"] == [], summary(report)
