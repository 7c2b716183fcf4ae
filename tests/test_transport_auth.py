"""Authentication: secret files, the mutual HMAC handshake, session tokens, roles."""

from __future__ import annotations

import os
import random
import socket
import stat
import threading

import pynng
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.transport import decode_frame, encode_frame
from pyproof.transport.auth import (
    AUTH_ANSWER,
    AUTH_CHALLENGE,
    AUTH_OK,
    AuthError,
    ClientHandshake,
    SecretFileError,
    ServerHandshake,
    SessionToken,
    User,
    default_secret_path,
    fresh_cluster_secret,
    issue_token,
    load_or_create_secret,
    may_act_on,
    read_secret,
    verify_token,
    write_secret,
)

ALICE = b"a" * 32
BOB = b"b" * 32
SECRETS = {"alice": ALICE, "bob": BOB}


def seeded(seed: int = 0):
    rng = random.Random(seed)
    return rng.randbytes


def server(**kwargs) -> ServerHandshake:
    kwargs.setdefault("rng", seeded(1))
    return ServerHandshake("proofd@host", SECRETS, **kwargs)


def client(user: str = "alice", secret: bytes = ALICE, **kwargs) -> ClientHandshake:
    kwargs.setdefault("rng", seeded(2))
    return ClientHandshake(user, secret, **kwargs)


def over_the_wire(kind: str, message: dict) -> object:
    """What the peer sees after the lead's shell sends the dict as a frame."""
    return decode_frame(encode_frame(kind, message)).payload


# ----------------------------------------------------------------------- handshake


def test_a_client_with_the_right_secret_logs_in_and_the_server_proves_itself():
    srv, cli = server(), client()
    challenge = over_the_wire(AUTH_CHALLENGE, srv.challenge(now=100.0))
    answer = over_the_wire(AUTH_ANSWER, cli.answer(challenge))
    login, ok = srv.verify(answer, now=101.0, peer="tcp://10.0.0.7:5555")
    assert login.user == "alice" and login.purpose == "control"
    assert login.peer == "tcp://10.0.0.7:5555"
    confirmed = cli.confirm(over_the_wire(AUTH_OK, ok))
    assert confirmed.server_id == "proofd@host" and cli.state == "done"
    stats = srv.statistics()
    assert (stats.logins, stats.challenges_pending, stats.refusals) == (1, 0, {})


def test_the_secret_never_travels():
    srv, cli = server(), client()
    challenge = srv.challenge(now=0.0)
    answer = cli.answer(challenge)
    _, ok = srv.verify(answer, now=0.0)
    for message, kind in ((challenge, AUTH_CHALLENGE), (answer, AUTH_ANSWER), (ok, AUTH_OK)):
        assert ALICE not in encode_frame(kind, message)


def test_a_wrong_secret_is_refused_naming_the_user_and_the_peer():
    srv, cli = server(), client(secret=b"x" * 32)
    answer = cli.answer(srv.challenge(now=0.0))
    with pytest.raises(
        AuthError,
        match=r"^authentication refused for user 'alice' from "
        r"tcp://1\.2\.3\.4:9: wrong secret: ",
    ) as info:
        srv.verify(answer, now=1.0, peer="tcp://1.2.3.4:9")
    assert info.value.reason == "wrong secret"
    assert srv.statistics().refusals == {"wrong secret": 1}


def test_a_replayed_answer_is_refused():
    srv = server()
    answer = client().answer(srv.challenge(now=0.0))
    srv.verify(answer, now=1.0)
    with pytest.raises(AuthError, match="replayed challenge") as info:
        srv.verify(answer, now=2.0, peer="tcp://evil:1")
    assert info.value.reason == "replayed challenge"


def test_a_failed_answer_still_uses_up_its_challenge():
    srv = server()
    challenge = srv.challenge(now=0.0)
    with pytest.raises(AuthError, match="wrong secret"):
        srv.verify(client(secret=b"x" * 32).answer(challenge), now=0.0)
    with pytest.raises(AuthError, match="replayed challenge"):
        srv.verify(client().answer(challenge), now=0.0)


