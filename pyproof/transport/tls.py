"""Optional TLS for nng connections, configured in one place.

A cluster that crosses hosts gets confidentiality (and the client gets proof
of the server's identity) from TLS; who the *user* is stays the business of
the HMAC handshake in :mod:`pyproof.transport.auth`, which runs inside the
TLS connection as on a plain one.

:class:`TLSSettings` comes from the environment (:meth:`TLSSettings.from_env`:
``PYPROOF_TLS_CA``, ``PYPROOF_TLS_CERT``, ``PYPROOF_TLS_KEY``, and optionally
``PYPROOF_TLS_SERVER_NAME``, ``PYPROOF_TLS_REQUIRED``) or from a config dict
(:meth:`TLSSettings.from_config`), and turns into pynng ``TLSConfig`` objects
(:meth:`~TLSSettings.server_config`, :meth:`~TLSSettings.client_config`) and
TLS addresses (:meth:`~TLSSettings.address`: ``tcp://h:p`` -> ``tls+tcp://h:p``).
``ipc://`` and ``inproc://`` addresses stay as they are: they never leave the
host, and file permissions guard them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import ProofError

if TYPE_CHECKING:  # imported where a TLSConfig is built: the daemon boots without pynng
    import pynng

__all__ = [
    "ENV_CA",
    "ENV_CERT",
    "ENV_KEY",
    "ENV_REQUIRED",
    "ENV_SERVER_NAME",
    "TLSError",
    "TLSSettings",
    "host_of",
    "is_plain_tcp",
    "tls_address",
]

ENV_CA = "PYPROOF_TLS_CA"
ENV_CERT = "PYPROOF_TLS_CERT"
ENV_KEY = "PYPROOF_TLS_KEY"
ENV_SERVER_NAME = "PYPROOF_TLS_SERVER_NAME"
ENV_REQUIRED = "PYPROOF_TLS_REQUIRED"

_PLAIN_TO_TLS = {"tcp": "tls+tcp", "tcp4": "tls+tcp4", "tcp6": "tls+tcp6"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class TLSError(ProofError, ValueError):
    """TLS is misconfigured, or a plain TCP address was used where TLS is required.

    The message names the setting (or address) and what to do about it.
    """


def is_plain_tcp(url: str) -> bool:
    """True for ``tcp://``, ``tcp4://`` and ``tcp6://`` addresses."""
    return url.partition("://")[0] in _PLAIN_TO_TLS


