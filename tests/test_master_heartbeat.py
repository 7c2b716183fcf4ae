"""Queries with no progress to send (queued, looking up) still speak on the data plane.

Real MasterPlane, real nng sockets; the client's side is a bare Pull0.
"""

from __future__ import annotations

import os
import time

import pynng

from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame


def test_a_queued_query_sends_heartbeats_to_its_client(tmp_path):
    client_address = f"ipc://{tmp_path}/client.ipc"
    with pynng.Pull0(listen=client_address, recv_timeout=500) as client:
        plane = MasterPlane(session_id="s1", address=f"ipc://{tmp_path}/master.ipc")
        try:
            plane.worker_joined(f"worker-0#{os.getpid()}")
            spec = QuerySpec(selector="m:S", cycles=1000, client_address=client_address)
            plane.start_query("q1", spec)
            plane.start_query("q2", spec)  # queued: q1 never ends (no worker asks)
            beats: list[dict] = []
            deadline = time.monotonic() + 5
            while len(beats) < 2 and time.monotonic() < deadline:
                try:
                    frame = decode_frame(client.recv())
                except pynng.Timeout:
                    continue
                if frame.type == p.HEARTBEAT and frame.payload["query"] == "q2":
                    beats.append(dict(frame.payload))
            assert beats == [{"query": "q2", "state": "queued"}] * 2
        finally:
            plane.close()
