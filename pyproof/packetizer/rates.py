"""Per-worker processing rates, measured from the packets each worker reports.

A window of the last few packets (PROOF's TPacketizerUnit uses 5) follows a
worker whose speed changes (a busy host, a slow disk) without being thrown by
one odd packet. Sums are kept incrementally: a decision for 1,000 workers
costs O(1), not O(workers).
"""

from __future__ import annotations

from collections import deque


class RateTable:
    """Entries per second of each measured worker over its last `window` packets."""

    def __init__(self, window: int = 5) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._window = window
        self._samples: dict[str, deque[tuple[int, float]]] = {}
        self._sums: dict[str, tuple[int, float]] = {}
        self._rates: dict[str, float] = {}
        self._total = 0.0

    def record(self, worker: str, entries: int, seconds: float) -> None:
        """`worker` processed `entries` in `seconds` (a zero time counts as a microsecond)."""
        seconds = max(seconds, 1e-6)
        samples = self._samples.setdefault(worker, deque())
        n, t = self._sums.get(worker, (0, 0.0))
        samples.append((entries, seconds))
        n, t = n + entries, t + seconds
        if len(samples) > self._window:
            old_n, old_t = samples.popleft()
            n, t = n - old_n, t - old_t
        self._sums[worker] = (n, t)
        self._set(worker, n / t if t > 0 else 0.0)

    def rate(self, worker: str) -> float | None:
        """The measured rate, or None before the worker's first report."""
        return self._rates.get(worker)

    def mean(self) -> float | None:
        """Mean rate over measured workers, or None when nobody is measured yet."""
        return self._total / len(self._rates) if self._rates else None

    def rate_or_mean(self, worker: str) -> float:
        """The measured rate, else the mean, else 1.0 (only ratios matter before any report)."""
        rate = self._rates.get(worker)
        if rate is None:
            rate = self.mean()
        return 1.0 if rate is None else rate

    def cluster(self, active: int) -> float:
        """Sum of the rates of `active` workers, unmeasured ones counted at the mean."""
        mean = self.mean()
        if mean is None:
            return 0.0
        return self._total + max(0, active - len(self._rates)) * mean

    def forget(self, worker: str) -> None:
        """Drop a lost worker (a worker coming back under its name is measured afresh)."""
        self._samples.pop(worker, None)
        self._sums.pop(worker, None)
        self._set(worker, None)

    def _set(self, worker: str, rate: float | None) -> None:
        self._total -= self._rates.pop(worker, 0.0)
        if rate is not None:
            self._rates[worker] = rate
            self._total += rate
        if not self._rates:
            self._total = 0.0  # no float drift survives an empty table
