"""Pure packetizers: cut a query's work into packets and hand them to workers.

Layers, bottom up:

- `base`: the contract (`WorkRange`, `Packet`, `Packetizer`, statistics).
- `ledger`: exactly-once bookkeeping every packetizer shares.
- `rates`: per-worker processing rates.
- `basic`, `unit`: PROOF's TPacketizer and TPacketizerUnit.

`make_packetizer` builds one by kind name, with per-query parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pyproof.packetizer.base import (
    CYCLES,
    Packet,
    Packetizer,
    PacketizerStatistics,
    PoisonedRange,
    WorkRange,
)
from pyproof.packetizer.basic import BasicPacketizer
from pyproof.packetizer.unit import UnitPacketizer

__all__ = [
    "CYCLES",
    "KINDS",
    "BasicPacketizer",
    "Packet",
    "Packetizer",
    "PacketizerStatistics",
    "PoisonedRange",
    "UnitPacketizer",
    "WorkRange",
    "make_packetizer",
]


def _cycles(work: Sequence[WorkRange]) -> int:
    """The N of a cycles query given as work: one range `[0, N)` of element CYCLES."""
    if any(w.element != CYCLES for w in work):
        raise ValueError("the 'unit' packetizer takes cycles only (element == CYCLES)")
    ranges = sorted((w.entry_start, w.entry_stop) for w in work if w.entries)
    stop = 0
    for start, end in ranges:
        if start != stop:
            raise ValueError("the 'unit' packetizer takes cycles [0, N) as one range")
        stop = end
    return stop


def _unit(work: Sequence[WorkRange], **kwargs: Any) -> UnitPacketizer:
    return UnitPacketizer(_cycles(work), **kwargs)


KINDS: dict[str, tuple[type, Callable[..., Packetizer]]] = {
    "basic": (BasicPacketizer, BasicPacketizer),
    "unit": (UnitPacketizer, _unit),
}
"""Packetizer kinds by name: (class, whose keyword parameters are allowed; builder)."""


def make_packetizer(
    kind: str, work: Sequence[WorkRange], *, workers: int, **params: Any
) -> Packetizer:
    """A packetizer of `kind` over `work` for `workers` workers.

    Raises ValueError for an unknown kind (listing the valid ones) and
    TypeError for a parameter the kind does not take (naming it and listing
    the ones it does).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown packetizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    cls, build = KINDS[kind]
    allowed = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "workers"
    ]
    for name in params:
        if name not in allowed:
            raise TypeError(
                f"packetizer {kind!r} has no parameter {name!r}; valid: {', '.join(allowed)}"
            )
    return build(work, workers=workers, **params)
