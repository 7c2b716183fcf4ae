"""The client's control connection to a gateway: CBOR frames on nng req/rep, with retries.

The gateway may be restarted at any moment (that is the point of supervising
it). nng's dialer reconnects by itself; this class retries a request that
got no answer, with the same request id, so the daemon can recognise a
retry: every control request is idempotent by id.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlparse, urlsplit

import pynng

from pyproof.errors import ConnectError, ProofError
from pyproof.transport import auth
from pyproof.transport.codec import DEFAULT_MAX_FRAME, ProtocolError
from pyproof.transport.frames import decode_frame, encode_frame
from pyproof.transport.tls import ENV_CA, TLSSettings

ATTEMPT_TIMEOUT = 5.0
DEFAULT_DEADLINE = 60.0
CONNECT_WITHIN = 1.5  # how long a first connection to a daemon may take before we say why not
REDIAL_PAUSE = 0.1
# a daemon that is down (nothing accepts our connection) is waited for this long, to let a
# restart (systemd, `proofctl daemon start`) bring it back: its main process exits within
# about 4 s of losing its root, and a start takes 1-2 s; then the call fails saying so
UNREACHABLE_WITHIN = 12.0
SEND_SLICE = 0.5  # a send waits for a connection in slices this long (to notice the above)
# nng redials a lost connection after 1 s by default: a restarted daemon would wait for it
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 100, 250
BACKOFF_MIN, BACKOFF_MAX = 0.05, 0.5  # pauses between attempts that failed at once


class RequestRefused(ProofError):
    """The daemon answered with an error (the message is the daemon's)."""


class _NotAuthenticated(Exception):
    """The daemon does not accept our login or token; `reason` is its short reason."""

    def __init__(self, message: str | None, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class _LoginAgain(Exception):
    """The login exchange was interrupted (lost answer, gateway restarted): start over."""


# refusals that a fresh challenge cures: the gateway restarted or an answer was lost
RETRYABLE_LOGIN = ("unknown challenge", "replayed challenge", "expired")


def current_user() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except Exception:
        return f"uid{os.getuid()}"


class ControlClient:
    """Logs in with an HMAC challenge (the secret never travels), then sends requests
    carrying the token it earned; a refused token triggers one fresh login."""

    def __init__(self, address: str, *, user: str | None = None, secret: bytes | None = None,
                 attempt_timeout: float = ATTEMPT_TIMEOUT, url: str | None = None,
                 connect_within: float | None = None,
                 unreachable_within: float = UNREACHABLE_WITHIN) -> None:
        """`connect_within=None`: dial in the background (nng reconnects by itself);
        seconds: also wait that long for a first connection, and raise a ConnectError
        that says why there is none (nothing listening, TLS mismatch) instead of
        letting the first request time out. `url` is what those messages name.
        `unreachable_within`: how long a call waits for a daemon that went away (a
        restart) before it fails with a ConnectError naming the daemon and the session."""
        self.address = address
        self.url = url or address
        self.daemon = self.url.split("?", 1)[0]  # the daemon, without the connect options
        self.user = user or current_user()
        self._secret = secret
        self._token: dict[str, Any] | None = None
        self.max_frame = DEFAULT_MAX_FRAME  # the smaller of ours and the daemon's, once logged in
        self.attempt_timeout = attempt_timeout
        self.unreachable_within = unreachable_within
        # (since when, last seen) the daemon accepted no connection, across calls: a call
        # right after one that found it down fails at once instead of waiting again
        self._down: tuple[float, float] | None = None
        # a req socket's send waits for a connection: in slices, so that a daemon that is
        # down is noticed (and waited for, within bounds) instead of costing whole attempts
        self.socket = pynng.Req0(recv_timeout=int(attempt_timeout * 1000),
                                 send_timeout=int(SEND_SLICE * 1000), resend_time=-1,
                                 reconnect_time_min=RECONNECT_MIN_MS,
                                 reconnect_time_max=RECONNECT_MAX_MS)
        if address.startswith("tls+"):  # checks the daemon's certificate against our CA
            self.socket.tls_config = TLSSettings.from_env().dial_config(address)
        try:
            if connect_within is None:
                self.socket.dial(address, block=False)
            else:
                self._first_dial(connect_within)
        except BaseException:
            self.socket.close()
            raise
        # one request at a time: a second send on a req socket cancels the first
        self._lock = threading.Lock()

    def _first_dial(self, within: float) -> None:
        """Connect once before going on, so that no daemon, or a TLS mismatch, shows at
        once (a refusal takes about 1 ms) as a ConnectError that says why.

        A plain TCP connect, bounded by what is left of `within`, comes first: a
        host that drops packets would hold nng's own blocking dial for 10 s. Tried
        again until `within` seconds pass, since a gateway that restarts refuses
        connections for a moment; its last answer is what we report.
        """
        end = time.monotonic() + within
        target = urlsplit(self.address)
        while True:
            try:
                with socket.create_connection((target.hostname, target.port),
                                              timeout=max(0.05, end - time.monotonic())):
                    pass
                # once connected, nng's dialer reconnects by itself, as a background one does
                self.socket.dial(self.address, block=True)
                return
            except (OSError, pynng.NNGException) as exc:
                if time.monotonic() + REDIAL_PAUSE >= end:
                    raise ConnectError(_why_no_connection(self.url, self.address, exc,
                                                          within)) from None
                time.sleep(REDIAL_PAUSE)

    def call(self, kind: str, payload: dict[str, Any] | None = None, *,
             session: str | None = None, deadline: float = DEFAULT_DEADLINE,
             attempt: float | None = None, request_id: str | None = None) -> dict[str, Any]:
        """Send a request and return the answer's payload; retries until `deadline` seconds.

        `request_id` (default: a fresh one) names the request: the daemon answers a
        repeated one as it answered the first (`open_session`: the same session).

        Raises RequestRefused when the daemon says no, ConnectError when it
        never answers.
        """
        end = time.monotonic() + deadline
        if not self._lock.acquire(timeout=deadline):
            raise ConnectError(f"another request to {self.address} held the connection "
                               f"for {deadline:.0f} s")
        self.socket.recv_timeout = int(1000 * (attempt or self.attempt_timeout))
        try:
            for login_round in (1, 2):
                if self._token is None:
                    self._login(end, deadline, session)
                request_id = request_id or uuid.uuid4().hex
                data = encode_frame(kind, {**(payload or {}), "token": self._token},
                                    session=session, request_id=request_id)
                try:
                    return self._exchange(kind, data, request_id, end, deadline,
                                          session=session)
                except _NotAuthenticated as exc:
                    self._token = None
                    if login_round == 2:
                        raise RequestRefused(f"the daemon refused our login: {exc}") from None
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = auth.load_or_create_secret()
        return self._secret

    def _login(self, end: float, deadline: float, session: str | None = None) -> None:
        """Log in; a lost answer or a gateway restarted mid-login means a fresh challenge."""
        while True:
            try:
                return self._login_once(end, deadline, session)
            except _LoginAgain as exc:
                if time.monotonic() >= end:
                    raise ConnectError(f"could not log in to {self.address} within "
                                       f"{deadline:.0f} s ({exc})") from None

    def _login_once(self, end: float, deadline: float, session: str | None = None) -> None:
        secret = self.secret()
        client = auth.ClientHandshake(self.user, secret)
        challenge_id = uuid.uuid4().hex
        challenge = self._exchange(auth.AUTH_CHALLENGE, encode_frame(
            auth.AUTH_CHALLENGE, {}, request_id=challenge_id), challenge_id, end, deadline,
            session=session)
        try:
            answer = client.answer(challenge, peer=self.address)
        except auth.AuthError as exc:
            raise RequestRefused(str(exc)) from None
        answer_id = uuid.uuid4().hex
        try:
            # an answer is good once: never resend it (a resend is a replay)
            ok = self._exchange(auth.AUTH_ANSWER, encode_frame(
                auth.AUTH_ANSWER, answer, request_id=answer_id), answer_id, end, deadline,
                resend=False, session=session)
        except _NotAuthenticated as exc:
            if exc.reason in RETRYABLE_LOGIN:
                raise _LoginAgain(exc.reason) from None
            raise RequestRefused(f"the daemon refused our login: {exc}") from None
        try:
            client.confirm({k: v for k, v in ok.items() if k not in ("token", "max_frame")},
                           peer=self.address)
        except auth.AuthError as exc:
            raise RequestRefused(f"the daemon at {self.address} failed to prove itself: "
                                 f"{exc}") from None
        self._token = ok.get("token")
        server_cap = ok.get("max_frame")
        if type(server_cap) is int and server_cap > 0:
            self.max_frame = min(DEFAULT_MAX_FRAME, server_cap)

    def _exchange(self, kind: str, data: bytes, request_id: str, end: float,
                  deadline: float, *, resend: bool = True,
                  session: str | None = None) -> dict[str, Any]:
        """One request until answered; ConnectError at `end`, or once the daemon has
        accepted no connection for `unreachable_within` seconds (it is down: waiting the
        whole deadline would only hide that)."""
        attempts = 0
        pause = BACKOFF_MIN
        while True:
            attempts += 1
            try:
                self.socket.send(data)
            except pynng.Timeout:  # a req socket's send waits for a connection: there is none
                now = time.monotonic()
                if self.socket.pipes:  # connected, still sending a large request: not down
                    self._down = None
                    if now >= end:
                        raise ConnectError(f"the daemon at {self.daemon} did not take "
                                           f"{kind!r} within {deadline:.0f} s") from None
                    continue
                since, seen = self._down or (now - SEND_SLICE, now)
                if now - seen > 2 * SEND_SLICE + 1.0:  # an old outage: this one is new
                    since = now - SEND_SLICE
                self._down = (since, now)
                if now >= end or now - since >= self.unreachable_within:
                    why = self._probe()
                    if why is None and now - since < self.unreachable_within + 2.0 \
                            and now < end:
                        continue  # it is back this instant: nng is about to reconnect
                    raise ConnectError(self._unreachable(kind, session, now - since,
                                                         why or "no connection")) from None
                continue
            except pynng.NNGException:
                pass  # e.g. the connection closed under us: as a lost answer, below
            else:
                self._down = None
                try:
                    frame = decode_frame(self.socket.recv())
                except (pynng.NNGException, ProtocolError):
                    pass
                else:
                    if frame.request_id not in (None, request_id):
                        continue  # a late answer to an earlier attempt of another request
                    if frame.type != "error":
                        return frame.payload if isinstance(frame.payload, dict) else {}
                    body = frame.payload if isinstance(frame.payload, dict) else {}
                    if body.get("auth"):
                        raise _NotAuthenticated(body.get("message"), body.get("auth"))
                    if not (body.get("retry") is True and resend and time.monotonic() < end):
                        raise RequestRefused(str(body.get("message") or frame.payload))
                    # still in progress, or restarting: the same request id again
                    # (idempotent), after a pause that grows (the answer may come at once)
                    time.sleep(min(pause, max(0.0, end - time.monotonic())))
                    pause = min(BACKOFF_MAX, pause * 2)
                    continue
            # no answer (timed out, or the connection was reset: a gateway that died)
            if not resend:
                raise _LoginAgain(f"no answer to {kind!r}") from None
            if time.monotonic() >= end:
                raise ConnectError(
                    f"the daemon at {self.daemon} did not answer {kind!r} "
                    f"({attempts} attempts in {deadline:.0f} s)"
                    + (f" about session {session}" if session else "")) from None
            time.sleep(min(pause, max(0.0, end - time.monotonic())))
            pause = min(BACKOFF_MAX, pause * 2)

    def _probe(self) -> str | None:
        """Why a TCP daemon accepts no connection ("connection refused", ...); None when it
        does (or the address is not TCP: ipc has nothing more to say)."""
        target = urlsplit(self.address)
        if not (target.scheme.endswith("tcp") and target.hostname and target.port):
            return "no connection"
        try:
            with socket.create_connection((target.hostname, target.port), timeout=0.5):
                return None
        except ConnectionRefusedError:
            return "connection refused"
        except OSError as exc:
            return exc.strerror or str(exc)

    def _unreachable(self, kind: str, session: str | None, waited: float, why: str) -> str:
        """Why a call failed when the daemon accepts no connection, and what to do."""
        message = (f"no daemon answers at {self.daemon} ({why}; waited {waited:.0f} s for it to "
                   f"come back): it stopped or is restarting, so {kind!r} was not sent")
        if session:
            return (f"{message}. Session {session} is not lost if its processes run: a daemon "
                    "started again on that port re-adopts it; then call again (or "
                    f"connect(url, session={session!r}))")
        return f"{message}; start one with `proofctl daemon start`, or try again later"

    def close(self) -> None:
        self.socket.close()


def daemon_host_port(url: str) -> tuple[str, int]:
    """The host and port of a daemon URL `proof://host:port`; ConnectError for anything
    else (a port out of range included): the one parse of a daemon URL, for the client
    and for proofctl's commands that must run on the daemon's host."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "proof" or not parsed.hostname or not port:
        raise ConnectError(f"{url!r} is not a daemon URL: use proof://host:port")
    return parsed.hostname, port


def daemon_address(url: str) -> str:
    """The control address of the daemon at `proof://host:port`: `tcp://host:port`, or
    `tls+tcp://host:port` when TLS is configured ($PYPROOF_TLS_CA): the one place that
    decides how a client, and proofctl, reach a daemon."""
    host, port = daemon_host_port(url)
    return TLSSettings.from_env().address(f"tcp://{host}:{port}")


def dial_daemon(url: str, *, attempt_timeout: float = ATTEMPT_TIMEOUT,
                connect_within: float = CONNECT_WITHIN) -> ControlClient:
    """A ControlClient connected to the daemon at `proof://host:port` (over TLS when
    configured); ConnectError within about `connect_within` seconds if there is none."""
    return ControlClient(daemon_address(url), attempt_timeout=attempt_timeout, url=url,
                         connect_within=connect_within)


def _why_no_connection(url: str, address: str, exc: Exception, within: float) -> str:
    """What a failed first connection means, and what to do about it."""
    port = urlsplit(address).port
    if isinstance(exc, ConnectionRefusedError | pynng.ConnectionRefused):
        return (f"no daemon answers at {url} (connection refused): start one with "
                f"`proofctl daemon start --port {port}`, or give the URL of a running one")
    if isinstance(exc, TimeoutError | pynng.Timeout):
        return (f"{url} did not accept a connection within {within:g} s: the host is "
                "down, or a firewall drops the connection")
    if isinstance(exc, socket.gaierror | pynng.AddressInvalid):
        return f"cannot reach {url}: the host name does not resolve"
    if isinstance(exc, OSError):
        return f"cannot reach {url}: {exc.strerror or exc}"
    if address.startswith("tls+"):
        return (f"the TLS handshake with {url} failed ({exc}): the daemon does not serve "
                f"TLS, or its certificate is not signed by the CA in ${ENV_CA}")
    return (f"{url} closed the connection ({exc}): if the daemon serves TLS, set ${ENV_CA} "
            "to the cluster's CA certificate")
