"""A host daemon stopping while a worker's request waits on a silent master.

The cluster endpoint's threads call `Forwarder.forward`, which waits for the
session master's reply for up to the data timeout. The endpoint's close joins
those threads (for up to `CLOSE_TIMEOUT`). `close_host_links` closes the
forwarder first, so the wait ends at once with a refusal and the endpoint's
threads are free when it closes: a stopping host daemon does not sit out the
join, and no thread is left in the socket.
"""

from __future__ import annotations

import threading
import time

import pynng

from pyproof.actors.host_links import (
    ClusterClient,
    ClusterEndpoint,
    ClusterError,
    Forwarder,
    close_host_links,
)
from pyproof.hosts.channel import ChannelServer, worker_key
from pyproof.transport import sealing
from pyproof.transport.server import CLOSE_TIMEOUT


def test_a_stopping_host_ends_a_forward_waiting_on_a_silent_master_at_once(tmp_path):
    master_address = f"ipc://{tmp_path}/master.sock"
    secret = b"s" * 32
    with pynng.Rep0(listen=master_address, recv_timeout=10_000) as silent_master:
        forwarder = Forwarder(secret, lambda sid: master_address)
        endpoint = ClusterEndpoint(
            f"ipc://{tmp_path}/cluster.sock", ChannelServer("m", secret),
            lambda name, kind, body, peer: forwarder.forward(body["session"], body["sealed"]))
        client = ClusterClient(endpoint.address, "h2", secret, timeout=10.0)
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(client.call("data", {"session": "sess1", "sealed": sealing.seal(
                    worker_key(secret, "sess1"), b"frame")}))
            except ClusterError as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert silent_master.recv() == b"frame"  # a cluster thread now waits in forward()
        began = time.monotonic()
        close_host_links(forwarder=forwarder, endpoint=endpoint)
        took = time.monotonic() - began
        threads = [t for t in threading.enumerate() if t.name.startswith("cluster-")]
        caller.join(11.0)
        client.close()
    assert took < CLOSE_TIMEOUT, f"close waited {took:.2f} s for a thread in forward()"
    assert not [t for t in threads if t.is_alive()], "a cluster thread outlived the close"
    assert not caller.is_alive()
