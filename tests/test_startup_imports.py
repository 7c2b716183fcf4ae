"""What a lite session's processes import to start: neither the client nor the data path."""

from __future__ import annotations

import json
import subprocess
import sys

import pyproof

HEAVY = ("pyproof.client.session", "pyproof.client.progress", "uproot", "awkward", "hist")


def test_every_public_name_of_pyproof_resolves() -> None:
    for name in pyproof.__all__:
        assert getattr(pyproof, name) is not None, name
    assert set(pyproof.__all__) <= set(dir(pyproof))


def test_the_daemon_and_the_actors_start_without_the_client_and_the_data_modules() -> None:
    # uproot, awkward and hist load later, on a warm-up thread (actors/warmup.py)
    code = ("import sys, json, pyproof.actors.daemon, pyproof.actors.root, "
            "pyproof.actors.gateway, pyproof.actors.sessions, pyproof.actors.master, "
            f"pyproof.actors.worker; print(json.dumps([m for m in {HEAVY!r} "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) == []
