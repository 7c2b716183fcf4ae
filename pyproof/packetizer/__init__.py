"""Pure packetizers: cut a query's work into packets and hand them to workers.

Layers, bottom up:

- `base`: the contract (`WorkRange`, `Packet`, `Packetizer`, statistics).
- `ledger`: exactly-once bookkeeping every packetizer shares.
- `rates`: per-worker processing rates.
- `backlog`: in-flight work per worker (busy-until) and for the cluster.
- `common`: the protocol methods every packetizer shares.
- `basic`, `unit`, `file`: PROOF's TPacketizer, TPacketizerUnit, TPacketizerFile.
- `adaptive`: TPacketizerAdaptive done better (the default for data).
- `multi`: TPacketizerMulti, several datasets in turn, one packetizer each.
- `static`: equal chunks fixed in advance, a baseline for the simulator only.
- `simulate`: `python -m pyproof.packetizer.simulate`, a virtual-clock cluster.
- `testing`: a model checker and hypothesis state machine for tests.

`make_packetizer` builds one by kind name, with per-query parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pyproof.packetizer.adaptive import AdaptivePacketizer
from pyproof.packetizer.base import (
    CYCLES,
    Packet,
    Packetizer,
    PacketizerStatistics,
    PoisonedRange,
    SkippedRange,
    WorkRange,
)
from pyproof.packetizer.basic import BasicPacketizer
from pyproof.packetizer.file import FilePacketizer
from pyproof.packetizer.multi import MultiPacketizer
from pyproof.packetizer.unit import UnitPacketizer

__all__ = [
    "CYCLES",
    "DEFAULT_DATA_KIND",
    "KINDS",
    "AdaptivePacketizer",
    "BasicPacketizer",
    "FilePacketizer",
    "MultiPacketizer",
    "Packet",
    "Packetizer",
    "PacketizerStatistics",
    "PoisonedRange",
    "SkippedRange",
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


def _multi(
    work: Sequence[WorkRange], *, workers: int, parts: Sequence[Sequence[int]], **kwargs: Any
) -> MultiPacketizer:
    """`work` grouped into parts given as element indices, as a query spec carries them."""
    owner: dict[int, int] = {}
    for k, elements in enumerate(parts):
        for element in elements:
            if owner.setdefault(element, k) != k:
                raise ValueError(f"element {element} is in parts {owner[element]} and {k}")
    grouped: list[list[WorkRange]] = [[] for _ in parts]
    for w in work:
        if w.element not in owner:
            raise ValueError(f"element {w.element} is in no part")
        grouped[owner[w.element]].append(w)
    return MultiPacketizer(grouped, workers=workers, **kwargs)


KINDS: dict[str, tuple[type, Callable[..., Packetizer]]] = {
    "adaptive": (AdaptivePacketizer, AdaptivePacketizer),
    "basic": (BasicPacketizer, BasicPacketizer),
    "file": (FilePacketizer, FilePacketizer),
    "unit": (UnitPacketizer, _unit),
    "multi": (MultiPacketizer, _multi),
}
"""Packetizer kinds by name: (class, builder). The keyword-only parameters of
either (but `workers`) may be passed to `make_packetizer`."""

DEFAULT_DATA_KIND = "adaptive"
"""The packetizer for data queries when the user names none (PROOF's default varied)."""


def make_packetizer(
    kind: str, work: Sequence[WorkRange], *, workers: int, **params: Any
) -> Packetizer:
    """A packetizer of `kind` over `work` for `workers` workers.

    "multi" takes `parts=[[element, ...], ...]` (each element of `work` in
    exactly one part, served in list order) and `part_kind`, `params`,
    `part_params`, `overlap` as MultiPacketizer does.

    Raises ValueError for an unknown kind (listing the valid ones) and
    TypeError for a parameter the kind does not take (naming it and listing
    the ones it does).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown packetizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    cls, build = KINDS[kind]
    allowed = [
        name
        for f in dict.fromkeys((build, cls))
        for name, p in inspect.signature(f).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "workers"
    ]
    for name in params:
        if name not in allowed:
            raise TypeError(
                f"packetizer {kind!r} has no parameter {name!r}; valid: {', '.join(allowed)}"
            )
    return build(work, workers=workers, **params)
