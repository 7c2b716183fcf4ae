"""Merging of selector outputs (see merge.py) and the cap on their sizes (sizes.py)."""

from pyproof.merging.merge import MergeError, merge, merge_outputs
from pyproof.merging.sizes import (
    DEFAULT_MAX_OUTPUT_BYTES,
    OutputTooLarge,
    check_output_sizes,
    output_nbytes,
)

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "MergeError", "OutputTooLarge", "check_output_sizes",
           "merge", "merge_outputs", "output_nbytes"]