def test_an_answer_after_max_age_is_refused_as_expired():
    srv = server(max_age=30.0)
    answer = client().answer(srv.challenge(now=0.0))
    with pytest.raises(AuthError, match=r"expired: answered 31\.0 s after the challenge"):
        srv.verify(answer, now=31.0)


def test_a_much_later_answer_is_refused_as_an_unknown_challenge():
    srv = server(max_age=30.0)
    answer = client().answer(srv.challenge(now=0.0))
    srv.challenge(now=1000.0)  # housekeeping forgets the old one
    with pytest.raises(AuthError, match="unknown challenge"):
        srv.verify(answer, now=1000.0)
    assert srv.statistics().challenges_pending == 1


def test_a_challenge_from_another_server_is_unknown_here():
    other = ServerHandshake("proofd@host", SECRETS, rng=seeded(99))
    answer = client().answer(other.challenge(now=0.0))
    with pytest.raises(AuthError, match="unknown challenge"):
        server().verify(answer, now=0.0)


def test_pending_challenges_are_bounded():
    srv = server(max_pending=3)
    first = client().answer(srv.challenge(now=0.0))
    for _ in range(3):
        srv.challenge(now=0.0)
    assert srv.statistics().challenges_pending == 3
    with pytest.raises(AuthError, match="unknown challenge"):
        srv.verify(first, now=0.0)


def test_a_tampered_user_name_is_refused():
    srv = server()
    answer = client().answer(srv.challenge(now=0.0))
    with pytest.raises(AuthError, match=r"^authentication refused for user 'bob'.*wrong secret"):
        srv.verify({**answer, "user": "bob"}, now=0.0)


def test_an_unknown_user_is_refused():
    srv = server()
    answer = client(user="mallory", secret=b"m" * 32).answer(srv.challenge(now=0.0))
    with pytest.raises(
        AuthError, match=r"^authentication refused for user 'mallory'.*unknown user"
    ):
        srv.verify(answer, now=0.0)


def test_a_lookup_function_serves_as_the_secret_table():
    srv = ServerHandshake("s", lambda user: ALICE if user == "alice" else None, rng=seeded(3))
    cli = ClientHandshake("alice", ALICE, server_id="s", rng=seeded(4))
    _, ok = srv.verify(cli.answer(srv.challenge(now=0.0)), now=0.0)
    assert cli.confirm(ok).user == "alice"


def test_an_impostor_server_without_the_secret_is_detected_by_the_client():
    impostor = ServerHandshake("proofd@host", {"alice": b"guess" * 8}, rng=seeded(5))
    cli = client()
    answer = cli.answer(impostor.challenge(now=0.0))
    with pytest.raises(AuthError, match=r"impostor server: server 'proofd@host' could not prove"):
        # the impostor cannot verify the answer, so it makes up an ok
        cli.confirm(
            {
                "server_id": "proofd@host",
                "user": "alice",
                "client_nonce": answer["client_nonce"],
                "mac": b"\0" * 32,
            }
        )
    assert cli.state == "failed"


def test_an_ok_from_another_handshake_is_refused_by_the_client():
    srv = server()
    first, second = client(rng=seeded(6)), client(rng=seeded(7))
    _, ok1 = srv.verify(first.answer(srv.challenge(now=0.0)), now=0.0)
    second.answer(srv.challenge(now=0.0))
    with pytest.raises(AuthError, match="impostor server"):
        second.confirm(ok1)


def test_a_client_refuses_an_unexpected_server_or_purpose():
    challenge = server().challenge(now=0.0)
    with pytest.raises(AuthError, match="wrong server: expected server 'other'"):
        client(server_id="other").answer(challenge)
    with pytest.raises(AuthError, match="wrong purpose"):
        client(purpose="data").answer(challenge)


