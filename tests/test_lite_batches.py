"""Batched grants in a lite cluster (real master, real workers, real nng): a query of many
short packets is granted in batches and is exact; a worker killed while it holds a batch
has every range it held requeued once, and the result is still exact."""

from __future__ import annotations

import os
import signal

import pyproof
from tests.daemon_helpers import Background, wait_processed
from tests.test_lite_faults import worker_pids

CYCLES = 20_000
OPTIONS = dict(cycles=CYCLES, packetizer="basic", packetizer_params={"packet_entries": 10},
               progress=False)


def test_a_query_of_many_short_packets_is_granted_in_batches_and_is_exact():
    with pyproof.connect("lite://?workers=2") as session:
        # 10 cycles of 0.1 ms: 1 ms packets, a second of work
        result = session.process("tests.sample_selectors:SlowCycles",
                                 inputs={"per_entry": 1e-4}, **OPTIONS)
        assert result.outputs == {"sum": CYCLES * (CYCLES - 1) // 2, "count": CYCLES}
        assert result.stats.entries == CYCLES and result.stats.packets >= CYCLES // 10
        assert result.stats.packet_batches > 0
        assert result.lineage["duplicates_dropped"] == 0 and not result.lineage["requeued"]


def test_a_worker_killed_holding_a_batch_has_its_ranges_requeued_once_and_the_result_exact():
    with pyproof.connect("lite://?workers=2") as session:
        pids = worker_pids(session)
        running = Background(session.process, "tests.sample_selectors:SlowCycles",
                             inputs={"per_entry": 1e-4}, **{**OPTIONS, "cycles": 2 * CYCLES})
        wait_processed(session, 3000, timeout=20)  # batches going out, outputs not yet sent
        os.kill(pids["worker-1"], signal.SIGKILL)
        result = running.result(60)
        total = 2 * CYCLES
        assert result.outputs == {"sum": total * (total - 1) // 2, "count": total}
        assert result.stats.entries == total and result.stats.packet_batches > 0
        requeued = result.lineage["requeued"]
        assert requeued and all(r["worker"].startswith("worker-1#") for r in requeued)
        entries = [e for r in requeued for e in range(r["entry_start"], r["entry_stop"])]
        assert len(entries) == len(set(entries)), "a range was requeued twice"
        assert len(entries) > 10  # more than one packet: what it processed and its queue
