"""TLS: settings from env/config, and real pynng TLS connections on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pynng
import pytest

from pyproof.transport import decode_frame, encode_frame
from pyproof.transport.tls import (
    TLSError,
    TLSSettings,
    host_of,
    is_plain_tcp,
    tls_address,
)

TIMEOUT_MS = 1000


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )


def make_cert(directory: Path, name: str, ca: str, san: str) -> None:
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=directory,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_cert(directory, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    make_cert(directory, "client", "ca", "DNS:alice-laptop")
    return directory


def settings(pki: Path, ca: str = "ca", **extra) -> TLSSettings:
    return TLSSettings(
        ca_file=str(pki / f"{ca}.crt"),
        cert_file=str(pki / "server.crt"),
        key_file=str(pki / "server.key"),
        **extra,
    )


def listen(sock: pynng.Socket, url: str) -> str:
    """Listen on port 0 and return the address peers dial (nng reports the port byte-swapped)."""
    listener = sock.listen(url)
    return f"{url.rsplit(':', 1)[0]}:{socket.ntohs(listener.local_address.port)}"


# ----------------------------------------------------------------------- pure parts


def test_tcp_addresses_become_tls_and_others_stay():
    assert tls_address("tcp://127.0.0.1:5555") == "tls+tcp://127.0.0.1:5555"
    assert tls_address("tcp6://[::1]:5555") == "tls+tcp6://[::1]:5555"
    assert tls_address("ipc:///tmp/x") == "ipc:///tmp/x"
    assert tls_address("tls+tcp://h:1") == "tls+tcp://h:1"
    assert is_plain_tcp("tcp4://h:1") and not is_plain_tcp("tls+tcp://h:1")
    assert host_of("tls+tcp://[::1]:5555") == "::1"
    assert host_of("tls+tcp://node7.cern.ch:5555") == "node7.cern.ch"


def test_settings_come_from_the_environment():
    env = {
        "PYPROOF_TLS_CA": "/etc/pyproof/ca.pem",
        "PYPROOF_TLS_CERT": "/etc/pyproof/host.pem",
        "PYPROOF_TLS_KEY": "/etc/pyproof/host.key",
        "PYPROOF_TLS_REQUIRED": "1",
    }
    tls = TLSSettings.from_env(env)
    assert tls == TLSSettings(
        ca_file="/etc/pyproof/ca.pem",
        cert_file="/etc/pyproof/host.pem",
        key_file="/etc/pyproof/host.key",
        required=True,
    )
    assert tls.address("tcp://node1:1093") == "tls+tcp://node1:1093"
    assert not TLSSettings.from_env({}).enabled
    assert TLSSettings.from_env({}).address("tcp://h:1") == "tcp://h:1"


def test_settings_come_from_a_config_dict_and_bad_ones_are_named():
    tls = TLSSettings.from_config({"ca_file": "/ca.pem", "server_name": "proof.example"})
    assert tls.enabled and tls.server_name == "proof.example"
    with pytest.raises(TLSError, match=r"^unknown TLS setting\(s\) ca; valid: ca_file, "):
        TLSSettings.from_config({"ca": "/ca.pem"})
    with pytest.raises(TLSError, match="TLS setting required must be a bool"):
        TLSSettings.from_config({"ca_file": "/ca.pem", "required": "yes"})
    with pytest.raises(TLSError, match="key_file is not set"):
        TLSSettings(cert_file="/c.pem")
    with pytest.raises(TLSError, match="TLS is required but not configured: set PYPROOF_TLS_CA"):
        TLSSettings.from_env({"PYPROOF_TLS_REQUIRED": "true"})
    with pytest.raises(TLSError, match="PYPROOF_TLS_REQUIRED='maybe'"):
        TLSSettings.from_env({"PYPROOF_TLS_REQUIRED": "maybe"})


def test_a_tls_address_without_tls_configured_is_refused():
    with pytest.raises(TLSError, match="tls\\+tcp://h:1 is a TLS address but TLS is not"):
        TLSSettings().address("tls+tcp://h:1")


def test_missing_files_are_named(tmp_path):
    tls = TLSSettings(ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(TLSError, match=r"^TLS ca_file .*nope\.pem: No such file"):
        tls.client_config("localhost")
    with pytest.raises(TLSError, match="a TLS listener needs a certificate and key"):
        tls.server_config()


# ----------------------------------------------------------------------- on the wire


def test_a_client_with_the_right_ca_exchanges_frames_over_tls(pki):
    tls = settings(pki)
    with pynng.Rep0(
        tls_config=tls.server_config(), recv_timeout=TIMEOUT_MS, send_timeout=TIMEOUT_MS
    ) as server:
        url = listen(server, tls.address("tcp://127.0.0.1:0"))
        assert url.startswith("tls+tcp://127.0.0.1:")
        with pynng.Req0(
            tls_config=tls.dial_config(url), recv_timeout=TIMEOUT_MS, send_timeout=TIMEOUT_MS
        ) as client:
            client.dial(url, block=True)
            client.send(encode_frame("ping", {"n": 1}, request_id="r1"))
            request = decode_frame(server.recv())
            server.send(encode_frame("pong", {"n": request.payload["n"] + 1}, request_id="r1"))
            assert decode_frame(client.recv()).payload == {"n": 2}


def test_pair_sockets_work_over_tls_by_server_name(pki):
    tls = settings(pki, server_name="localhost")
    with pynng.Pair0(tls_config=tls.server_config(), recv_timeout=TIMEOUT_MS) as server:
        url = listen(server, "tls+tcp://127.0.0.1:0")
        with pynng.Pair0(tls_config=tls.client_config(), send_timeout=TIMEOUT_MS) as client:
            client.dial(url, block=True)
            client.send(b"hello")
            assert server.recv() == b"hello"


def test_a_client_with_the_wrong_ca_is_refused(pki):
    good, wrong = settings(pki), settings(pki, ca="other-ca")
    with pynng.Pair0(tls_config=good.server_config(), recv_timeout=300) as server:
        url = listen(server, "tls+tcp://127.0.0.1:0")
        with pynng.Pair0(tls_config=wrong.dial_config(url), send_timeout=300) as client:
            with pytest.raises(pynng.CryptoError):
                client.dial(url, block=True)
            client.dial(url, block=False)
            with pytest.raises(pynng.Timeout):
                client.send(b"secret data")
        with pytest.raises(pynng.Timeout):
            server.recv()


def test_a_client_expecting_another_server_name_is_refused(pki):
    tls = settings(pki)
    with pynng.Pair0(tls_config=tls.server_config(), recv_timeout=300) as server:
        url = listen(server, "tls+tcp://127.0.0.1:0")
        client = pynng.Pair0(tls_config=tls.client_config("proof.example.org"))
        with client, pytest.raises(pynng.CryptoError):
            client.dial(url, block=True)


def test_a_plain_tcp_client_gets_nothing_through_to_a_tls_listener(pki):
    tls = settings(pki)
    with pynng.Pair0(tls_config=tls.server_config(), recv_timeout=300) as server:
        url = listen(server, "tls+tcp://127.0.0.1:0")
        plain = url.removeprefix("tls+")
        with pynng.Pair0(send_timeout=300) as client:
            with pytest.raises(pynng.NNGException):
                client.dial(plain, block=True)
            client.dial(plain, block=False)
            with pytest.raises(pynng.Timeout):
                client.send(encode_frame("auth_answer", {"user": "mallory"}))
        with pytest.raises(pynng.Timeout):
            server.recv()
        # nor does a raw socket speaking nng's plain SP header
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
            raw.sendall(b"\x00SP\x00\x00\x10\x00\x00" + bytes(8) + b"hello")
            raw.settimeout(1.0)
            assert raw.recv(100) == b""  # the server hangs up
        with pytest.raises(pynng.Timeout):
            server.recv()


def test_servers_can_demand_client_certificates(pki):
    server_side = settings(pki, verify_clients=True)
    with_cert = TLSSettings(
        ca_file=str(pki / "ca.crt"),
        cert_file=str(pki / "client.crt"),
        key_file=str(pki / "client.key"),
        verify_clients=True,
    )
    without_cert = TLSSettings(ca_file=str(pki / "ca.crt"))
    with pynng.Pair0(tls_config=server_side.server_config(), recv_timeout=TIMEOUT_MS) as server:
        url = listen(server, "tls+tcp://127.0.0.1:0")
        client = pynng.Pair0(tls_config=without_cert.dial_config(url))
        with client, pytest.raises(pynng.NNGException):
            client.dial(url, block=True)
        with pynng.Pair0(tls_config=with_cert.dial_config(url), send_timeout=TIMEOUT_MS) as client:
            client.dial(url, block=True)
            client.send(b"mutual")
            assert server.recv() == b"mutual"
