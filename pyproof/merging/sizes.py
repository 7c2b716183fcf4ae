"""How big an output is, and the cap on it (`max_output_bytes`): pure, no encoding.

A worker checks its outputs against the query's cap before it sends them,
and the master checks every merged output after each merge (concatenated
outputs grow): an output over the cap fails the query at once, naming the
output, the worker, the size and the cap, instead of being shipped, decoded
and merged. So the master's memory is bounded by the cap times the number of
outputs (times the few copies a merge makes).

Sizes are the bytes of the data: numpy and awkward arrays (`nbytes`),
histograms (their bins, with flow), strings and bytes, and containers summed
over their items; numbers count 8 bytes, other objects what `sys.getsizeof`
says (shallow: small objects only matter in large containers).
"""

from __future__ import annotations

import sys
from typing import Any

from pyproof.errors import ProofError
from pyproof.query.spec import DEFAULT_MAX_OUTPUT_BYTES

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "OutputTooLarge", "check_output_sizes", "human",
           "output_nbytes"]


class OutputTooLarge(ProofError):
    """An output is over its query's `max_output_bytes`: raise the cap (process(...,
    max_output_bytes=...), `proofctl run --max-output-bytes`), or write the data to a
    file at `ctx.output_file(name)` and return its path."""


def output_nbytes(value: Any) -> int:
    """The bytes of an output's data (see the module docstring)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and not isinstance(nbytes, bool):
        return nbytes  # numpy, awkward
    view = getattr(value, "view", None)
    if callable(view) and hasattr(value, "axes"):  # hist.Hist, boost_histogram.Histogram
        try:
            return int(view(flow=True).nbytes)
        except Exception:  # not a histogram after all
            pass
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool | int | float | complex) or value is None:
        return 8
    if isinstance(value, dict):
        return sum(output_nbytes(k) + output_nbytes(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(output_nbytes(x) for x in value)
    return sys.getsizeof(value)


def human(nbytes: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as the cap is usually given)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_output_sizes(outputs: dict[str, Any], cap: int | None, *, worker: str,
                       names: Any = None, merged: bool = False) -> None:
    """Raise OutputTooLarge for the first output (of `names`, default all) over `cap`."""
    if cap is None:
        return
    for name in (outputs if names is None else names):
        if name not in outputs:
            continue
        size = output_nbytes(outputs[name])
        if size > cap:
            what = f"output {name!r} as merged on the master (last from {worker})" \
                if merged else f"output {name!r} of {worker}"
            raise OutputTooLarge(
                f"{what} is {human(size)} ({size} bytes), over the query's cap "
                f"max_output_bytes={cap} ({human(cap)}); raise the cap "
                "(process(..., max_output_bytes=...), proofctl run --max-output-bytes), "
                "or write the data to a file at ctx.output_file(name) and return its path")
