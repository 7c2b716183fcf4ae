"""Who may reach what: logins, ownership, listening sockets, and hostile bytes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

import pynng
import pytest

import pyproof
from pyproof.client.control import ControlClient, RequestRefused
from pyproof.supervision.process_tree import session_members
from pyproof.transport import auth
from pyproof.transport.frames import encode_frame
from tests.conftest import data_file
from tests.daemon_helpers import Daemon

pytestmark = pytest.mark.slow  # a long module: started first (conftest)


@pytest.fixture
def daemon(tmp_path):
    users = tmp_path / "users"
    users.mkdir(mode=0o700)
    auth.write_secret(users / "alice", b"a" * 32)
    auth.write_secret(users / "bob", b"b" * 32)
    d = Daemon(users_dir=str(users))
    yield d
    d.stop()


def control(daemon, user: str, secret: bytes) -> ControlClient:
    return ControlClient(f"tcp://127.0.0.1:{daemon.port}", user=user, secret=secret,
                         attempt_timeout=2.0)


def tree_sessions(tree: dict) -> list[str]:
    (sessions,) = [c for c in tree["children"] if c["id"] == "sessions"]
    return [c["id"] for c in sessions["tree"]["children"]]


def test_a_wrong_secret_is_refused_and_the_refusal_is_logged_with_the_peer(daemon):
    mallory = control(daemon, "alice", b"x" * 32)
    try:
        with pytest.raises(RequestRefused, match=r"refused our login: .*wrong secret"):
            mallory.call("status", deadline=5)
    finally:
        mallory.close()
    with open(os.path.join(daemon.info.log_dir, "gateway.jsonl")) as f:
        refusals = [line for line in f if "auth_refused" in line]
    assert refusals and "wrong secret" in refusals[-1] and "127.0.0.1:" in refusals[-1]


def test_requests_without_a_login_are_refused(daemon):
    with pynng.Req0(recv_timeout=5000) as raw:
        raw.dial(f"tcp://127.0.0.1:{daemon.port}", block=True)
        raw.send(encode_frame("status", {}))
        reply = raw.recv()
    assert b"not authenticated" in reply


def test_a_user_cannot_use_or_kill_another_users_session(daemon):
    alice = control(daemon, "alice", b"a" * 32)
    bob = control(daemon, "bob", b"b" * 32)
    try:
        session = alice.call("open_session", {"workers": 1})["session"]
        for kind in ("session_status", "close_session", "fetch_result"):
            with pytest.raises(RequestRefused, match=r"belongs to another user"):
                bob.call(kind, {"query": "q"}, session=session, deadline=5)
        assert session not in bob.call("status")["sessions"]
        assert session in alice.call("status")["sessions"]
        # the daemon's owner is an admin and sees every session
        assert session in daemon.control.call("status")["sessions"]
        # so it is in the live tree (proofctl tree): the owner's and an admin's, not bob's
        assert session in tree_sessions(alice.call("tree")["tree"])
        assert session in tree_sessions(daemon.control.call("tree")["tree"])
        assert session not in tree_sessions(bob.call("tree")["tree"])
        alice.call("close_session", session=session)
    finally:
        alice.close()
        bob.close()


def test_a_replayed_login_answer_is_refused(daemon):
    with pynng.Req0(recv_timeout=5000) as raw:
        raw.dial(f"tcp://127.0.0.1:{daemon.port}", block=True)
        raw.send(encode_frame(auth.AUTH_CHALLENGE, {}))
        from pyproof.transport.frames import decode_frame

        challenge = decode_frame(raw.recv()).payload
        answer = auth.ClientHandshake("alice", b"a" * 32).answer(challenge)
        raw.send(encode_frame(auth.AUTH_ANSWER, answer))
        assert decode_frame(raw.recv()).type == auth.AUTH_OK
        raw.send(encode_frame(auth.AUTH_ANSWER, answer))
        assert "replayed challenge" in decode_frame(raw.recv()).payload["message"]


def listening_sockets(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by `pids`."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:
                    continue
                host_hex, port_hex = local.split(":")
                raw = bytes.fromhex(host_hex)
                if family == socket.AF_INET:
                    host = socket.inet_ntop(family, raw[::-1])
                else:
                    host = socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1]
                                                             for i in range(0, 16, 4)))
                found.append((host, int(port_hex, 16)))
    return found


def test_nothing_of_a_running_daemon_listens_beyond_loopback(daemon):
    with pyproof.connect(f"{daemon.url}?workers=2&connection=dial") as session:
        session.process("tests.sample_selectors:ZmumuMass",
                        dataset=data_file("uproot-Zmumu.root") + ":events", progress=False)
        pids = {daemon.info.pid}
        for sid in daemon.info.thespian_sessions:
            pids.update(session_members(sid))
        sockets = listening_sockets(pids)
        assert len(sockets) >= 3  # Thespian admin and actors, gateway, session outbox
        assert all(host in ("127.0.0.1", "::1") for host, _ in sockets), sockets
        ports = {port for _, port in sockets}
        assert daemon.port in ports


def test_hostile_bytes_never_take_the_gateway_down(daemon):
    rng = random.Random(7)
    honest = encode_frame("status", {})
    samples = [b"", b"\xff" * 10, honest[:-3], honest + b"x", encode_frame("status", [1, 2]),
               encode_frame("open_session", {"workers": "many"}),
               encode_frame("start_query", {"query": 1}, session="nope"),
               b"\xd9\xd9\xf7" + bytes(rng.getrandbits(8) for _ in range(64))]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(40)]
    with pynng.Req0(recv_timeout=5000) as raw:
        raw.dial(f"tcp://127.0.0.1:{daemon.port}", block=True)
        for sample in samples:
            raw.send(sample)
            assert raw.recv()  # an error frame, never silence
    before = daemon.pids()["gateway"]
    # an honest client is still served by the same gateway process
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        assert session.id
    assert daemon.pids()["gateway"] == before


def test_hostile_bytes_to_the_master_do_not_disturb_a_query(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        address = session.status()["master"]["address"]
        rng = random.Random(11)
        with pynng.Req0(recv_timeout=5000) as raw:
            raw.dial(address, block=True)
            for _ in range(30):
                raw.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
                assert raw.recv()
            raw.send(encode_frame("next", {"worker": "worker-0", "pid": 1, "query": "nope"}))
            assert raw.recv()
        result = session.process("tests.sample_selectors:ZmumuMass",
                                 dataset=data_file("uproot-Zmumu.root") + ":events",
                                 progress=False)
        assert result.outputs["n"] == 2304


def test_plain_tcp_cannot_talk_to_thespian_from_outside(daemon):
    """Thespian's pickle ports are on loopback only: connecting to the host's
    other addresses is refused."""
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    pids = {daemon.info.pid}
    for sid in daemon.info.thespian_sessions:
        pids.update(session_members(sid))
    ports = {port for _, port in listening_sockets(pids)}
    for address in addresses:
        if address.startswith("127.") or ":" in address:
            continue
        for port in ports:
            with socket.socket() as s:
                s.settimeout(1.0)
                assert s.connect_ex((address, port)) != 0, (address, port)


PROBE = """
import encodings.idna, os, socket, sys  # idna: imported before dropping root
if len(sys.argv) > 2:
    os.setgid(65534)
    os.setuid(65534)
