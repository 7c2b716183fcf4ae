"""Restart intensity: OTP's `add_restart/3`, a tiny pure function with the time passed in.

Drop the restarts older than ``now - period`` (a restart exactly ``period``
ago still counts), push ``now``, and escalate when more than `intensity`
restarts remain. With intensity 1 and period 5, a second restart within 5 s
escalates; intensity 0 escalates on the first restart.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Decision", "RestartWindow", "add_restart"]


class Decision(StrEnum):
    OK = "ok"
    """Go ahead and restart."""
    ESCALATE = "escalate"
    """Too many restarts: stop every child and exit, so the parent decides."""


def add_restart(
    restarts: tuple[float, ...], now: float, *, intensity: int, period: float
) -> tuple[tuple[float, ...], Decision]:
    """The new window (newest first) and the decision for a restart at `now`."""
    threshold = now - period
    kept = [now]
    for then in restarts:  # newest first, as OTP's takewhile
        if then < threshold:
            break
        kept.append(then)
    window = tuple(kept)
    return window, Decision.OK if len(window) <= intensity else Decision.ESCALATE


class RestartWindow:
    """The restart times of one supervisor within its period."""

    __slots__ = ("intensity", "period", "_restarts")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._restarts: tuple[float, ...] = ()

    def add(self, now: float) -> Decision:
        """Record a restart at `now`; ESCALATE when it is one too many."""
        self._restarts, decision = add_restart(
            self._restarts, now, intensity=self.intensity, period=self.period
        )
        return decision

    @property
    def restarts(self) -> tuple[float, ...]:
        """The recorded restart times still in the window as of the last `add`, newest first."""
        return self._restarts

    def __repr__(self) -> str:
        return (
            f"RestartWindow(intensity={self.intensity}, period={self.period}, "
            f"restarts={self._restarts})"
        )