def tls_address(url: str) -> str:
    """``tcp://host:port`` -> ``tls+tcp://host:port`` (also tcp4/tcp6); others unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in _PLAIN_TO_TLS:
        return f"{_PLAIN_TO_TLS[scheme]}://{rest}"
    return url


def host_of(url: str) -> str | None:
    """The host part of a tcp-like address (no brackets for IPv6), or None."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host or None


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSSettings:
    """Where the CA, certificate and key are, and whether TLS is mandatory.

    - ``ca_file``: PEM CA bundle clients check servers against (and servers
      check clients against, with ``verify_clients``);
    - ``cert_file``, ``key_file``: this host's PEM certificate and key, for
      listening (both or neither);
    - ``server_name``: the name clients expect in the server's certificate;
      by default the host of the address dialed;
    - ``required``: refuse plain TCP addresses (:meth:`address` raises);
    - ``verify_clients``: servers demand a client certificate signed by
      ``ca_file`` (clients then present ``cert_file``/``key_file``).

    All fields empty (the default) means TLS is off.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    required: bool = False
    verify_clients: bool = False

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise TLSError(f"TLS {missing} is not set: give both a certificate and its key")
        if self.required and not self.enabled:
            raise TLSError(
                f"TLS is required but not configured: set {ENV_CA} (clients) and "
                f"{ENV_CERT}/{ENV_KEY} (servers)"
            )
        if self.verify_clients and not (self.ca_file and self.cert_file):
            raise TLSError("verify_clients needs ca_file, cert_file and key_file")

    @property
    def enabled(self) -> bool:
        """True if any certificate file is configured."""
        return bool(self.ca_file or self.cert_file)

    # ------------------------------------------------------------ sources

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLSSettings:
        """Settings from ``PYPROOF_TLS_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        required = env.get(ENV_REQUIRED, "").strip().lower()
        if required not in _TRUE | _FALSE:
            raise TLSError(f"{ENV_REQUIRED}={env[ENV_REQUIRED]!r}: use 1 or 0")
        return cls(
            ca_file=env.get(ENV_CA) or None,
            cert_file=env.get(ENV_CERT) or None,
            key_file=env.get(ENV_KEY) or None,
            server_name=env.get(ENV_SERVER_NAME) or None,
            required=required in _TRUE,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TLSSettings:
        """Settings from a dict with keys named as the fields (all optional)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in config if k not in fields)
        if unknown:
            raise TLSError(
                f"unknown TLS setting(s) {', '.join(unknown)}; valid: {', '.join(fields)}"
            )
        for name, value in config.items():
            kind = bool if fields[name].type == "bool" else str
            if value is not None and not isinstance(value, kind):
                raise TLSError(f"TLS setting {name} must be a {kind.__name__}, not {value!r}")
        return cls(**config)

    # ------------------------------------------------------------ pynng

    def server_config(self) -> pynng.TLSConfig:
        """A pynng server ``TLSConfig`` with this host's certificate and key."""
        import pynng

        if not (self.cert_file and self.key_file):
            raise TLSError(
                f"a TLS listener needs a certificate and key: set {ENV_CERT} and {ENV_KEY}"
            )
        config = pynng.TLSConfig(
            pynng.TLSConfig.MODE_SERVER,
            own_cert_string=_read("cert_file", self.cert_file),
            own_key_string=_read("key_file", self.key_file),
        )
        if self.verify_clients:
            _read("ca_file", self.ca_file)
            config.add_ca_file(self.ca_file)
            config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
        return config

    def client_config(self, server_name: str | None = None) -> pynng.TLSConfig:
        """A pynng client ``TLSConfig`` that checks the server against ``ca_file``.

        ``server_name`` (else the configured one) must match the server's
        certificate; pass the host you dial (see :func:`host_of`).
        """
        import pynng

        if not self.ca_file:
            raise TLSError(f"a TLS client needs a CA to check servers against: set {ENV_CA}")
        _read("ca_file", self.ca_file)
        name = server_name or self.server_name
        if not name:
            raise TLSError("no TLS server name: pass the host dialed or set server_name")
        config = pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT,
            server_name=name,
            ca_files=[self.ca_file],
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        )
        if self.verify_clients:
            config.set_own_cert(
                _read("cert_file", self.cert_file), _read("key_file", self.key_file)
            )
        return config

    def dial_config(self, url: str) -> pynng.TLSConfig | None:
        """The client ``TLSConfig`` for dialing ``url``, or None if it needs none."""
        if not url.startswith("tls+"):
            return None
        return self.client_config(self.server_name or host_of(url))

    def callback_config(self, url: str) -> pynng.TLSConfig | None:
        """The ``TLSConfig`` for dialing a client back at ``url`` (None if it needs none).

        The client's certificate must name the host we dial; ``server_name``
        (the daemon's own name for clients to check) plays no part here.
        """
        if not url.startswith("tls+"):
            return None
        host = host_of(url)
        if not host:
            raise TLSError(f"{url}: no host to check the client's certificate against")
        return self.client_config(host)

    def address(self, url: str) -> str:
        """``url`` as it must be used: plain TCP becomes TLS when TLS is on.

        Raises :class:`TLSError` for a ``tls+`` address when TLS is off.
        """
        if self.enabled:
            return tls_address(url)
        if url.startswith("tls+"):
            raise TLSError(f"{url} is a TLS address but TLS is not configured (set {ENV_CA})")
        return url


def _read(setting: str, path: str | None) -> str:
    assert path is not None
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM text file"
        raise TLSError(f"TLS {setting} {path}: {reason}") from None