def test_an_answer_made_for_another_purpose_is_refused():
    data = server(purpose="data")
    challenge = data.challenge(now=0.0)
    answer = client(purpose="data").answer(challenge)
    control = ServerHandshake("proofd@host", SECRETS, purpose="control", rng=seeded(1))
    control.challenge(now=0.0)  # same seeded nonce is pending here too
    with pytest.raises(AuthError, match="wrong secret"):
        control.verify(answer, now=0.0)


def test_client_steps_out_of_order_are_refused():
    cli = client()
    with pytest.raises(AuthError, match="out of order"):
        cli.confirm({})
    cli = client()
    srv = server()
    cli.answer(srv.challenge(now=0.0))
    with pytest.raises(AuthError, match="out of order"):
        cli.answer(srv.challenge(now=0.0))


# ----------------------------------------------------------------------- fuzz

cbor_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.binary(min_size=32, max_size=32)
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(), children, max_size=5)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "user",
        "server_nonce",
        "client_nonce",
        "mac",
        "scheme",
        "server_id",
        "purpose",
        "session",
        "nonce",
        "extra",
    ]
)
near_misses = st.dictionaries(field_names, cbor_values, max_size=6)
hostile = cbor_values | near_misses | st.binary(max_size=64)


@settings(max_examples=120, deadline=None)
@given(hostile)
def test_garbage_to_the_server_always_gives_an_auth_error(message):
    srv = server()
    srv.challenge(now=0.0)
    with pytest.raises(AuthError):
        srv.verify(message, now=0.0, peer="fuzz")


@settings(max_examples=80, deadline=None)
@given(field_names, cbor_values)
def test_a_valid_answer_with_one_field_replaced_gives_an_auth_error(name, value):
    srv = server()
    answer = client().answer(srv.challenge(now=0.0))
    if answer.get(name) == value:
        return
    with pytest.raises(AuthError):
        srv.verify({**answer, name: value}, now=0.0)


@settings(max_examples=120, deadline=None)
@given(hostile, hostile)
def test_garbage_to_the_client_always_gives_an_auth_error(challenge, ok):
    with pytest.raises(AuthError):
        client().answer(challenge)
    cli = client()
    cli.answer(server().challenge(now=0.0))
    with pytest.raises(AuthError):
        cli.confirm(ok)


@settings(max_examples=80, deadline=None)
@given(hostile)
def test_garbage_as_a_token_always_gives_an_auth_error(token):
    with pytest.raises(AuthError):
        verify_token(b"k" * 32, token, session="s1")


# ----------------------------------------------------------------------- tokens

KEY = b"k" * 32


def test_a_session_token_round_trips_and_verifies():
    token = issue_token(KEY, "alice", "s1", rng=seeded(8))
    wire = over_the_wire("hello", token.to_wire())
    assert verify_token(KEY, wire, session="s1", user="alice") == token
    assert "mac" not in repr(token).replace("SessionToken", "")


def test_a_token_for_another_users_session_is_refused():
    alices = issue_token(KEY, "alice", "s-alice", rng=seeded(9))
    with pytest.raises(
        AuthError,
        match=r"wrong session: token is for session 's-alice', "
        r"not 's-bob'",
    ):
        verify_token(KEY, alices, session="s-bob", peer="tcp://x:1")
    with pytest.raises(AuthError, match="bad token"):  # rewriting the session id breaks the mac
        verify_token(KEY, {**alices.to_wire(), "session": "s-bob"}, session="s-bob")
    with pytest.raises(AuthError, match="wrong session: session 's-alice' belongs to 'bob'"):
        verify_token(KEY, alices, session="s-alice", user="bob")


def test_a_token_under_another_key_is_refused():
    token = issue_token(b"other" * 8, "alice", "s1", rng=seeded(10))
    with pytest.raises(AuthError, match="bad token"):
        verify_token(KEY, token, session="s1")
    with pytest.raises(AuthError, match="malformed"):
        SessionToken.from_wire({"user": "alice"})


# ----------------------------------------------------------------------- secret files


def test_the_default_secret_lives_in_the_sandbox():
    assert default_secret_path() == default_secret_path().parent / "secret"
    assert str(default_secret_path()).startswith(os.environ["PYPROOF_SANDBOX"])


