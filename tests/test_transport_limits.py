"""The frame cap: configurable, enforced by every listening socket before allocation."""

from __future__ import annotations

import os
import subprocess
import sys

import pynng
import pytest

import pyproof
from tests.daemon_helpers import Daemon

MiB = 1024 * 1024


def codec_constants(value: str) -> subprocess.CompletedProcess:
    code = ("from pyproof.transport import codec, frames, wire; "
            "print(codec.DEFAULT_MAX_FRAME, frames.DEFAULT_CHUNK_SIZE, wire.RECV_LIMIT)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYPROOF_MAX_FRAME": value}, timeout=60)


def test_the_cap_comes_from_the_environment_and_bad_values_are_named():
    done = codec_constants(str(20 * MiB))
    assert done.stdout.split() == [str(20 * MiB), str(8 * MiB), str(21 * MiB)]
    for bad in ("lots", str(MiB)):
        done = codec_constants(bad)
        assert done.returncode != 0
        assert f"PYPROOF_MAX_FRAME={bad!r}: give the frame cap in bytes" in done.stderr


@pytest.fixture
def small_cap_daemon(monkeypatch):
    monkeypatch.setenv("PYPROOF_MAX_FRAME", str(16 * MiB))
    d = Daemon()
    yield d
    d.stop()


def test_an_oversize_frame_is_dropped_unread_and_the_gateway_serves_on(small_cap_daemon):
    daemon = small_cap_daemon
    before = daemon.pids()["gateway"]
    with pynng.Req0(recv_timeout=1500, send_timeout=5000) as raw:
        raw.dial(f"tcp://127.0.0.1:{daemon.port}", block=True)
        raw.send(b"\xa0" * (20 * MiB))  # over 16 MiB + slack: nng drops it and the pipe
        with pytest.raises(pynng.Timeout):
            raw.recv()
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        assert session.id
        # the master's data plane too: an oversize request never reaches the decoder
        with pynng.Req0(recv_timeout=1500, send_timeout=5000) as raw:
            raw.dial(session.status()["master"]["address"], block=True)
            raw.send(b"\x00" * (20 * MiB))
            with pytest.raises(pynng.Timeout):
                raw.recv()
        assert session.process("tests.sample_selectors:Cycles", cycles=1000,
                               progress=False).stats.entries == 1000
    assert daemon.pids()["gateway"] == before


def test_inputs_over_the_daemons_cap_are_refused_before_sending(small_cap_daemon):
    # this client's own cap is 256 MiB: the daemon's 16 MiB, learnt at login, counts
    with pyproof.connect(f"{small_cap_daemon.url}?workers=1") as session:
        assert session.control.max_frame == 16 * MiB
        with pytest.raises(pyproof.InputError, match=r"inputs are 20 MB, over what one request"):
            session.process("tests.sample_selectors:Cycles", cycles=10, progress=False,
                            inputs={"table": b"x" * 20_000_000})
        assert session.process("tests.sample_selectors:Cycles", cycles=10,
                               progress=False).stats.entries == 10
