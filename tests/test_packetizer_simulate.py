"""The simulator: adaptive finishes together, and the CLI reports what the issue asks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pyproof.packetizer.simulate import Scenario, main, simulate

REFERENCE = Scenario(workers=100, files=500, speed_spread=3.0, stragglers=0.01)
"""The issue's case (100 workers, speeds spread 3x, 1% stragglers 10x slower), fewer files."""


def test_adaptive_finishes_within_five_percent_of_the_ideal_with_stragglers() -> None:
    report = simulate(REFERENCE)
    assert report["makespan_over_ideal"] < 1.05
    assert report["finish_spread"] < 2.0


@pytest.mark.parametrize("prefetch", [False, True])
def test_adaptive_end_game_finishes_within_one_percent_and_50_ms_of_each_other(
    prefetch: bool,
) -> None:
    report = simulate(replace(REFERENCE, files=1000, straggler_slowdown=10, prefetch=prefetch))
    assert report["makespan_over_ideal"] < 1.01
    assert report["finish_spread"] < 0.1


def test_adaptive_beats_basic_and_static_chunks_on_the_reference_case() -> None:
    ratios = {
        kind: simulate(replace(REFERENCE, packetizer=kind))["makespan_over_ideal"]
        for kind in ("adaptive", "basic", "static")
    }
    assert ratios["adaptive"] < ratios["basic"] < ratios["static"]


def test_a_run_with_deaths_joins_hosts_and_a_binding_reader_cap_completes() -> None:
    scenario = Scenario(
        workers=30, files=200, hosts=4, reader_cap=6, remote_slowdown=1.5, deaths=5, joins=5
    )
    report = simulate(scenario)
    assert report["requeued_packets"] > 0
    assert report["makespan"] > 0


def test_locality_with_slower_remote_reads_stays_near_the_ideal() -> None:
    report = simulate(Scenario(workers=30, files=200, hosts=4, remote_slowdown=1.5))
    assert report["makespan_over_ideal"] < 1.08  # the ideal ignores remote reads


def test_datasets_in_turn_finish_as_near_the_ideal_as_one_dataset() -> None:
    one = simulate(replace(REFERENCE, deaths=3))["makespan_over_ideal"]
    four = simulate(replace(REFERENCE, deaths=3, parts=4))["makespan_over_ideal"]
    assert four < 1.01 * one


def test_datasets_in_turn_with_a_binding_reader_cap_complete() -> None:
    report = simulate(Scenario(workers=20, files=80, hosts=2, reader_cap=4, parts=3))
    assert report["makespan"] > 0


def test_static_chunks_survive_deaths_too() -> None:
    report = simulate(Scenario(workers=10, files=50, deaths=3, packetizer="static"))
    assert report["makespan"] > 0


def test_the_cli_prints_a_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workers", "5", "--files", "20", "--packetizer", "basic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("makespan", "ideal", "makespan_over_ideal", "finish_spread"):
        assert isinstance(report[key], float)
    assert set(report["decision_cpu_us"]) == {"mean", "p99", "max", "decisions", "per_cpu_second"}


def test_the_cli_prints_a_table_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workers", "5", "--files", "20"]) == 0
    assert "makespan / ideal" in capsys.readouterr().out


def test_parts_other_than_one_are_refused_for_static_chunks() -> None:
    with pytest.raises(ValueError, match=r"^parts must be >= 1 \(1 for static\), got 2$"):
        simulate(Scenario(packetizer="static", parts=2))


def test_an_unknown_packetizer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^unknown packetizer 'magic'; valid: adaptive, basic"):
        simulate(Scenario(packetizer="magic"))


def test_short_packets_in_batches_take_fewer_requests_and_still_finish_together() -> None:
    """1 ms packets: a batch per request cuts requests ~4x; the end-game goes one packet
    at a time, so the makespan and the finish spread (under 50 ms) do not change."""
    short = Scenario(workers=32, files=200, entries=300_000, speed=1e6, stragglers=0.05,
                     packetizer="basic", packet_entries=1000, prefetch=True,
                     overhead=5e-5, deaths=2)
    one, batched = simulate(short), simulate(replace(short, batches=True))
    assert one["packets_per_request"] < 1.05 < 3 < batched["packets_per_request"]
    assert batched["finish_spread"] < 0.05
    assert batched["makespan_over_ideal"] < one["makespan_over_ideal"] * 1.01
