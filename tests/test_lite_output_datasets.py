"""Files written by selectors on the workers (ctx.output_file) become a dataset: each
selected event exactly once, even when a worker dies mid-query; nothing of a failed
query stays behind."""

from __future__ import annotations

import glob
import os
import signal
import time

import numpy as np
import pytest
import uproot

import pyproof
from pyproof.actors.output_files import query_output_dir
from pyproof.client.control import current_user
from pyproof.datasets import Catalog
from pyproof.datasets.cli import default_catalog_path
from tests.conftest import data_file
from tests.daemon_helpers import Background
from tests.sample_selectors import zmumu_mass
from tests.test_lite_faults import worker_pids

CUT = 60.0


def zmumu() -> str:
    return data_file("uproot-Zmumu.root")


def reference_selected(path: str, cut: float = CUT) -> tuple[int, float]:
    """Events above the cut and the sum of their masses, by a sequential uproot loop."""
    events = uproot.open(path)["events"].arrays(library="ak")
    mass = zmumu_mass(events)
    return int(np.sum(mass > cut)), float(mass[mass > cut].sum())


def files_on_disk(directory: str) -> set[str]:
    return {os.path.join(root, name) for root, _, names in os.walk(directory) for name in names}


def written_by(session_id: str, worker: str, pid: int, count: int, timeout: float) -> list[str]:
    """The files worker process `pid` wrote in the session's queries (its batch directories,
    worker_loop.py), once there are at least `count` or `timeout` seconds have passed."""
    pattern = os.path.join(query_output_dir(session_id, "*"), f"{worker}-{pid}-b*", "*")
    deadline = time.monotonic() + timeout
    while True:
        files = glob.glob(pattern)
        if len(files) >= count or time.monotonic() > deadline:
            return files
        time.sleep(0.01)


def test_files_written_on_workers_become_a_dataset_holding_each_selected_event_once(session):
    result = session.process("tests.sample_selectors:Skim", dataset=f"{zmumu()}:events",
                             inputs={"cut": CUT}, packetizer="basic",
                             packetizer_params={"packet_entries": 250},
                             output_dataset="skim", output_overwrite=True, progress=False)
    expected, mass_sum = reference_selected(zmumu())
    me = f"/default/{current_user()}"
    assert result.output_dataset == f"{me}/skim"
    assert result.outputs["selected"] == expected
    registered = result.lineage["output_dataset"]
    assert registered["entries"] == expected and registered["bad"] == []
    directory = query_output_dir(session.id, result.query)
    assert result.output_files == registered["files"]
    assert set(result.output_files) == files_on_disk(directory)
    # the new dataset, processed again by name, holds exactly the selected events
    again = session.process("tests.sample_selectors:ZmumuMass", dataset="skim", progress=False)
    assert again.stats.entries == again.outputs["n"] == expected
    assert again.outputs["sum_mass"][0] == pytest.approx(mass_sum, rel=1e-12)
    with Catalog(default_catalog_path(), user=current_user()) as catalog:
        info = catalog.info("skim")
    assert info.n_files == len(result.output_files) and info.total_entries == expected


def test_a_worker_killed_mid_query_leaves_no_duplicate_entries_in_the_output_dataset():
    expected, mass_sum = reference_selected(zmumu())
    with pyproof.connect("lite://?workers=2") as session:
        pids = worker_pids(session)
        # 0.26 s a packet: the query runs some 5 s on two workers, 9 s on one (worker-1 may
        # join late: a fresh worker imports uproot and co. first, seconds under load)
        running = Background(session.process, "tests.sample_selectors:Skim",
                             dataset=f"{zmumu()}:events",
                             inputs={"cut": CUT, "per_entry": 0.004},
                             packetizer="basic", packetizer_params={"packet_entries": 64},
                             output_dataset="skim_killed", output_overwrite=True,
                             progress=False)
        # worker-1 holds written, undelivered packets: its own files say so. The query's
        # count of entries did not: with worker-1 still warming up, worker-0 alone made it
        # (PYPROOF_TEST_WARMUP_DELAY=3 failed the old test every time: 'came too late')
        written = written_by(session.id, "worker-1", pids["worker-1"], 2, timeout=30)
        assert len(written) >= 2, f"worker-1 wrote {len(written)} files in 30 s"
        os.kill(pids["worker-1"], signal.SIGKILL)
        result = running.result(60)
        assert result.lineage["requeued"], "the kill came too late to test anything"
        assert result.outputs["selected"] == expected
        # the dead worker's files are gone; what is left is exactly what was registered
        directory = query_output_dir(session.id, result.query)
        assert files_on_disk(directory) == set(result.output_files)
        again = session.process("tests.sample_selectors:ZmumuMass", dataset="skim_killed",
                                progress=False)
        assert again.stats.entries == expected
        assert again.outputs["sum_mass"][0] == pytest.approx(mass_sum, rel=1e-12)


def test_a_failed_query_removes_the_files_its_workers_wrote_and_registers_nothing(session):
    with pytest.raises(pyproof.QueryError, match=r"the skim divided by zero"):
        session.process("tests.sample_selectors:SkimThenRaise", dataset=f"{zmumu()}:events",
                        inputs={"cut": CUT, "bad_entry": 1500}, packetizer="basic",
                        packetizer_params={"packet_entries": 250},
                        output_dataset="skim_failed", progress=False)
    # a worker still inside a packet when the query failed removes its files when it
    # hears of the failure (at the end of that packet)
    directory = query_output_dir(session.id, session.last_query)
    deadline = time.monotonic() + 10
    while os.path.exists(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(directory)
    with Catalog(default_catalog_path(), user=current_user()) as catalog:
        assert not catalog.exists("skim_failed")


def test_an_existing_output_dataset_is_refused_before_any_packet_unless_overwritten(session):
    with Catalog(default_catalog_path(), user=current_user()) as catalog:
        catalog.register("taken", [zmumu()], tree="events", overwrite=True)
    with pytest.raises(pyproof.QueryError, match=r"taken.* exists"):
        session.process("tests.sample_selectors:Skim", dataset=f"{zmumu()}:events",
                        output_dataset="taken", progress=False)
    assert not os.path.exists(query_output_dir(session.id, session.last_query))


def test_bad_output_dataset_names_and_file_names_are_clear_errors(session):
    with pytest.raises(pyproof.InputError, match=r"output_dataset='a/b/c/d'"):
        session.process("tests.sample_selectors:Skim", dataset=f"{zmumu()}:events",
                        output_dataset="a/b/c/d", progress=False)
    with pytest.raises(pyproof.QueryError, match=r"plain file name"):
        session.process("tests.sample_selectors:BadOutputName", dataset=f"{zmumu()}:events",
                        progress=False)
    with pytest.raises(pyproof.QueryError, match=r"wrote no files"):
        session.process("tests.sample_selectors:ZmumuMass", dataset=f"{zmumu()}:events",
                        output_dataset="nothing", progress=False)
