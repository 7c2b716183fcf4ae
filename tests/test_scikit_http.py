"""Remote files over HTTP: a lite query reads a ROOT file from a web server with range
requests, as it would an `https://` dataset, and equals a local sequential uproot loop.

The server is tests/http_range_server.py on 127.0.0.1 (tests use the loopback only),
plain http: https is the same uproot/fsspec source with TLS, which would need a
certificate here.
"""

from __future__ import annotations

import os

import awkward as ak
import hist
import pytest
import uproot

import pyproof
from tests.conftest import data_file
from tests.http_range_server import RangeServer
from tests.sample_selectors import ZmumuMass


@pytest.fixture
def server():
    s = RangeServer(os.path.dirname(data_file("uproot-Zmumu.root")))
    yield s
    s.close()


def test_a_lite_query_reads_a_root_file_over_http_with_range_requests(session, server):
    url = server.url("uproot-Zmumu.root")
    result = session.process(ZmumuMass, dataset=f"{url}:events", progress=False,
                             packetizer="basic", packetizer_params={"packet_entries": 500})
    # the reference: a local, sequential uproot loop over the same file
    events = uproot.open(data_file("uproot-Zmumu.root"))["events"].arrays(["M"])
    reference = result.outputs["mass"].copy().reset()
    reference.fill(ak.to_numpy(events.M))
    assert isinstance(result.outputs["mass"], hist.Hist)
    assert result.outputs["mass"] == reference
    assert result.stats.entries == 2304 and result.stats.bytes_read > 0
    assert [e["file"] for e in result.lineage["elements"]] == [url]
    # the workers read it by ranges, never as a whole download
    assert server.ranges > 0 and server.whole == 0


def test_a_file_the_server_does_not_have_is_named(session, server):
    url = server.url("nowhere.root")
    with pytest.raises(pyproof.ProofError, match=r"nowhere\.root"):
        session.process(ZmumuMass, dataset=f"{url}:events", progress=False)
