"""Processing cataloged datasets on a real lite cluster: by name, unions, sequences,
entry selections, associated (friend) files and missing files."""

from __future__ import annotations

import hist
import numpy as np
import pytest
import uproot

import pyproof
from pyproof.client.control import current_user
from pyproof.datasets import Catalog
from pyproof.datasets.cli import default_catalog_path
from pyproof.datasets.records import FileRecord
from tests.conftest import data_file
from tests.sample_selectors import ZmumuMass, zmumu_mass


@pytest.fixture
def catalog(session):
    # the sandbox's catalog, which the cluster's master reads too; names are per test
    assert session.datasets.path == default_catalog_path()
    return Catalog(default_catalog_path(), user=current_user())


def zmumu_files() -> list[str]:
    return [data_file("uproot-Zmumu.root"), data_file("uproot-Zmumu-zstd.root")]


def test_a_dataset_by_name_gives_the_same_result_as_its_file_list(session, catalog):
    catalog.register("zmumu", zmumu_files(), tree="events", verify=True, overwrite=True)
    by_name = session.process("tests.sample_selectors:ZmumuMass", dataset="zmumu")
    by_files = session.process("tests.sample_selectors:ZmumuMass",
                               dataset=[f"{p}:events" for p in zmumu_files()])
    assert by_name.outputs["mass"] == by_files.outputs["mass"]
    assert by_name.stats.entries == 2 * 2304
    assert {e["dataset"] for e in by_name.lineage["elements"]} == {
        f"/default/{current_user()}/zmumu"}


def test_a_union_equals_the_concatenated_file_list(session, catalog):
    a, b = zmumu_files()
    catalog.register("a", [a], tree="events", overwrite=True)
    catalog.register("b", [b], tree="events", overwrite=True)
    union = session.process("tests.sample_selectors:ZmumuMass", dataset="a|b")
    files = session.process("tests.sample_selectors:ZmumuMass",
                            dataset=[f"{a}:events", f"{b}:events"])
    assert union.outputs["mass"] == files.outputs["mass"]
    assert union.stats.entries == 4608


def test_a_sequence_processes_datasets_one_after_the_other_and_tells_the_selector(
        session, catalog):
    a, b = zmumu_files()
    catalog.register("first", [a], tree="events", overwrite=True)
    catalog.register("second", [b], tree="events", overwrite=True)
    result = session.process("tests.sample_selectors:PerDataset", dataset="first,second",
                             packetizer="basic", packetizer_params={"packet_entries": 200})
    me = f"/default/{current_user()}"
    assert result.outputs["entries"] == {f"{me}/first": 2304, f"{me}/second": 2304}
    assert result.stats.entries == 4608


def test_an_entry_selection_of_a_dataset(session, catalog):
    catalog.register("zsel", zmumu_files(), tree="events", verify=True, overwrite=True)
    result = session.process("tests.sample_selectors:ZmumuMass", dataset="zsel?entries=100-2399")
    assert result.stats.entries == 2300
    assert result.outputs["n"] == 2300


def test_associated_friend_files_read_as_one_record(tmp_path, session, catalog):
    rng = np.random.default_rng(3)
    files, ref = [], hist.Hist.new.Reg(50, 0, 100, name="xy").Weight()
    for i, n in enumerate([1000, 1, 2500]):
        x, y = rng.uniform(0, 100, n), rng.uniform(0, 2, n)
        main, friend = tmp_path / f"main{i}.root", tmp_path / f"main{i}_friend.root"
        with uproot.recreate(main) as f:
            f["t"] = {"x": x}
        with uproot.recreate(friend) as f:
            f["calib"] = {"y": y}
        files.append(FileRecord(url=str(main), tree="t", friend_url=str(friend),
                                friend_tree="calib"))
        # the reference: a sequential loop reading both trees
        tx = uproot.open(main)["t"]["x"].array(library="np")
        ty = uproot.open(friend)["calib"]["y"].array(library="np")
        ref.fill(tx, weight=ty)
    catalog.register("withfriends", files, tree="t", verify=True, overwrite=True)
    result = session.process("tests.sample_selectors:WithFriend", dataset="withfriends")
    assert result.outputs["n"] == 3501
    np.testing.assert_allclose(result.outputs["xy"].values(), ref.values(), rtol=1e-12)
    np.testing.assert_allclose(result.outputs["xy"].variances(), ref.variances(), rtol=1e-12)


def test_missing_files_fail_the_query_or_are_skipped_and_listed(tmp_path, session):
    good = data_file("uproot-Zmumu.root")
    gone = str(tmp_path / "gone.root")
    broken = tmp_path / "broken.root"
    with open(good, "rb") as src:
        broken.write_bytes(src.read()[:5000])
    files = [f"{good}:events", f"{gone}:events", f"{broken}:events"]
    with pytest.raises(pyproof.QueryError, match=r"gone\.root"):
        session.process("tests.sample_selectors:ZmumuMass", dataset=files)
    result = session.process("tests.sample_selectors:ZmumuMass", dataset=files,
                             on_missing="skip")
    assert result.stats.entries == 2304
    assert sorted(m["file"] for m in result.missing) == sorted([gone, str(broken)])
    assert all(m["reason"] for m in result.missing)


def test_an_unknown_dataset_suggests_the_nearest_names(session, catalog):
    catalog.register("zmumu_2024", zmumu_files(), tree="events", overwrite=True)
    with pytest.raises(pyproof.QueryError, match=r"zmumu_2024"):
        session.process("tests.sample_selectors:ZmumuMass", dataset="zmumu_2042")


def test_a_dataset_registered_as_file_colon_tree_is_processed_by_name(session, catalog):
    path = data_file("uproot-Zmumu.root")
    catalog.register("ztree", [f"{path}:events"], verify=True, overwrite=True)
    result = session.process("tests.sample_selectors:ZmumuMass", dataset="ztree",
                             packetizer="basic", packetizer_params={"packet_entries": 500})
    with uproot.open(path) as f:  # the sequential reference: uproot alone, one pass
        mass = zmumu_mass(f["events"].arrays(ZmumuMass.branches, library="ak"))
    reference = hist.Hist.new.Reg(120, 0, 120, name="mass").Double().fill(mass[mass > 0])
    assert result.stats.entries == 2304
    np.testing.assert_array_equal(result.outputs["mass"].values(), reference.values())
    assert {(e["file"], e["tree"], e["dataset"]) for e in result.lineage["elements"]} == {
        (path, "events", f"/default/{current_user()}/ztree")}


def test_a_name_that_is_neither_a_dataset_nor_a_file_says_both_were_tried(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"no dataset '/default/.*/nowhere\.root'; .* \('nowhere\.root' "
                             r"was tried as a file too: no such file where the client runs"):
        session.process("tests.sample_selectors:ZmumuMass", dataset="nowhere.root")
