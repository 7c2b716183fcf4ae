"""A one-line live progress display: entries, events/s, MB/s and each worker's share."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressBar:
    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self._last_line = 0
        self._last_draw = 0.0

    def update(self, progress: dict[str, Any]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self._draw(self.render(progress))

    def render(self, progress: dict[str, Any]) -> str:
        entries, total = int(progress.get("entries", 0)), int(progress.get("total", 0))
        elapsed = max(float(progress.get("elapsed", 0.0)), 1e-9)
        frac = entries / total if total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        rate = entries / elapsed
        mbs = float(progress.get("bytes", 0)) / elapsed / 1e6
        workers = progress.get("workers") or {}
        done = sum(workers.values()) or 1
        shares = " ".join(f"{w.replace('worker-', 'w')}:{100 * n / done:.0f}%"
                          for w, n in sorted(workers.items()))
        return (f"[{bar}] {100 * frac:5.1f}% {entries:,}/{total:,} ev "
                f"{_si(rate)}ev/s {mbs:.1f} MB/s {shares}")

    def _draw(self, line: str) -> None:
        pad = max(0, self._last_line - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_line = len(line)

    def close(self, final: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        if final is not None:
            self._draw(self.render(final))
        self.stream.write("\n")
        self.stream.flush()


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} "
