"""Helpers for tests that run a real proofd: start/stop, and finding actors' pids."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
import uproot

from pyproof.actors.system import spare_port
from pyproof.cli.daemon import start_daemon, stop_daemon
from pyproof.client.control import ControlClient
from pyproof.transport.tls import TLSSettings
from tests.conftest import data_file
from tests.test_transport_tls import make_ca, make_cert


def tls_server_env(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test CA and a server certificate for localhost made in `directory`, and the
    PYPROOF_TLS_* variables set (by `monkeypatch`) so that a Daemon started next serves
    TLS; skips the test where there is no openssl command to make them."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    make_ca(directory, "ca")
    make_cert(directory, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    monkeypatch.setenv("PYPROOF_TLS_CA", str(directory / "ca.crt"))
    monkeypatch.setenv("PYPROOF_TLS_CERT", str(directory / "server.crt"))
    monkeypatch.setenv("PYPROOF_TLS_KEY", str(directory / "server.key"))


class Daemon:
    def __init__(self, **options: Any) -> None:
        os.environ["PYPROOF_TEST_HOOKS"] = "1"
        self.port = spare_port()
        self.info = start_daemon(self.port, **options)
        self.url = self.info.url
        address = TLSSettings.from_env().address(f"tcp://127.0.0.1:{self.port}")
        self.control = ControlClient(address, attempt_timeout=2.0)

    def tree(self) -> dict[str, Any]:
        return self.control.call("tree", deadline=20.0)["tree"]

    def pids(self) -> dict[str, int]:
        """'gateway', 'sessions', 'session-<id>', '<id>/master', '<id>/worker-0', ..."""
        found: dict[str, int] = {}
        root = self.tree()
        found["root"] = root["pid"]
        for child in root["children"]:
            found[child["id"]] = child["pid"]
            if child["id"] == "sessions" and child.get("tree"):
                for session in child["tree"]["children"]:
                    found[f"session-{session['id']}"] = session["pid"]
                    for leaf in (session.get("tree") or {}).get("children", []):
                        found[f"{session['id']}/{leaf['id']}"] = leaf["pid"]
        return found

    def wait_for(self, predicate, timeout: float = 15.0) -> dict[str, int]:
        """Poll the tree until predicate(pids) holds; returns the pids then."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                last = self.pids()
                if predicate(last):
                    return last
            except Exception:
                pass
            time.sleep(0.05)
        raise AssertionError(f"condition not reached within {timeout} s; last pids {last}")

    def stop(self) -> None:
        self.control.close()
        stop_daemon(self.port)
        os.environ.pop("PYPROOF_TEST_HOOKS", None)


def zmumu_reference() -> tuple[int, hist.Hist]:
    path = data_file("uproot-Zmumu.root")
    m = uproot.open(path)["events"]["M"].array(library="np")
    h = hist.Hist.new.Reg(100, 0, 200, name="M").Double()
    h.fill(np.asarray(m))
    return len(m), h


def wait_processed(session, entries: int, timeout: float) -> bool:
    """Poll the running query's status until it has processed at least `entries` entries,
    for at most `timeout` seconds; whether it got there (the callers go on either way, and
    check afterwards what they need to have happened)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = session.status()["master"]["query"] or {}
        # running: the session's last query, already over, may also have processed that many
        if query.get("state") == "running" and query.get("processed", 0) >= entries:
            return True
        time.sleep(0.02)
    return False


class Background:
    """Run a callable in a thread; `result()` re-raises its exception (bounded wait)."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background call still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value
