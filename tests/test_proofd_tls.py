"""proofd with TLS: control and data connections encrypted and the daemon's certificate checked."""

from __future__ import annotations

import shutil

import pytest

import pyproof
from pyproof.client.control import ControlClient
from tests.conftest import data_file
from tests.daemon_helpers import Daemon
from tests.test_transport_tls import make_ca, make_cert


@pytest.fixture
def tls_daemon(tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    monkeypatch.setenv("PYPROOF_TLS_CA", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("PYPROOF_TLS_CERT", str(tmp_path / "server.crt"))
    monkeypatch.setenv("PYPROOF_TLS_KEY", str(tmp_path / "server.key"))
    d = Daemon()
    yield d
    d.stop()


def test_a_query_over_tls_gives_the_exact_result(tls_daemon):
    with pyproof.connect(f"{tls_daemon.url}?workers=1") as session:
        assert session.data_address == ""  # with TLS the client dials its data connection
        result = session.process("tests.sample_selectors:ZmumuMass",
                                 dataset=data_file("uproot-Zmumu.root") + ":events",
                                 progress=False)
        assert result.outputs["n"] == 2304


def test_plain_tcp_to_the_tls_endpoint_gets_nothing(tls_daemon):
    plain = ControlClient(f"tcp://127.0.0.1:{tls_daemon.port}", attempt_timeout=0.5)
    try:
        with pytest.raises(pyproof.ConnectError):
            plain.call("status", deadline=3.0)
    finally:
        plain.close()
