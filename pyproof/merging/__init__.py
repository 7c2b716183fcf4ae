"""Merging of selector outputs (see merge.py)."""

from pyproof.merging.merge import MergeError, merge, merge_outputs

__all__ = ["MergeError", "merge", "merge_outputs"]
