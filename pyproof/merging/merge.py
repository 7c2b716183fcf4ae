"""Merge selector outputs by type, the way physicists expect them to add up.

hist.Hist / boost-histogram add; numpy arrays add elementwise (or concatenate
for names the selector lists in `concatenate`); awkward arrays concatenate
(`ak.concatenate`, as coffea accumulates them); numbers add; Counters add;
sets take the union; lists concatenate; dicts merge key by key; anything else
must offer `merge(other)` or `__add__`.
"""

from __future__ import annotations

import collections
from typing import Any

from pyproof.errors import ProofError
from pyproof.lazy import loaded

MERGEABLE = ("outputs that merge: hist.Hist and boost-histogram histograms, numpy arrays, "
             "awkward arrays (concatenated), numbers (summed), collections.Counter, sets "
             "(union), lists, dicts of these, or objects with merge(other) or __add__")


class MergeError(ProofError, TypeError):
    """Two outputs cannot be merged; the message names the output and the types."""


def merge(a: Any, b: Any, *, name: str = "output", concatenate: bool = False) -> Any:
    """Return a merged with b. `a` may be modified in place (it is the accumulator)."""
    np = loaded("numpy")  # no array exists where numpy was never imported
    if np is not None and isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if concatenate:
            return np.concatenate([a, b])
        if a.shape != b.shape:
            raise MergeError(
                f"{name}: cannot add arrays of shapes {a.shape} and {b.shape} "
                "(list the output in Selector.concatenate to concatenate instead)"
            )
        return a + b
    awkward = loaded("awkward")
    if awkward is not None and isinstance(a, awkward.Array) and isinstance(b, awkward.Array):
        return awkward.concatenate([a, b])
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        return a | b
    if isinstance(a, collections.Counter) and isinstance(b, collections.Counter):
        a.update(b)
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return merge_outputs(a, b, prefix=f"{name}.")
    if isinstance(a, list) and isinstance(b, list):
        a.extend(b)
        return a
    if isinstance(a, bool) or isinstance(b, bool):
        raise MergeError(f"{name}: booleans do not merge; use an int count instead")
    if type(a) is not type(b) and not (
        isinstance(a, int | float) and isinstance(b, int | float)
    ):
        raise MergeError(
            f"{name}: cannot merge {type(a).__name__} with {type(b).__name__} "
            f"(give the output one type on every worker; {MERGEABLE})"
        )
    merge_method = getattr(a, "merge", None)
    if callable(merge_method):
        result = merge_method(b)
        return a if result is None else result
    try:
        return a + b
    except TypeError as exc:
        raise MergeError(
            f"{name}: objects of type {type(a).__name__} have neither merge() nor __add__ "
            f"({MERGEABLE})"
        ) from exc


def merge_outputs(
    acc: dict[str, Any], new: dict[str, Any], *, concatenate: tuple[str, ...] = (),
    prefix: str = "",
) -> dict[str, Any]:
    """Merge the dict `new` into `acc` key by key; keys only in one side are kept."""
    for key, value in new.items():
        if key in acc:
            acc[key] = merge(
                acc[key], value, name=f"{prefix}{key}", concatenate=key in concatenate
            )
        else:
            acc[key] = value
    return acc
