"""Large outputs (issue 13): an output over the query's `max_output_bytes` fails the query
at once, naming output, worker, size and cap; a large one under it merges while the
watchdog stays quiet (the master is not restarted) and the result is exact."""

from __future__ import annotations

import numpy as np
import pytest

import pyproof
from pyproof.merging import OutputTooLarge, check_output_sizes, output_nbytes

CYCLES = dict(cycles=2, packetizer="basic", packetizer_params={"packet_entries": 1},
              progress=False)


def master_pid(session) -> int:
    return int(session.status()["pid"])  # the master answers status


def test_an_output_just_over_a_lowered_cap_fails_its_query_and_the_session_goes_on():
    with pyproof.connect("lite://?workers=2") as session:
        cap = 2**20  # 1 MiB; the output is 1 MiB + 8 bytes
        with pytest.raises(pyproof.QueryError,
                           match=r"^OutputTooLarge: output 'big' of worker-\d is 1\.0 MiB "
                                 r"\(1048584 bytes\), over the query's cap "
                                 r"max_output_bytes=1048576 \(1\.0 MiB\); raise the cap .*"
                                 r"ctx\.output_file\(name\)"):
            session.process("tests.sample_selectors:SizedOutput",
                            inputs={"mb": (cap + 8) / 2**20}, max_output_bytes=cap, **CYCLES)
        result = session.process("tests.sample_selectors:SizedOutput", inputs={"mb": 1},
                                 max_output_bytes=cap, **CYCLES)
        assert result.outputs["big"][0] == 2.0 and result.outputs["big"].nbytes == cap


def test_outputs_concatenated_on_the_master_are_capped_too():
    merged = {"rows": np.zeros(100)}
    check_output_sizes(merged, 800, worker="worker-0", merged=True)
    merged["rows"] = np.concatenate([merged["rows"], np.zeros(1)])
    with pytest.raises(OutputTooLarge, match=r"^output 'rows' as merged on the master "
                                             r"\(last from worker-1\) is 808 B"):
        check_output_sizes(merged, 800, worker="worker-1", merged=True)


def test_output_sizes_count_the_data_of_arrays_histograms_and_containers():
    import hist

    h = hist.Hist.new.Reg(10, 0, 1).Double()
    assert output_nbytes(np.zeros(10)) == 80
    assert output_nbytes(h) == 12 * 8  # with flow bins
    assert output_nbytes({"a": np.zeros(2), "b": [1, 2.0]}) == 2 + 16 + 16
    check_output_sizes({"n": 3}, None, worker="w")  # None: no cap


@pytest.mark.slow
def test_a_large_but_allowed_output_merges_while_the_watchdog_stays_quiet():
    # 256 MiB from each of 2 workers: decoding and merging hold the GIL for long stretches
    # (about 1.5 GB of memory in all)
    with pyproof.connect("lite://?workers=2") as session:
        before = master_pid(session)
        result = session.process("tests.sample_selectors:SizedOutput", inputs={"mb": 256},
                                 **CYCLES)
        big = result.outputs["big"]
        assert big.nbytes == 256 * 2**20 and big[0] == 2.0 and not big[1:].any()
        del result, big
        assert master_pid(session) == before
