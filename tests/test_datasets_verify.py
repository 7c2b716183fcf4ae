"""Verification of files and datasets, and associated (friend) files."""

from __future__ import annotations

import pickle
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
import xxhash

from pyproof.datasets.catalog import Catalog
from pyproof.datasets.errors import BadFilesError, FriendMismatchError
from pyproof.datasets.records import FileRecord
from pyproof.datasets.verify import verify_dataset, verify_file, verify_record

DATA = Path(__file__).resolve().parent / "data"
HZZ_UUID = "76a647e8-03ee-11e2-9717-668ba983beef"


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(tmp_path / "catalog.sqlite", user="alice", group="cms", host="node0")
    yield catalog
    catalog.close()


def copy(name: str, to: Path, as_name: str | None = None) -> str:
    target = to / (as_name or name)
    shutil.copyfile(DATA / name, target)
    return str(target)


def truncate(path: str, keep: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(keep)


def pickling_map(function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    """A map that sends the function and each task through pickle, as a process pool would."""
    for item in items:
        yield pickle.loads(pickle.dumps(function))(pickle.loads(pickle.dumps(item)))


def write_tree(path: Path, tree: str, n: int, branch: str = "x", **more: int) -> str:
    with uproot.recreate(path) as out:
        out.mktree(tree, {branch: np.float64})
        out[tree].extend({branch: np.arange(n, dtype=np.float64)})
        for name, count in more.items():
            out.mktree(name, {"y": np.int64})
            out[name].extend({"y": np.arange(count)})
    return str(path)


# ---- one file ------------------------------------------------------------------------


def test_a_good_file_gets_entries_size_checksum_uuid_and_staged(tmp_path: Path) -> None:
    path = copy("uproot-HZZ.root", tmp_path)
    record = verify_file(path, "events", now=5.0)
    digest = xxhash.xxh3_64(Path(path).read_bytes()).hexdigest()
    assert record == FileRecord(
        url=path, tree="events", entries=2421, size=217945, checksum=f"xxh3_64:{digest}",
        uuid=HZZ_UUID, staged=True, verified_at=5.0, trees=(("events", 2421),),
    )
    assert record.ok and record.status() == "ok"


def test_without_a_tree_the_only_tree_is_picked(tmp_path: Path) -> None:
    record = verify_file(copy("uproot-small-flat-tree.root", tmp_path))
    assert (record.tree, record.entries) == ("tree", 100)


def test_trees_in_directories_and_rntuples_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.root"
    with uproot.recreate(path) as out:
        out.mktree("dir/t", {"x": np.int32})
        out["dir/t"].extend({"x": np.arange(4, dtype=np.int32)})
        out["nt"] = {"y": np.arange(6)}
    record = verify_file(str(path), "dir/t")
    assert record.trees == (("dir/t", 4), ("nt", 6))
    assert verify_file(str(path)).problem == "no tree named and the file has 2 trees (dir/t, nt)"


@pytest.mark.parametrize("keep", [50, 1000, 100_000, 217_845])
def test_a_truncated_file_is_corrupt(tmp_path: Path, keep: int) -> None:
    path = copy("uproot-HZZ.root", tmp_path)
    truncate(path, keep)
    record = verify_file(path, "events")
    assert record.corrupt and not record.staged
    if keep == 217_845:  # still opens: only the header's recorded length tells
        assert record.problem == "truncated: 217845 bytes of 217945"
    else:
        assert record.problem.startswith("cannot read: OSError: ")


def test_a_file_that_is_not_root_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "text.root"
    path.write_text("hello\n" * 100)
    record = verify_file(str(path), "events")
    assert record.corrupt and record.problem.startswith("cannot read: ")


def test_a_missing_file_is_missing(tmp_path: Path) -> None:
    record = verify_file(str(tmp_path / "nope.root"), "events")
    assert (record.missing, record.problem, record.status()) == (True, "no such file", "missing")


def test_a_missing_protocol_plugin_is_raised_not_blamed_on_the_file() -> None:
    try:
        import fsspec_xrootd  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"fsspec-xrootd"):
            verify_file("root://localhost:1094//data/f.root", "events")
    else:
        pytest.skip("fsspec-xrootd is installed")


def test_a_wrong_tree_name_lists_the_trees_there_are(tmp_path: Path) -> None:
    record = verify_file(copy("uproot-Zmumu.root", tmp_path), "Events")
    assert record.wrong_tree
    assert record.problem == "no tree 'Events' (has: events)"
    assert record.trees == (("events", 2304),)


def test_deep_verification_finds_a_damaged_basket(tmp_path: Path) -> None:
    path = copy("uproot-Zmumu.root", tmp_path)
    with open(path, "r+b") as handle:
        handle.seek(60_000)
        handle.write(bytes(64))
    assert verify_file(path, "events", checksum=False).ok
    deep = verify_file(path, "events", checksum=False, deep=True)
    assert deep.corrupt and "decompressing" in deep.problem


# ---- a dataset -----------------------------------------------------------------------


@pytest.fixture
def mixed(cat: Catalog, tmp_path: Path) -> tuple[Catalog, dict[str, str]]:
    """Good files with a truncated one, a missing one and one with another tree."""
    paths = {
        "good1": copy("uproot-HZZ.root", tmp_path),
        "good2": copy("uproot-HZZ-lz4.root", tmp_path),
        "truncated": copy("uproot-HZZ.root", tmp_path, "cut.root"),
        "missing": copy("uproot-Zmumu.root", tmp_path, "gone.root"),
        "wrongtree": copy("uproot-small-flat-tree.root", tmp_path),
        "good3": copy("uproot-Zmumu-zstd.root", tmp_path),
    }
    cat.register("mixed#events", list(paths.values()))
    truncate(paths["truncated"], 150_000)
    Path(paths["missing"]).unlink()
    return cat, paths


def test_verify_dataset_marks_and_summarises_the_bad_files(
    mixed: tuple[Catalog, dict[str, str]],
) -> None:
    cat, paths = mixed
    summary = verify_dataset(cat, "mixed", map=pickling_map)
    assert (summary.files, summary.ok, summary.missing, summary.corrupt, summary.wrong_tree) == (
        6, 3, 1, 1, 1
    )
    assert summary.entries == 2421 * 2 + 2304
    assert [(url, status) for url, status, _ in summary.problems] == [
        (paths["truncated"], "corrupt"), (paths["missing"], "missing"),
        (paths["wrongtree"], "wrong-tree"),
    ]
    assert summary.problems[2][2] == "no tree 'events' (has: tree)"
    info = cat.info("mixed")
    assert (info.n_bad, info.n_staged, info.n_unverified, info.total_entries) == (3, 3, 0, 7146)
    stored = {f.url: f for f in cat.show("mixed").files}
    assert stored[paths["good1"]].checksum.startswith("xxh3_64:")
    assert stored[paths["good1"]].tree is None  # the dataset's default tree applies


def test_processing_a_verified_dataset_fails_or_skips_naming_the_bad_files(
    mixed: tuple[Catalog, dict[str, str]],
) -> None:
    cat, paths = mixed
    verify_dataset(cat, "mixed")
    with pytest.raises(BadFilesError) as caught:
        cat.resolve("mixed")
    assert str(caught.value).startswith(
        f"3 bad file(s): {paths['truncated']}: cannot read: OSError: expected Chunk"
    )
    assert f"{paths['missing']}: no such file; {paths['wrongtree']}: no tree 'events'" in str(
        caught.value
    )
    resolved = cat.resolve("mixed", bad_files="skip")
    assert [e.url for e in resolved.elements] == [paths["good1"], paths["good2"], paths["good3"]]
    assert resolved.total_entries == 7146
    # the small-flat-tree file is fine when its own tree is asked for
    assert [e.url for e in cat.resolve("mixed#tree", bad_files="skip").elements] == [
        paths["wrongtree"]
    ]


def test_verify_dataset_takes_any_map_like_executor(
    mixed: tuple[Catalog, dict[str, str]],
) -> None:
    cat, _ = mixed
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = verify_dataset(cat, "mixed", map=pool.map)
    assert verify_dataset(cat, "mixed") == threaded


def test_register_with_verify_checks_the_new_files_only(
    cat: Catalog, tmp_path: Path
) -> None:
    first = copy("uproot-HZZ.root", tmp_path)
    second = copy("uproot-Zmumu.root", tmp_path)
    calls: list[str] = []

    def counting_map(function: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            calls.append(task[0].url)
            yield function(task)

    info = cat.register("v#events", [first], verify=True, map=counting_map)
    assert (info.n_staged, info.total_entries) == (1, 2421)
    info = cat.register("v", [first, second], update=True, verify=True, map=counting_map)
    assert calls == [first, second]
    assert (info.n_staged, info.total_entries) == (2, 2421 + 2304)


def test_verify_record_keeps_the_host_and_a_default_tree(tmp_path: Path) -> None:
    record = FileRecord(url=copy("uproot-HZZ.root", tmp_path), host="disk7")
    checked = verify_record(record, "events", checksum=False)
    assert (checked.host, checked.tree, checked.entries) == ("disk7", None, 2421)


# ---- associated (friend) files -------------------------------------------------------


def test_a_friend_file_with_the_same_entries_verifies(tmp_path: Path) -> None:
    main = write_tree(tmp_path / "f.root", "events", 10)
    friend = write_tree(tmp_path / "f_friend.root", "calib", 10, branch="y")
    record = verify_file(main, "events", friend_url=friend, friend_tree="calib")
    assert record.ok and (record.entries, record.friend_entries) == (10, 10)


def test_a_second_tree_in_the_same_file_is_a_friend(tmp_path: Path) -> None:
    main = write_tree(tmp_path / "f.root", "events", 10, calib=9)
    record = verify_file(main, "events", friend_tree="calib")
    assert record.friend_mismatch
    assert record.problem == (
        f"associated file mismatch: {main!r} tree 'events' has 10 entries but {main!r} tree "
        "'calib' has 9"
    )


def test_a_missing_friend_file_is_named(tmp_path: Path) -> None:
    main = write_tree(tmp_path / "f.root", "events", 10)
    gone = str(tmp_path / "gone.root")
    record = verify_file(main, "events", friend_url=gone)
    assert record.friend_mismatch and record.problem == f"associated file {gone!r} is missing"


def test_registering_a_friend_with_another_entry_count_is_refused(
    cat: Catalog, tmp_path: Path
) -> None:
    main = write_tree(tmp_path / "f.root", "events", 10)
    friend = write_tree(tmp_path / "f_friend.root", "calib", 12, branch="y")
    message = (
        f"associated file mismatch: {main!r} tree 'events' has 10 entries but {friend!r} tree "
        "'calib' has 12"
    )
    with pytest.raises(FriendMismatchError, match=f"^{re.escape(message)}$"):
        cat.register(
            "fr#events", [FileRecord(url=main, friend_url=friend, friend_tree="calib")],
            verify=True,
        )
    assert not cat.exists("fr")
    with pytest.raises(FriendMismatchError, match=f"^{re.escape(message)}$"):
        cat.register(
            "fr#events",
            [FileRecord(url=main, entries=10, friend_url=friend, friend_tree="calib",
                        friend_entries=12)],
            trust=True,
        )


def test_a_friend_that_changes_later_is_found_by_verification(
    cat: Catalog, tmp_path: Path
) -> None:
    main = write_tree(tmp_path / "f.root", "events", 10)
    friend = write_tree(tmp_path / "f_friend.root", "calib", 10, branch="y")
    cat.register(
        "fr#events", [FileRecord(url=main, friend_url=friend, friend_tree="calib")], verify=True
    )
    (element,) = cat.resolve("fr").elements
    assert (element.friend_url, element.friend_tree, element.entries) == (friend, "calib", 10)
    write_tree(tmp_path / "f_friend.root", "calib", 11, branch="y")
    summary = verify_dataset(cat, "fr")
    assert summary.friend_mismatch == 1
    assert "has 10 entries but" in summary.problems[0][2]
    with pytest.raises(BadFilesError, match=r"'calib' has 11; skip them"):
        cat.resolve("fr")
