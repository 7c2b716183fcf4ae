"""The cluster channel: mutual HMAC on the cluster secret, then sealed, numbered frames."""

from __future__ import annotations

import pytest

from pyproof.hosts.channel import (
    ChannelClient,
    ChannelError,
    ChannelServer,
    worker_key,
)
from pyproof.transport import auth

SECRET = b"s" * 32
OTHER = b"o" * 32


def login(client: ChannelClient, server: ChannelServer, now: float = 0.0) -> None:
    client.confirm(server.accept(client.answer(server.challenge(now)), now))


def test_a_host_with_the_secret_logs_in_and_its_requests_and_answers_are_sealed():
    server, client = ChannelServer("master", SECRET), ChannelClient("h2", SECRET)
    login(client, server)
    assert client.server_id == "master"
    seq, payload = client.request("heartbeat", {"workers": 2})
    channel, name, kind, got, body = server.open(payload)
    assert (name, kind, got, body) == ("h2", "heartbeat", seq, {"workers": 2})
    assert client.reply(seq, server.seal_reply(channel, got, "ok", {"x": 1})) == ("ok", {"x": 1})


def test_a_host_with_a_wrong_secret_is_not_admitted():
    server, client = ChannelServer("master", SECRET), ChannelClient("h2", OTHER)
    with pytest.raises(auth.AuthError, match="does not match"):
        server.accept(client.answer(server.challenge(0.0)), 0.0)


def test_a_master_with_a_wrong_secret_is_not_believed():
    server, client = ChannelServer("master", OTHER), ChannelClient("h2", SECRET)
    answer = client.answer(server.challenge(0.0))
    # an impostor master cannot verify, so it cannot produce a valid ok either: forge one
    forged = {"ok": {"server_id": "master", "user": "h2", "client_nonce":
                     answer["client_nonce"], "mac": b"x" * 32}, "channel": "c"}
    with pytest.raises(auth.AuthError, match="could not prove"):
        client.confirm(forged)


def test_a_host_dialing_a_named_host_refuses_another_name():
    server, client = ChannelServer("h3", SECRET), ChannelClient("m", SECRET, server_id="h2")
    with pytest.raises(auth.AuthError, match="expected server 'h2', got 'h3'"):
        client.answer(server.challenge(0.0))


def test_tampered_replayed_and_unknown_channel_frames_are_refused():
    server, client = ChannelServer("master", SECRET), ChannelClient("h2", SECRET)
    login(client, server)
    seq, payload = client.request("announce", {"a": 1})
    tampered = {**payload, "sealed": payload["sealed"][:-1] + b"!"}
    with pytest.raises(ChannelError, match="bad seal"):
        server.open(tampered)
    server.open(payload)
    with pytest.raises(ChannelError, match=r"replayed: request number 1 is not above 1"):
        server.open(payload)
    with pytest.raises(ChannelError, match="unknown channel"):
        ChannelServer("master", SECRET).open(payload)  # a restarted master


def test_an_answer_to_another_request_or_a_reflected_request_is_refused():
    server, client = ChannelServer("master", SECRET), ChannelClient("h2", SECRET)
    login(client, server)
    s1, p1 = client.request("heartbeat", {})
    channel, *_ = server.open(p1)
    old = server.seal_reply(channel, s1, "ok", {})
    s2, p2 = client.request("heartbeat", {})
    server.open(p2)
    with pytest.raises(ChannelError, match="answer to request 1, expected 2"):
        client.reply(s2, old)
    with pytest.raises(ChannelError, match="reflected"):
        client.reply(s2, {"sealed": p2["sealed"]})  # our own request sent back


def test_two_channels_of_one_host_have_different_keys():
    server = ChannelServer("master", SECRET)
    a, b = ChannelClient("h2", SECRET), ChannelClient("h2", SECRET)
    login(a, server)
    login(b, server)
    _, payload = a.request("x", {})
    with pytest.raises(ChannelError, match="bad seal"):
        server.open({**payload, "channel": b.channel_id})


def test_worker_keys_differ_by_session_and_by_secret():
    assert worker_key(SECRET, "s1") != worker_key(SECRET, "s2")
    assert worker_key(SECRET, "s1") != worker_key(OTHER, "s1")
    assert worker_key(SECRET, "s1") == worker_key(SECRET, "s1")