def test_a_secret_file_is_created_0600_on_first_use_and_reused(tmp_path):
    path = tmp_path / "home" / ".pyproof" / "secret"
    secret = load_or_create_secret(path, rng=seeded(11))
    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_secret(path) == secret
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_a_group_or_world_readable_secret_file_is_refused(tmp_path):
    path = tmp_path / "secret"
    write_secret(path, b"s" * 32)
    os.chmod(path, 0o644)
    with pytest.raises(
        SecretFileError,
        match=rf"^secret file {path} is readable by others \(mode 0644\); run: chmod 600 {path}$",
    ):
        load_or_create_secret(path)
    os.chmod(path, 0o600)
    assert read_secret(path) == b"s" * 32


def test_a_secret_file_with_junk_or_a_symlink_is_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("not hex")
    os.chmod(junk, 0o600)
    with pytest.raises(SecretFileError, match="does not hold a secret"):
        read_secret(junk)
    link = tmp_path / "link"
    link.symlink_to(junk)
    with pytest.raises(SecretFileError, match="is a symlink"):
        load_or_create_secret(link)


def test_write_secret_never_replaces_a_file(tmp_path):
    path = write_secret(tmp_path / "s", b"1" * 32)
    with pytest.raises(FileExistsError):
        write_secret(path, b"2" * 32)
    assert read_secret(path) == b"1" * 32


def test_each_lite_cluster_gets_a_fresh_secret(tmp_path):
    first, second = fresh_cluster_secret(), fresh_cluster_secret()
    assert len(first) == 32 and first != second
    path = write_secret(tmp_path / "cluster" / "secret", first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == first


# ----------------------------------------------------------------------- roles


def test_users_act_on_their_own_sessions_and_admins_on_all():
    alice, root = User("alice"), User("root", admin=True)
    assert may_act_on(alice, "alice")
    assert not may_act_on(alice, "bob")
    assert may_act_on(root, "bob") and may_act_on(root, "root")


# ----------------------------------------------------------------------- over nng


def test_the_handshake_runs_over_req_rep_frames_and_a_refusal_does_not_stop_the_server():
    srv = server()
    refusals: list[str] = []

    def serve(sock: pynng.Socket, requests: int) -> None:
        for _ in range(requests):
            frame = decode_frame(sock.recv())
            if frame.type == "auth_hello":
                reply = encode_frame(AUTH_CHALLENGE, srv.challenge(now=0.0))
            else:
                try:
                    _, ok = srv.verify(frame.payload, now=1.0, peer="tcp://127.0.0.1")
                    reply = encode_frame(AUTH_OK, ok)
                except AuthError as exc:
                    refusals.append(str(exc))  # the log line
                    reply = encode_frame("error", {"reason": exc.reason})
            sock.send(reply)

    def login(address: str, cli: ClientHandshake) -> object:
        with pynng.Req0(recv_timeout=2000, send_timeout=2000) as sock:
            sock.dial(address, block=True)
            sock.send(encode_frame("auth_hello", None))
            challenge = decode_frame(sock.recv()).payload
            sock.send(encode_frame(AUTH_ANSWER, cli.answer(challenge)))
            reply = decode_frame(sock.recv())
            return cli.confirm(reply.payload) if reply.type == AUTH_OK else reply.payload

    with pynng.Rep0(recv_timeout=2000, send_timeout=2000) as sock:
        port = socket.ntohs(sock.listen("tcp://127.0.0.1:0").local_address.port)
        thread = threading.Thread(target=serve, args=(sock, 4), daemon=True)
        thread.start()
        address = f"tcp://127.0.0.1:{port}"
        assert login(address, client(secret=b"x" * 32)) == {"reason": "wrong secret"}
        assert login(address, client(rng=seeded(12))).user == "alice"
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert len(refusals) == 1
    assert refusals[0].startswith("authentication refused for user 'alice' from tcp://127.0.0.1")
