"""`pyproof.connect(url)`: open a session on a lite cluster or a running daemon.

Light on purpose: a lite cluster's daemon process is started before the rest
of the client (nng, the codec, `Session`: about as long to import as the
daemon takes to boot) is imported, so that the two happen side by side
instead of one after the other (see pyproof/bench/startup.py).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from pyproof.client.lite import LiteCluster, default_workers
from pyproof.errors import ConnectError

if TYPE_CHECKING:
    from pyproof.client.session import Session


def connect(url: str = "lite://", *, workers: int | str | None = None, session: str | None = None,
            connection: str | None = None, data_port: int | None = None,
            timeout: float = 60.0) -> Session:
    """Open a session (or attach to an existing one with `session=ID`).

    `lite://?workers=N` starts a private local cluster; `proof://host:port?workers=N`
    reaches a running daemon (`proofctl daemon start`). `connection="callback"`
    (default): the session dials back a socket this client listens on;
    `connection="dial"`: this client dials the session (behind a firewall or NAT,
    or through an SSH tunnel: then give the forwarded `data_port`). Both can
    also be given in the URL: `?connection=dial&data_port=1094`.
    """
    if os.environ.get("PYPROOF_IN_WORKER"):
        raise ConnectError(
            "pyproof.connect() was called inside a worker, while it imported your selector's "
            "file: put the code that connects under `if __name__ == \"__main__\":`")
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    if workers is None and "workers" in query:
        try:
            workers = int(query["workers"][0])
        except ValueError:
            # on a cluster, workers may name hosts: ?workers=h2:4,h3:4
            from pyproof.hosts.placement import is_explicit

            if parsed.scheme != "proof" or not is_explicit(query["workers"][0]):
                raise ConnectError(f"workers={query['workers'][0]!r} is not an integer "
                                   f"(or, on a cluster, host:count pairs such as "
                                   f"h2:4,h3:4)") from None
            workers = query["workers"][0]
    if session is None and "session" in query:
        session = query["session"][0]
    explicit = connection is not None or "connection" in query
    connection = connection or query.get("connection", ["callback"])[0]
    if connection not in ("callback", "dial"):
        raise ConnectError(f"connection={connection!r}: use 'callback' or 'dial'")
    if data_port is None and "data_port" in query:
        data_port = int(query["data_port"][0])
    dial = (connection == "dial", data_port)
    if parsed.scheme == "lite":
        workers = workers or default_workers()
        # the daemon opens this session while it boots (LiteCluster.open_request)
        cluster = LiteCluster(timeout=timeout, workers=workers if isinstance(workers, int)
                              else None, wait=False)
        try:
            # imported while the daemon boots (see the module docstring)
            from pyproof.client.control import ControlClient
            from pyproof.client.session import Session

            cluster.wait_ready()
            return Session(ControlClient(cluster.control_address, secret=cluster.secret),
                           workers=workers, cluster=cluster,
                           data_address=f"ipc://{cluster.run_dir}/client-{uuid.uuid4().hex}.ipc",
                           open_request=cluster.open_request)
        except BaseException:
            cluster.close()
            raise
    if parsed.scheme == "proof":
        if not parsed.hostname or not parsed.port:
            raise ConnectError(f"{url!r} must name a host and a port: proof://host:port")
        from pyproof.client.control import dial_daemon
        from pyproof.client.session import Session
        from pyproof.transport.tls import TLSSettings

        tls = TLSSettings.from_env()
        if tls.enabled and connection == "callback" and not tls.cert_file:
            # the session would dial us over TLS: we need a certificate to serve
            if explicit:
                raise ConnectError(
                    "with TLS, connection='callback' needs a client certificate signed by the "
                    "cluster's CA (set PYPROOF_TLS_CERT and PYPROOF_TLS_KEY); "
                    "or use connection='dial'")
            dial = (True, data_port)
        control = dial_daemon(url)
        local = tls.address(f"tcp://{_local_address_towards(parsed.hostname)}:0")
        try:
            return Session(control, workers=workers or default_workers(), cluster=None,
                           data_address=local,
                           attach=session, dial=dial, dial_host=parsed.hostname)
        except BaseException:
            control.close()
            raise
    raise ConnectError(f"unsupported URL scheme {parsed.scheme!r} in {url!r} "
                       "(use lite:// or proof://host:port)")


def _local_address_towards(host: str) -> str:
    """The address of this machine on the route to `host`: where the master dials back."""
    import socket

    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET)
        target = infos[0][4][0]
    except OSError:
        return "127.0.0.1"
    if target.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target, 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]
