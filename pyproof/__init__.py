"""pyproof: PROOF, the Parallel ROOT Facility, re-made in Python.

Layers (bottom up):
- packetizer/, supervision/ core: pure state machines (no sockets, no clock);
- transport/: CBOR codec and frames carried on nng sockets;
- merging/: how outputs add up;
- actors/: Thespian actors (thin shells) and their nng data planes;
- client/: `connect`, `Session`, `Result`, progress display;
- cli/: `proofctl`.
"""

from pyproof.client.result import Result, Stats, WorkerStats
from pyproof.client.session import Session, connect
from pyproof.errors import ConnectError, InputError, ProofError, QueryError
from pyproof.selector import Context, Selector, SelectorError

__all__ = [
    "ConnectError",
    "Context",
    "InputError",
    "ProofError",
    "QueryError",
    "Result",
    "Selector",
    "SelectorError",
    "Session",
    "Stats",
    "WorkerStats",
    "connect",
]