results = {}
for port in map(int, sys.argv[1].split(",")):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.settimeout(1.5)
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        results[port] = closed
print(results)
"""


def actor_ports(daemon) -> list[int]:
    """The ports Thespian's admin and actors accept on (not the gateway's nng port; not
    the daemon main's client socket, which accepts only while the daemon asks)."""
    pids: set[int] = set()
    for sid in daemon.info.thespian_sessions:
        pids.update(session_members(sid))
    mains = {port for _, port in listening_sockets({daemon.info.pid})}  # inherited by all
    return sorted({port for _, port in listening_sockets(pids)} - mains - {daemon.port})


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_local_user_is_cut_off_from_thespian_before_it_can_say_anything(daemon):
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        ports = actor_ports(daemon)
        assert len(ports) >= 4  # the admin, root, sessions, gateway, a session's actors

        def probe(*other_user: str) -> dict:
            done = subprocess.run([sys.executable, "-c", PROBE, ",".join(map(str, ports)),
                                   *other_user], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return eval(done.stdout)  # a dict of port -> closed, printed by PROBE

        # nobody (uid 65534): every Thespian socket hangs up at once, unread
        assert all(probe("as-nobody").values())
        # the daemon's own user is heard (Thespian waits for its message)
        assert not any(probe().values())
        # and the daemon works on
        assert session.process("tests.sample_selectors:Cycles", cycles=100,
                               progress=False).stats.entries == 100
