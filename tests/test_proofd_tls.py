"""proofd with TLS: control and data connections encrypted and the daemon's certificate checked."""

from __future__ import annotations

import pynng
import pytest

import pyproof
from pyproof.client.control import ControlClient
from tests.conftest import data_file
from tests.daemon_helpers import Daemon, tls_server_env
from tests.test_transport_reconnect import data_connections
from tests.test_transport_tls import make_ca, make_cert


@pytest.fixture
def tls_daemon(tmp_path, monkeypatch):
    tls_server_env(tmp_path, monkeypatch)
    d = Daemon()
    yield d
    d.stop()


def zmumu_count(session) -> int:
    return session.process("tests.sample_selectors:ZmumuMass",
                           dataset=data_file("uproot-Zmumu.root") + ":events",
                           progress=False).outputs["n"]


def test_a_client_without_a_certificate_dials_its_data_connection(tls_daemon, monkeypatch):
    monkeypatch.delenv("PYPROOF_TLS_CERT")
    monkeypatch.delenv("PYPROOF_TLS_KEY")
    with pyproof.connect(f"{tls_daemon.url}?workers=1") as session:
        assert session.data_address == ""  # it cannot serve TLS: it dials the session
        assert zmumu_count(session) == 2304
    with pytest.raises(pyproof.ConnectError, match="needs a client certificate"):
        pyproof.connect(f"{tls_daemon.url}?workers=1", connection="callback")


def test_a_client_with_a_certificate_is_dialed_back_over_tls(tls_daemon, tmp_path, monkeypatch):
    make_cert(tmp_path, "client", "ca", "IP:127.0.0.1")
    monkeypatch.setenv("PYPROOF_TLS_CERT", str(tmp_path / "client.crt"))
    monkeypatch.setenv("PYPROOF_TLS_KEY", str(tmp_path / "client.key"))
    with pyproof.connect(f"{tls_daemon.url}?workers=1") as session:
        assert session.data_address.startswith("tls+tcp://127.0.0.1:")
        assert zmumu_count(session) == 2304
        live = data_connections(session)  # the master dialed us back
        for _, sock in live:
            sock.close()
        assert live
        # a plain TCP peer cannot even connect to the client's TLS listener
        with pynng.Push0() as plain, pytest.raises(pynng.NNGException):
            plain.dial(session.data_address.replace("tls+", ""), block=True)
        assert zmumu_count(session) == 2304


def test_a_client_certificate_from_another_ca_gets_no_data_connection(tls_daemon, tmp_path,
                                                                     monkeypatch):
    make_ca(tmp_path, "rogue")
    make_cert(tmp_path, "stranger", "rogue", "IP:127.0.0.1")
    monkeypatch.setenv("PYPROOF_TLS_CERT", str(tmp_path / "stranger.crt"))
    monkeypatch.setenv("PYPROOF_TLS_KEY", str(tmp_path / "stranger.key"))
    with pyproof.connect(f"{tls_daemon.url}?workers=1") as session:
        # the master will not send data to a listener its CA does not vouch for; the
        # client hears nothing, asks over its (TLS, authenticated) control connection
        # and gets the kept result from there
        assert zmumu_count(session) == 2304
        assert data_connections(session) == []


def test_plain_tcp_to_the_tls_endpoint_gets_nothing(tls_daemon):
    plain = ControlClient(f"tcp://127.0.0.1:{tls_daemon.port}", attempt_timeout=0.5)
    try:
        with pytest.raises(pyproof.ConnectError):
            plain.call("status", deadline=3.0)
    finally:
        plain.close()
