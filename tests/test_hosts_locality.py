"""Locality (hosts/locality.py): workers' hosts from their names, files' hosts from the
hosts' --data-path roots and dataset records; the adaptive packetizer wired with them."""

from __future__ import annotations

from types import SimpleNamespace

from pyproof.hosts.locality import (
    Layout,
    element_host,
    element_hosts,
    read_layout,
    standalone,
    worker_host,
    write_layout,
)
from pyproof.packetizer import AdaptivePacketizer, WorkRange

LAYOUT = Layout(host="h1", machine="box.example.org",
                roots={"h1": ("/data/h1",), "h2": ("/data/h2", "/mnt/shared"),
                       "h3": ("/mnt/shared/h3",)})


def test_a_workers_host_is_its_name_suffix_else_the_masters() -> None:
    assert worker_host("worker-3@h2", "h1") == "h2"
    assert worker_host("worker-3@h2#1234", "h1") == "h2"  # an incarnation on the data plane
    assert worker_host("worker-0#99", "h1") == "h1"
    assert worker_host("worker-0", "h1") == "h1"


def test_a_files_host_is_the_deepest_data_root_holding_it() -> None:
    assert element_host("/data/h2/run1/a.root", None, LAYOUT) == "h2"
    assert element_host("file:///data/h1/b.root", None, LAYOUT) == "h1"
    assert element_host("/mnt/shared/h3/c.root", None, LAYOUT) == "h3"  # deeper than h2's
    assert element_host("/mnt/shared/d.root", None, LAYOUT) == "h2"
    assert element_host("/data/h2", None, LAYOUT) == "h2"
    assert element_host("/data/h22/x.root", None, LAYOUT) is None  # a prefix is not a root


def test_else_the_records_host_with_this_machine_meaning_the_masters_host() -> None:
    assert element_host("/elsewhere/a.root", "h3", LAYOUT) == "h3"
    assert element_host("/elsewhere/a.root", "box.example.org", LAYOUT) == "h1"
    assert element_host("/elsewhere/a.root", "box", LAYOUT) == "h1"
    assert element_host("root://eos.cern.ch//a.root", "eos.cern.ch", LAYOUT) == "eos.cern.ch"
    assert element_host("/elsewhere/a.root", None, LAYOUT) is None
    # a data root wins over a record's default host
    assert element_host("/data/h3x/../h2/a.root", "box", LAYOUT) == "h2"


def test_element_hosts_maps_indices() -> None:
    elements = [SimpleNamespace(path="/data/h2/a.root", host=None),
                SimpleNamespace(path="/tmp/b.root", host=None),
                SimpleNamespace(path="/data/h1/c.root", host="box.example.org")]
    assert element_hosts(elements, LAYOUT) == {0: "h2", 2: "h1"}


def test_the_layout_file_round_trips_and_defaults_to_this_machine(tmp_path) -> None:
    assert read_layout(str(tmp_path)) == standalone()
    assert read_layout("") == standalone()
    write_layout(str(tmp_path), LAYOUT)
    assert read_layout(str(tmp_path)) == LAYOUT
    (tmp_path / "hosts-layout.json").write_text("{not json")
    assert read_layout(str(tmp_path)) == standalone()


def test_the_packetizer_gives_each_host_its_own_files_also_to_workers_joining_later() -> None:
    paths = ["/data/h1/a.root", "/data/h2/b.root", "/mnt/shared/h3/c.root"]
    elements = [SimpleNamespace(path=p, host=None) for p in paths]
    work = [WorkRange(element=i, entry_start=0, entry_stop=1000) for i in range(3)]
    workers = ["worker-0#10", "worker-0@h2#11"]
    p = AdaptivePacketizer(work, workers=3, element_hosts=element_hosts(elements, LAYOUT),
                           worker_hosts={w: worker_host(w, "h1") for w in workers},
                           local_host="h1")
    for w in workers:
        p.add_worker(w, 0.0)
    p.add_worker("worker-1@h3#12", 0.0)  # no worker_hosts entry: its name says h3
    assert p.next_packet("worker-1@h3#12", 0.0).element == 2
    assert p.next_packet("worker-0@h2#11", 0.0).element == 1
    assert p.next_packet("worker-0#10", 0.0).element == 0
