"""Authentication: per-user secrets, an HMAC challenge-response, session tokens, roles.

Everything here is pure: no sockets, no clock (``now`` is passed in), and
randomness comes from an injected ``rng(n) -> bytes`` (default
:func:`secrets.token_bytes`). The shells (gateway, master, client) carry the
dicts below in frames of type :data:`AUTH_CHALLENGE`, :data:`AUTH_ANSWER` and
:data:`AUTH_OK`.

The handshake (mutual; the secret never travels)::

    server                                       client
    challenge(now) ──── {"scheme", "server_id",
                         "server_nonce", "purpose"} ────> answer(challenge)
    verify(answer, now) <── {"user", "server_nonce",
                              "client_nonce", "mac"} ────
                        ──── {"server_id", "user",
                              "client_nonce", "mac"} ───> confirm(ok)

``mac`` of the client is HMAC-SHA256(secret, "pyproof-auth-v1" | "client" |
server_nonce | client_nonce | user | purpose | server_id), the server's is the
same over "server" and the nonces in reverse order; every field is prefixed by
its 4-byte big-endian length, so no two field lists give the same input.
A server nonce is accepted once, within ``max_age`` seconds of its challenge.

Every refusal is an :class:`AuthError` naming the peer, the user and the
reason, ready for a log line. Send the peer only ``error.reason``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyproof import sandbox
from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import ProofError

__all__ = [
    "AUTH_ANSWER",
    "AUTH_CHALLENGE",
    "AUTH_OK",
    "NONCE_SIZE",
    "SCHEME",
    "SECRET_SIZE",
    "AuthError",
    "ClientHandshake",
    "Login",
    "SecretFileError",
    "ServerHandshake",
    "SessionToken",
    "User",
    "default_secret_path",
    "fresh_cluster_secret",
    "issue_token",
    "load_or_create_secret",
    "may_act_on",
    "read_secret",
    "verify_token",
    "write_secret",
]

AUTH_CHALLENGE = "auth_challenge"
AUTH_ANSWER = "auth_answer"
AUTH_OK = "auth_ok"
"""Frame types the shells use for the three handshake messages."""

SCHEME = "pyproof-auth-v1"
"""Name of the MAC construction; bump it with any change to it."""

NONCE_SIZE = 32
SECRET_SIZE = 32
MAX_NAME = 256
"""Longest user, server id, purpose or session id accepted from a peer (characters)."""

_TOKEN_SCHEME = "pyproof-token-v1"

Rng = Callable[[int], bytes]

# Closed vocabulary of AuthError.reason.
MALFORMED = "malformed"
UNKNOWN_CHALLENGE = "unknown challenge"
REPLAYED = "replayed challenge"
EXPIRED = "expired"
UNKNOWN_USER = "unknown user"
WRONG_SECRET = "wrong secret"
IMPOSTOR = "impostor server"
WRONG_SERVER = "wrong server"
WRONG_PURPOSE = "wrong purpose"
OUT_OF_ORDER = "out of order"
WRONG_SESSION = "wrong session"
BAD_TOKEN = "bad token"


class AuthError(ProofError):
    """A peer failed to authenticate (or sent something that is not a handshake).

    ``reason`` is one short phrase from a closed set: ``"malformed"``,
    ``"unknown challenge"``, ``"replayed challenge"``, ``"expired"``,
    ``"unknown user"``, ``"wrong secret"``, ``"impostor server"``,
    ``"wrong server"``, ``"wrong purpose"``, ``"out of order"``,
    ``"wrong session"``, ``"bad token"``. ``peer`` and ``user`` are what was
    known when it was refused (``None`` if nothing). The message is meant for
    the log; tell the peer only ``reason``. Drop the connection and go on serving.
    """

    def __init__(self, reason: str, detail: str, *, peer: str | None, user: str | None) -> None:
        self.reason = reason
        self.detail = detail
        self.peer = peer
        self.user = user
        who = f"user {user!r}" if user is not None else "unknown user"
        where = f" from {peer}" if peer else ""
        super().__init__(f"authentication refused for {who}{where}: {reason}: {detail}")


class SecretFileError(ProofError):
    """A secret file cannot be used: unsafe permissions, wrong owner, bad content.

    The message names the file and the fix. ``path`` is the file.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        super().__init__(message)


# ----------------------------------------------------------------------- secrets


def default_secret_path() -> Path:
    """``$PYPROOF_SANDBOX/secret`` if that variable is set, else ``~/.pyproof/secret``."""
    return Path(sandbox.default_secret_path())


