"""pyproof: PROOF, the Parallel ROOT Facility, re-made in Python.

Layers (bottom up):
- packetizer/, supervision/ core: pure state machines (no sockets, no clock);
- transport/: CBOR codec and frames carried on nng sockets;
- merging/: how outputs add up;
- actors/: Thespian actors (thin shells) and their nng data planes;
- client/: `connect`, `Session`, `Result`, progress display;
- cli/: `proofctl`.

The public names are imported on first use (PEP 562): the daemon and the
actors import `pyproof.<module>` without paying for the client's imports
(numpy, pynng, the codec), which keeps a lite session's start-up short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproof.errors import ConnectError, InputError, ProofError, QueryAborted, QueryError
from pyproof.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyproof.client.connect import connect
    from pyproof.client.handle import QueryHandle
    from pyproof.client.result import Result, Stats, WorkerStats, load
    from pyproof.client.session import Session
    from pyproof.selector import Context, Selector, SelectorError

_LAZY = {
    "QueryHandle": "pyproof.client.handle",
    "Result": "pyproof.client.result",
    "Stats": "pyproof.client.result",
    "WorkerStats": "pyproof.client.result",
    "load": "pyproof.client.result",
    "Session": "pyproof.client.session",
    "connect": "pyproof.client.connect",  # light: starts a lite daemon, then imports the rest
    "Context": "pyproof.selector",
    "Selector": "pyproof.selector",
    "SelectorError": "pyproof.selector",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY.get, _LAZY)


__all__ = [
    "ConnectError",
    "Context",
    "InputError",
    "ProofError",
    "QueryAborted",
    "QueryError",
    "QueryHandle",
    "Result",
    "Selector",
    "SelectorError",
    "Session",
    "Stats",
    "WorkerStats",
    "connect",
    "load",
]
