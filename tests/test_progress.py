"""The progress line shows entries, rates and each worker's share."""

from __future__ import annotations

import io

from pyproof.client.progress import ProgressBar


def test_progress_line_shows_rate_throughput_and_worker_shares():
    bar = ProgressBar(stream=io.StringIO(), enabled=True, width=10)
    line = bar.render(
        {
            "entries": 500_000,
            "total": 1_000_000,
            "bytes": 20_000_000,
            "elapsed": 2.0,
            "workers": {"worker-0": 300_000, "worker-1": 200_000},
        }
    )
    assert line == ("[#####-----]  50.0% 500,000/1,000,000 ev 250.00 kev/s 10.0 MB/s ETA 2s "
                    "w0:60% w1:40%")


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream)
    bar.update({"entries": 1, "total": 2, "elapsed": 1.0})
    bar.close()
    assert stream.getvalue() == ""