def fresh_cluster_secret(rng: Rng = secrets.token_bytes) -> bytes:
    """A new random secret for one lite cluster (pass it on with :func:`write_secret`)."""
    return _random(rng, SECRET_SIZE)


def write_secret(path: str | os.PathLike[str], secret: bytes) -> Path:
    """Create ``path`` holding ``secret`` (hex, one line), mode 0600, atomically.

    The file appears complete or not at all, and an existing file is never
    replaced: raises :class:`FileExistsError` if ``path`` exists.
    """
    if type(secret) is not bytes or len(secret) < 16:
        raise ValueError("a secret must be at least 16 bytes")
    target = Path(path)
    if not target.parent.is_dir():  # an existing one is the caller's choice
        sandbox.make_private_dir(target.parent)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, secret.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, target)  # atomic, and refuses to replace an existing file
    finally:
        temp.unlink(missing_ok=True)
    return target


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file, refusing one that others could read or that is not ours."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(name):
            raise SecretFileError(
                name, f"secret file {name} is a symlink; use a plain file"
            ) from None
        raise SecretFileError(name, f"cannot read secret file {name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(name, f"secret file {name} is not a regular file")
        if info.st_uid != os.getuid():
            raise SecretFileError(
                name,
                f"secret file {name} belongs to uid {info.st_uid}, not to you "
                f"(uid {os.getuid()}); remove it and a new one is created",
            )
        if info.st_mode & 0o077:
            raise SecretFileError(
                name,
                f"secret file {name} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {name}",
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) < 16:
        raise SecretFileError(
            name,
            f"secret file {name} does not hold a secret (expected at least 32 hex "
            "digits); remove it and a new one is created",
        )
    return secret


def load_or_create_secret(
    path: str | os.PathLike[str] | None = None, *, rng: Rng = secrets.token_bytes
) -> bytes:
    """The user's secret from ``path`` (default :func:`default_secret_path`).

    Created on first use with :data:`SECRET_SIZE` random bytes, mode 0600;
    raises :class:`SecretFileError` for a file group or others can read (the
    message says ``chmod 600 <path>``), one owned by someone else, or junk.
    Copy the file (keeping its mode) to every host where the same user runs.
    """
    target = Path(path) if path is not None else default_secret_path()
    if not target.exists() and not target.is_symlink():
        # FileExistsError: another process created it first; use theirs
        with contextlib.suppress(FileExistsError):
            write_secret(target, _random(rng, SECRET_SIZE))
    return read_secret(target)


def _random(rng: Rng, size: int) -> bytes:
    value = rng(size)
    if type(value) is not bytes or len(value) != size:
        raise ValueError(f"rng must return {size} bytes")
    return value


# ----------------------------------------------------------------------- MAC


def _field(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return len(data).to_bytes(4, "big") + data


def _mac(secret: bytes, *fields: str | bytes) -> bytes:
    return hmac.new(secret, b"".join(_field(f) for f in fields), hashlib.sha256).digest()


def _client_mac(
    secret: bytes, server_nonce: bytes, client_nonce: bytes, user: str, purpose: str, server_id: str
) -> bytes:
    return _mac(secret, SCHEME, "client", server_nonce, client_nonce, user, purpose, server_id)


def _server_mac(
    secret: bytes, server_nonce: bytes, client_nonce: bytes, user: str, purpose: str, server_id: str
) -> bytes:
    return _mac(secret, SCHEME, "server", client_nonce, server_nonce, user, purpose, server_id)


# ----------------------------------------------------------------------- validation


def _fields(
    message: object, keys: tuple[str, ...], what: str, peer: str | None, user: str | None
) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise AuthError(MALFORMED, f"{what} must be a map", peer=peer, user=user)
    got = set()
    for key in message:
        if not isinstance(key, str) or key not in keys:
            raise AuthError(
                MALFORMED, f"{what} has an unknown field {key!r:.60}", peer=peer, user=user
            )
        got.add(key)
    missing = [k for k in keys if k not in got]
    if missing:
        raise AuthError(
            MALFORMED, f"{what} is missing field(s) {', '.join(missing)}", peer=peer, user=user
        )
    return message


def _name(value: object, field: str, what: str, peer: str | None, user: str | None) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise AuthError(
            MALFORMED,
            f"{what} field {field} must be printable text of 1 to {MAX_NAME} characters",
            peer=peer,
            user=user,
        )
    return value


def _nonce(value: object, field: str, what: str, peer: str | None, user: str | None) -> bytes:
    if type(value) is not bytes or len(value) != NONCE_SIZE:
        raise AuthError(
            MALFORMED, f"{what} field {field} must be {NONCE_SIZE} bytes", peer=peer, user=user
        )
    return value


# ----------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    """A successful handshake: who logged in, to which server, for what."""

    user: str
    server_id: str
    purpose: str
    peer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatistics:
    """A snapshot of a :class:`ServerHandshake`."""

    challenges_issued: int
    challenges_pending: int
    logins: int
    refusals: dict[str, int]


class ServerHandshake:
    """The server side: issues challenges and verifies answers, for many clients at once.

    ``user_secrets`` maps a user name to that user's secret (a mapping, or a function
    returning ``None`` for an unknown user). ``purpose`` is what this endpoint
    serves (``"control"``, ``"data"``, ...): it is bound into both MACs, so an
    answer made for one purpose is refused by another. A challenge is answered
    at most once, within ``max_age`` seconds; at most ``max_pending`` challenges
    wait at once (the oldest is forgotten first).

    Replay protection rests on the pending table alone: an answer is accepted
    only for a pending nonce, which it removes. The table of used nonces (kept
    for ``2 * max_age``) only lets a replay be reported as such.
    """

    def __init__(
        self,
        server_id: str,
        user_secrets: Mapping[str, bytes] | Callable[[str], bytes | None],
        *,
        purpose: str = "control",
        max_age: float = 30.0,
        max_pending: int = 10_000,
        rng: Rng = secrets.token_bytes,
    ) -> None:
        _name(server_id, "server_id", "server", None, None)
        _name(purpose, "purpose", "server", None, None)
        if max_age <= 0 or max_pending < 1:
            raise ValueError("max_age must be > 0 and max_pending >= 1")
        self.server_id = server_id
        self.purpose = purpose
        self.max_age = max_age
        self.max_pending = max_pending
        self._lookup = user_secrets.get if isinstance(user_secrets, Mapping) else user_secrets
        self._rng = rng
        self._pending: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._used: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._issued = 0
        self._logins = 0
        self._refusals: collections.Counter[str] = collections.Counter()

    def challenge(self, now: float) -> dict[str, Any]:
        """A fresh challenge: ``{"scheme", "server_id", "server_nonce", "purpose"}``."""
        self._expire(now)
        nonce = _random(self._rng, NONCE_SIZE)
        self._pending[nonce] = now
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        self._issued += 1
        return {
            "scheme": SCHEME,
            "server_id": self.server_id,
            "server_nonce": nonce,
            "purpose": self.purpose,
        }

    def verify(
        self, answer: object, now: float, *, peer: str | None = None
    ) -> tuple[Login, dict[str, Any]]:
        """Check a client's answer; return the login and the ``auth_ok`` dict to send back.

        ``auth_ok`` is ``{"server_id", "user", "client_nonce", "mac"}``. Raises
        :class:`AuthError` (and counts the reason) for anything else.
        """
        try:
            login, ok = self._verify(answer, now, peer)
        except AuthError as exc:
            self._refusals[exc.reason] += 1
            raise
        self._logins += 1
        return login, ok

    def _verify(self, answer: object, now: float, peer: str | None) -> tuple[Login, dict[str, Any]]:
        what = "auth answer"
        claimed = answer.get("user") if isinstance(answer, dict) else None
        hint = claimed if type(claimed) is str and len(claimed) <= MAX_NAME else None
        fields = _fields(answer, ("user", "server_nonce", "client_nonce", "mac"), what, peer, hint)
        user = _name(fields["user"], "user", what, peer, None)
        server_nonce = _nonce(fields["server_nonce"], "server_nonce", what, peer, user)
        client_nonce = _nonce(fields["client_nonce"], "client_nonce", what, peer, user)
        mac = _nonce(fields["mac"], "mac", what, peer, user)
        issued = self._pending.pop(server_nonce, None)
        self._expire(now)
        if issued is None:
            if server_nonce in self._used:
                raise AuthError(
                    REPLAYED, "this challenge was already answered", peer=peer, user=user
                )
            raise AuthError(
                UNKNOWN_CHALLENGE,
                "no such challenge pending (never issued here, long expired, or the "
                "server restarted); ask for a new one",
                peer=peer,
                user=user,
            )
        self._used[server_nonce] = issued
        age = now - issued
        if age > self.max_age:
            raise AuthError(
                EXPIRED,
                f"answered {age:.1f} s after the challenge (limit {self.max_age:g} s)",
                peer=peer,
                user=user,
            )
        secret = self._lookup(user)
        if secret is None:
            raise AuthError(UNKNOWN_USER, "no secret is known for this user", peer=peer, user=user)
        expected = _client_mac(
            secret, server_nonce, client_nonce, user, self.purpose, self.server_id
        )
        if not hmac.compare_digest(expected, mac):
            raise AuthError(
                WRONG_SECRET,
                "the answer does not match the user's secret (wrong secret file, "
                "or the answer was altered)",
                peer=peer,
                user=user,
            )
        ok = {
            "server_id": self.server_id,
            "user": user,
            "client_nonce": client_nonce,
            "mac": _server_mac(
                secret, server_nonce, client_nonce, user, self.purpose, self.server_id
            ),
        }
        return Login(user=user, server_id=self.server_id, purpose=self.purpose, peer=peer), ok

    def _expire(self, now: float) -> None:
        keep_pending = now - 2 * self.max_age  # so a late answer is told "expired"
        while self._pending:
            nonce, issued = next(iter(self._pending.items()))
            if issued >= keep_pending:
                break
            del self._pending[nonce]
        while self._used and (
            len(self._used) > self.max_pending or next(iter(self._used.values())) < keep_pending
        ):
            self._used.popitem(last=False)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            challenges_issued=self._issued,
            challenges_pending=len(self._pending),
            logins=self._logins,
            refusals=dict(self._refusals),
        )


class ClientHandshake:
    """The client side of one handshake: :meth:`answer` a challenge, :meth:`confirm` the ok.

    ``purpose`` must match the server's; ``server_id``, if given, is the server
    the client means to reach (anything else is refused). Single use: make a
    new one per connection attempt.
    """

    def __init__(
        self,
        user: str,
        secret: bytes,
        *,
        purpose: str = "control",
        server_id: str | None = None,
        rng: Rng = secrets.token_bytes,
    ) -> None:
        _name(user, "user", "client", None, None)
        if type(secret) is not bytes or not secret:
            raise ValueError("secret must be non-empty bytes")
        self.user = user
        self.purpose = purpose
        self.expected_server = server_id
        self._secret = secret
        self._rng = rng
        self._state = "new"
        self._server_nonce = b""
        self._client_nonce = b""
        self._server_id = ""

    @property
    def state(self) -> str:
        """``"new"``, ``"answered"``, ``"done"`` or ``"failed"``."""
        return self._state

    def answer(self, challenge: object, *, peer: str | None = None) -> dict[str, Any]:
        """The ``auth_answer`` dict for a server's challenge: ``{"user", "server_nonce",
        "client_nonce", "mac"}``."""
        if self._state != "new":
            raise self._fail(OUT_OF_ORDER, f"a challenge arrived in state {self._state}", peer)
        what = "auth challenge"
        try:
            fields = _fields(
                challenge, ("scheme", "server_id", "server_nonce", "purpose"), what, peer, self.user
            )
            if type(fields["scheme"]) is not str or fields["scheme"] != SCHEME:
                raise AuthError(
                    MALFORMED,
                    f"unsupported scheme {fields['scheme']!r:.60} (this side speaks {SCHEME})",
                    peer=peer,
                    user=self.user,
                )
            server_id = _name(fields["server_id"], "server_id", what, peer, self.user)
            purpose = _name(fields["purpose"], "purpose", what, peer, self.user)
            server_nonce = _nonce(fields["server_nonce"], "server_nonce", what, peer, self.user)
        except AuthError:
            self._state = "failed"
            raise
        if self.expected_server is not None and server_id != self.expected_server:
            raise self._fail(
                WRONG_SERVER, f"expected server {self.expected_server!r}, got {server_id!r}", peer
            )
        if purpose != self.purpose:
            raise self._fail(
                WRONG_PURPOSE,
                f"server asks for {purpose!r}, this client wants {self.purpose!r}",
                peer,
            )
        self._server_id = server_id
        self._server_nonce = server_nonce
        self._client_nonce = _random(self._rng, NONCE_SIZE)
        self._state = "answered"
        return {
            "user": self.user,
            "server_nonce": server_nonce,
            "client_nonce": self._client_nonce,
            "mac": _client_mac(
                self._secret, server_nonce, self._client_nonce, self.user, purpose, server_id
            ),
        }

    def confirm(self, ok: object, *, peer: str | None = None) -> Login:
        """Check the server's ``auth_ok``: it must prove it knows the same secret."""
        if self._state != "answered":
            raise self._fail(OUT_OF_ORDER, f"an auth ok arrived in state {self._state}", peer)
        try:
            fields = _fields(
                ok, ("server_id", "user", "client_nonce", "mac"), "auth ok", peer, self.user
            )
            mac = _nonce(fields["mac"], "mac", "auth ok", peer, self.user)
            server_id = _name(fields["server_id"], "server_id", "auth ok", peer, self.user)
            user = _name(fields["user"], "user", "auth ok", peer, self.user)
            client_nonce = _nonce(
                fields["client_nonce"], "client_nonce", "auth ok", peer, self.user
            )
        except AuthError:
            self._state = "failed"
            raise
        if server_id != self._server_id or user != self.user or client_nonce != self._client_nonce:
            raise self._fail(IMPOSTOR, "the auth ok does not belong to this handshake", peer)
        expected = _server_mac(
            self._secret,
            self._server_nonce,
            self._client_nonce,
            self.user,
            self.purpose,
            self._server_id,
        )
        if not hmac.compare_digest(expected, mac):
            raise self._fail(
                IMPOSTOR,
                f"server {self._server_id!r} could not prove it knows this user's secret "
                "(an impostor daemon, or the two secret files differ)",
                peer,
            )
        self._state = "done"
        return Login(user=self.user, server_id=self._server_id, purpose=self.purpose, peer=peer)

    def _fail(self, reason: str, detail: str, peer: str | None) -> AuthError:
        self._state = "failed"
        return AuthError(reason, detail, peer=peer, user=self.user)


# ----------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionToken:
    """Proof that ``user`` logged in and owns ``session``; presented by data connections.

    ``mac`` is HMAC-SHA256(key, "pyproof-token-v1" | user | session | nonce)
    under a key only the daemon and the session hold. Secret parts are left
    out of ``repr`` so tokens do not end up in logs.
    """

    user: str
    session: str
    nonce: bytes = dataclasses.field(repr=False)
    mac: bytes = dataclasses.field(repr=False)

    def to_wire(self) -> dict[str, Any]:
        """``{"user", "session", "nonce", "mac"}``, CBOR-able."""
        return {"user": self.user, "session": self.session, "nonce": self.nonce, "mac": self.mac}

    @classmethod
    def from_wire(cls, value: object, *, peer: str | None = None) -> SessionToken:
        """Parse a token received from a peer; :class:`AuthError` if malformed."""
        what = "session token"
        claimed = value.get("user") if isinstance(value, dict) else None
        hint = claimed if type(claimed) is str and len(claimed) <= MAX_NAME else None
        fields = _fields(value, ("user", "session", "nonce", "mac"), what, peer, hint)
        user = _name(fields["user"], "user", what, peer, None)
        return cls(
            user=user,
            session=_name(fields["session"], "session", what, peer, user),
            nonce=_nonce(fields["nonce"], "nonce", what, peer, user),
            mac=_nonce(fields["mac"], "mac", what, peer, user),
        )


def issue_token(
    key: bytes, user: str, session: str, *, rng: Rng = secrets.token_bytes
) -> SessionToken:
    """A new token for ``user``'s ``session`` (after a successful login)."""
    _name(user, "user", "token", None, None)
    _name(session, "session", "token", None, None)
    nonce = _random(rng, NONCE_SIZE)
    return SessionToken(
        user=user, session=session, nonce=nonce, mac=_mac(key, _TOKEN_SCHEME, user, session, nonce)
    )


def verify_token(
    key: bytes,
    token: SessionToken | object,
    *,
    session: str,
    user: str | None = None,
    peer: str | None = None,
) -> SessionToken:
    """Check a token presented for ``session`` (and ``user``, if known); return it.

    Raises :class:`AuthError`: ``"wrong session"`` for a token of another
    session or user, ``"bad token"`` for a forged or altered one,
    ``"malformed"`` for anything that is not a token.
    """
    if not isinstance(token, SessionToken):
        token = SessionToken.from_wire(token, peer=peer)
    expected = _mac(key, _TOKEN_SCHEME, token.user, token.session, token.nonce)
    if not hmac.compare_digest(expected, token.mac):
        raise AuthError(
            BAD_TOKEN,
            f"token for session {token.session!r} is forged or altered",
            peer=peer,
            user=token.user,
        )
    if token.session != session:
        raise AuthError(
            WRONG_SESSION,
            f"token is for session {token.session!r}, not {session!r}",
            peer=peer,
            user=token.user,
        )
    if user is not None and token.user != user:
        raise AuthError(
            WRONG_SESSION, f"session {session!r} belongs to {user!r}", peer=peer, user=token.user
        )
    return token


# ----------------------------------------------------------------------- roles


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated user; ``admin`` may act on every user's sessions."""

    name: str
    admin: bool = False


def may_act_on(user: User, owner: str) -> bool:
    """True if ``user`` may see, attach to or kill a session owned by ``owner``."""
    return user.admin or user.name == owner
