"""Every error a user can meet is a pyproof.ProofError: one `except` catches them all."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import pyproof
from pyproof.datasets.errors import DatasetNotFoundError
from pyproof.merging import MergeError
from pyproof.transport.tls import TLSError

# Raised and handled inside the daemon's own processes (or turned into an error
# frame, a RemoteError or a ProofError before they cross to the client): a user
# never holds one. Each names where that happens.
INTERNAL = {
    "pyproof.actors.protocol.ProtocolViolation": "master: a worker's malformed report",
    "pyproof.actors.lookup.LookupError_": "master: becomes the query's RemoteError",
    "pyproof.actors.lookup.MissingBranchError": "master or worker: becomes the query's RemoteError",
    "pyproof.actors.worker_loop.OutputsRefused": "worker: becomes the query's RemoteError",
    "pyproof.actors.gateway.RequestError": "gateway: answered as an error frame",
    "pyproof.transport.sealing.SealError": "data plane: the frame is dropped and logged",
    "pyproof.actors.master_direct.BadDirectRequest":
        "master: answered as a refusal on the direct route (the client raises DirectRefused)",
}


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined (not just imported) in a pyproof module."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(pyproof.__path__, "pyproof."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_public_exception_class_in_pyproof_is_a_proof_error():
    classes = exception_classes()
    assert "pyproof.selector.SelectorError" in classes  # the walk sees the whole package
    assert set(INTERNAL) <= set(classes), "INTERNAL names a class that no longer exists"
    strays = sorted(name for name, cls in classes.items()
                    if not issubclass(cls, pyproof.ProofError)
                    and name not in INTERNAL
                    and not name.rpartition(".")[2].startswith("_"))
    assert strays == []


@pytest.mark.parametrize(("error", "also"), [
    (pyproof.SelectorError("x"), Exception),
    (MergeError("x"), TypeError),           # merge() callers catch TypeError
    (DatasetNotFoundError("x"), LookupError),
    (TLSError("x"), ValueError),
    (pyproof.InputError("x"), ValueError),
])
def test_errors_keep_the_builtin_bases_callers_catch(error, also):
    assert isinstance(error, pyproof.ProofError)
    assert isinstance(error, also)
