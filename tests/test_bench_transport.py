"""bench.transport runs end to end (tiny counts): both processes, every mode, the real master."""

from __future__ import annotations

import structlog

from pyproof.bench import transport


def test_a_tiny_transport_benchmark_measures_every_row_and_reaps_its_peer():
    plan = transport.Plan(rounds_small=20, rounds_large=2, messages_small=50,
                          messages_large=2, grant_seconds=0.2, workers=(2,),
                          core_grants=500)
    lines: list[str] = []
    try:
        results = transport.run(plan, emit=lines.append)
    finally:
        structlog.reset_defaults()
    assert len(results["latency"]) == len(results["throughput"]) == 2 * len(transport.PAYLOADS)
    for row in results["latency"] + results["throughput"]:
        assert set(transport.MODES) <= set(row)
    assert [row["workers"] for row in results["core"]] == [2, 1000]
    for row in results["core"]:
        assert row["basic"]["grants_per_s"] > 0 and row["adaptive"]["grants_per_s"] > 0
    (grants,) = results["grants"]
    assert grants["grants_per_s"] > 0 and grants["master_cpu_us"] > 0
    assert any("grants" in line for line in lines)
