"""Hosts on one machine: Linux network namespaces on a bridge, each with its own sandbox.

`NetnsHosts` (a context manager; the `netns_hosts` fixture below) creates a
bridge in the root namespace with address ``198.19.K.1/24`` (198.18.0.0/15 is
the range reserved for network benchmarking; K is the first one free from a
start derived from the test process's pid, chosen under a lock file so that
concurrent runs and pytest-xdist workers do not meet) and, per host, a
namespace with loopback up and one veth end on the bridge at ``198.19.K.N``.
There is no route anywhere else. Each host has its own ``HOME`` and
``PYPROOF_SANDBOX`` (holding a copy of the client's secret, as a shared home
would), so its proofd keeps its own run and log directories.

`close()` always runs: it SIGKILLs every process in each namespace (the
whole host dies, as a machine losing power would), deletes the namespaces,
the veth pairs and the bridge, and raises if any of them is still there.
The processes are our descendants (the test process is a subreaper), so
conftest's leak check sees any that survive.

Tests skip, saying why, where namespaces cannot be created (not root, no
`ip`, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyproof.supervision.process_tree import reap_children
from pyproof.transport import auth

IP_TIMEOUT = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                          check=check)


def why_no_namespaces() -> str | None:
    """None if this process may create network namespaces, else the reason it may not."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    probe = f"ppprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    address: str  # its IPv4 address on the bridge
    home: Path
    veth: str
    env: dict[str, str] = field(default_factory=dict)

    def url(self, port: int) -> str:
        return f"proof://{self.address}:{port}"


SUBNET_LOCK = "\0pyproof-netns-subnets"  # an abstract Unix socket name (see subnet_lock)
SUBNET_LOCK_WAIT = 60.0


@contextlib.contextmanager
def subnet_lock(wait: float = SUBNET_LOCK_WAIT):
    """Held by one process of this host (this network namespace) at a time: a Unix socket
    bound to an abstract name. The kernel frees the name when the socket closes or its
    process dies, so no lock file is left behind in /tmp and a killed holder never
    leaves it taken. Waits up to `wait` s."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    end = time.monotonic() + wait
    try:
        while True:
            try:
                sock.bind(SUBNET_LOCK)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > end:
                    raise
                time.sleep(0.02)
        yield
    finally:
        sock.close()


def _free_subnet(start: int) -> int:
    """The first K from `start` (1..250, wrapping) with no 198.19.K.x address on any link
    of the root namespace. Call with SUBNET_LOCK held, and add the bridge's address before
    letting it go: concurrent test processes (pytest-xdist workers, other runs) each get
    their own subnet, even when their pids agree modulo 250."""
    used = _ip("-4", "-o", "addr", "show", check=False).stdout
    for k in [1 + (start - 1 + i) % 250 for i in range(250)]:
        if f" 198.19.{k}." not in used:
            return k
    raise AssertionError("no free 198.19.K.0/24 subnet for netns hosts (all 250 in use)")


class NetnsHosts:
    def __init__(self, base: Path) -> None:
        tag = f"{os.getpid() % 100000:05d}"
        self.tag = tag
        self.bridge = f"ppb{tag}"
        self.base = base
        self.hosts: dict[str, Host] = {}
        self._closed = False
        with subnet_lock():
            self.subnet = f"198.19.{_free_subnet(1 + os.getpid() % 250)}"
            self.client_address = f"{self.subnet}.1"  # the root namespace, on the bridge
            _ip("link", "add", self.bridge, "type", "bridge")
            try:
                _ip("addr", "add", f"{self.client_address}/24", "dev", self.bridge)
                _ip("link", "set", self.bridge, "up")
            except BaseException:
                self.close()
                raise

    def add(self, name: str, env: dict[str, str] | None = None) -> Host:
        """A new host: a namespace on the bridge, with its own HOME and sandbox (and `env`,
        e.g. its TLS settings, over the test's environment)."""
        index = len(self.hosts) + 2
        host = Host(name=name, netns=f"pp{self.tag}{name}"[:15],
                    address=f"{self.subnet}.{index}", home=self.base / name,
                    veth=f"ppv{self.tag}{index}"[:15])
        self.hosts[name] = host
        _ip("netns", "add", host.netns)
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
            "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        sandbox = host.home / "sandbox"
        sandbox.mkdir(parents=True, mode=0o700)
        # the same user on every host: the client's secret, as a shared home would hold it
        auth.write_secret(sandbox / "secret", auth.load_or_create_secret(
            auth.default_secret_path()))
        host.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PYPROOF_") or k == "PYPROOF_TEST_HOOKS"}
        host.env.update(HOME=str(host.home), PYPROOF_SANDBOX=str(sandbox), **(env or {}))
        return host

    def run(self, host: Host, *argv: str, timeout: float = 90.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command on `host` (in its namespace, with its environment)."""
        done = subprocess.run(["ip", "netns", "exec", host.netns, *argv], env=host.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} on {host.name} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def proofctl(self, host: Host, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(host, sys.executable, "-m", "pyproof.cli.main", *args, **kw)

    def pids(self, host: Host) -> list[int]:
        done = _ip("netns", "pids", host.netns, check=False)
        return [int(p) for p in done.stdout.split()]

    def kill(self, host: Host, timeout: float = 10.0) -> None:
        """SIGKILL every process of the host (the machine dies) and wait until none is left."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids(host)
            if not pids:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of host {host.name} survive SIGKILL: {pids}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            reap_children()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for host in self.hosts.values():
            try:
                self.kill(host)
            except AssertionError as exc:
                errors.append(str(exc))
            _ip("link", "del", host.veth, check=False)
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        reap_children()
        names = _ip("netns", "list", check=False).stdout
        links = _ip("link", "show", check=False).stdout
        for host in self.hosts.values():
            if host.netns in names.split():
                errors.append(f"namespace {host.netns} is still there")
            if f" {host.veth}@" in links or f" {host.veth}:" in links:
                errors.append(f"link {host.veth} is still there")
        if f" {self.bridge}:" in links:
            errors.append(f"bridge {self.bridge} is still there")
        if errors:
            raise AssertionError("netns hosts not cleaned up: " + "; ".join(errors))

    def __enter__(self) -> NetnsHosts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def netns_hosts():
    reason = why_no_namespaces()
    if reason:
        pytest.skip(f"hosts as network namespaces: {reason}")
    # a short base: a proofd's ipc socket paths must fit in 107 bytes
    base = Path(tempfile.mkdtemp(prefix="pph-", dir="/tmp"))
    try:
        with NetnsHosts(base) as hosts:
            yield hosts
    finally:
        if os.environ.get("PYPROOF_KEEP_HOSTS"):  # debugging: keep the hosts' logs
            print(f"netns hosts' homes kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
