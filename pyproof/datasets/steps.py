"""Read steps: a worker reads and processes a large packet in pieces of a few megabytes.

The adaptive packetizer hands out large packets while work is plentiful (often
a whole file: few requests, no basket read twice). Reading such a packet in
one `tree.arrays` call makes arrays of tens of megabytes, and the selector's
numpy temporaries as large: glibc serves them with fresh pages (mmap, or a
heap it trims after each free), so every packet pays page faults to map and
zero them again. Measured on the bench data (4 jagged muon branches, 54 bytes
per entry, on a worker thread): 760k-entry reads cost 0.27-0.29 us/entry to
read against 0.23-0.25 in 100k-200k-entry steps, and the CPU-bound selector
spent 0.15-0.3 s more system time per 1.6M entries (25k-85k page faults
against none): together 4-15% of a worker's CPU, what made a pyproof worker
slower than a `multiprocessing.Pool` process reading 100k-entry chunks.

So a packet is read in steps of about `READ_STEP_BYTES` of the branches read
(uncompressed, from the TBranch metadata), each step ending where a basket
of every branch begins when one is near (no basket decompressed twice); the
selector's `process` runs once per step. The packet stays the unit of
scheduling, reporting and exactly-once merging. With `keep_freed_memory`
(below) steps of this size fault no fresh pages either: the step bounds a
worker's memory (a whole-file packet of a wide selection would be gigabytes)
and its number of calls (each costs milliseconds, see READ_STEP_BYTES).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyproof.packetizer.common import on_boundary, with_rest

READ_STEP_BYTES = 16 << 20
"""Uncompressed bytes of the branches read per step: about 300k entries of the bench data.
Measured CPU of the 8M CPU-bound bench against a Pool's (same run): 2 MB steps 1.05-1.06
(each `tree.arrays` and `process` call costs 3-6 ms whatever its size), 4 MB 0.98-1.00,
8 MB 0.97-1.01, 16 MB 0.98-0.99 (fewest calls; with `keep_freed_memory`, no faults)."""


def read_steps(start: int, stop: int, step: int | None,
               boundaries: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Consecutive half-open ranges that cover `[start, stop)` exactly once, in order.

    Each is about `step` entries, its end moved to a basket boundary (sorted
    entry numbers in `boundaries`) within half a step, and the last takes what
    is left when that is under 1.5 steps; `step` None: one range.
    """
    if step is None or stop - start <= step:
        return [(start, stop)] if stop > start else []
    steps = []
    a = start
    while a < stop:
        size = with_rest(stop - a, max(1, on_boundary(boundaries, a, stop, step)))
        steps.append((a, a + size))
        a += size
    return steps


def step_plan(tree: Any, branches: Sequence[str] | None,
              step_bytes: int = READ_STEP_BYTES) -> tuple[int | None, list[int]]:
    """(entries per step, the entries where a basket of every branch begins) for reading
    `branches` of the uproot TTree `tree`; (None, []) when the sizes are unknown (no
    branch list, an expression, no entries): the packet is then read in one step."""
    entries = int(tree.num_entries)
    if branches is None or entries <= 0:
        return None, []
    try:
        leaves = []
        for name in branches:
            branch = tree[name]
            leaves += [b for b in branch.itervalues(recursive=True) if not b.branches] \
                if branch.branches else [branch]
        total = sum(int(b.uncompressed_bytes) for b in leaves)
        common: set[int] | None = None
        for b in leaves:
            if b.num_baskets:
                own = {int(x) for x in b.entry_offsets}
                common = own if common is None else common & own
    except Exception:  # noqa: BLE001 (an alias or expression: no metadata to size by)
        return None, []
    if total <= 0:
        return None, []
    return max(1, int(step_bytes * entries / total)), sorted(common or ())


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 128 << 20
"""Freed memory a worker keeps for its next steps instead of giving it back to the system."""
MMAP_THRESHOLD = 32 << 20  # glibc's largest: smaller blocks come from the heap, reused

_kept = False


def keep_freed_memory(keep: int = KEEP_FREED_BYTES, mmap_threshold: int = MMAP_THRESHOLD
                      ) -> bool:
    """Make glibc's malloc keep freed memory for reuse in this process (once; True if set).

    By default glibc gives freed memory back to the system as soon as the top
    of a heap holds twice its mmap threshold (which follows the largest block
    freed so far, a few MB here), so each step's arrays and the selector's
    temporaries land on fresh pages that the kernel maps and zeroes again:
    measured, a CPU-bound worker over 4M entries took 270k-310k page faults
    and 0.6 s of system time, and a Pool process 75k and 0.2 s. With the top of
    a heap kept up to `keep` bytes and blocks under `mmap_threshold` taken from
    the heap: 8k-10k faults and 0.06 s. Only a worker calls it (its process
    runs queries, nothing else); elsewhere than glibc it does nothing.
    """
    global _kept
    if _kept:
        return True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(mallopt(M_TRIM_THRESHOLD, keep))
    return _kept
