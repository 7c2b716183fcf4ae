"""The ZLIB inflater a worker reads baskets with: ISA-L's (uproot's own option) when installed.

Most ROOT files are ZLIB-compressed (uproot and ROOT write ZLIB by default),
and inflating their baskets is most of what reading costs a worker: on the
bench data (4 muon branches, 54 bytes per entry, ZLIB level 1), `zlib.decompress`
took 73% of `tree.arrays`' CPU time, about 180 ns per entry, a tenth of a
CPU-bound worker's whole cost per entry. ISA-L inflates the same streams to
the same bytes about 1.5x faster (measured here: 305 MB/s for zlib, 466 MB/s
for `isal.isal_zlib`, over the 430 baskets of one bench file).

uproot can use it (`library = "isal"` of its ZLIB decompressor), but not by
default, and for reading the switch is on `uproot.compression._DecompressZLIB`
(the class of the decompressor it reads with), not on `uproot.ZLIB` (what it
writes with), so users rarely find it. A worker sets it once per process
(`use_fast_inflate`), as it tunes malloc (datasets/steps.py): its process
runs queries and nothing else, and the bytes read are the same either way.
Without isal installed, or with an uproot that lacks the switch, nothing
changes. (libdeflate, faster still, is one of uproot's options too, but
uproot 5.7 calls it with a keyword the `deflate` package no longer takes.)
"""

from __future__ import annotations

import importlib.util
import zlib

FAST = "isal"
"""uproot's name of the ZLIB library used when it is installed (`isal.isal_zlib`)."""

_chosen: str | None = None


def use_fast_inflate() -> str:
    """Make uproot inflate ZLIB baskets with ISA-L in this process if it can; the library
    it uses from now on ("isal" or "zlib"). Checked once per process: the first call
    inflates a small stream both ways and keeps zlib unless the bytes agree."""
    global _chosen
    if _chosen is not None:
        return _chosen
    import uproot.compression

    decompressor = getattr(uproot.compression, "_DecompressZLIB", None)
    current = getattr(decompressor, "library", None)
    if decompressor is None or current is None:  # an uproot without the switch
        _chosen = "zlib"
        return _chosen
    if current == "zlib" and importlib.util.find_spec("isal") is not None and _agrees():
        decompressor.library = FAST
    _chosen = decompressor.library
    return _chosen


def _agrees() -> bool:
    """ISA-L inflates a zlib stream to the bytes zlib does (a broken build keeps zlib)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return False
    data = bytes(range(256)) * 64 + b"pyproof" * 100
    stream = zlib.compress(data, 1)
    try:
        return isal_zlib.decompress(stream, bufsize=len(data)) == data
    except Exception:  # noqa: BLE001 (any failure: keep zlib)
        return False
