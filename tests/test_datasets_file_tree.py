"""The one parser of `file.root:tree` (datasets.sources.split_file_tree), the choice
between files and catalog names (names_catalog), and the places that use them:
Catalog.register, file lists and session.process's dataset normalisation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproof.client.session import is_catalog_spec, parse_dataset
from pyproof.datasets import Catalog
from pyproof.datasets.errors import SourceError
from pyproof.datasets.sources import (
    expand,
    join_file_tree,
    names_catalog,
    read_list_file,
    split_file_tree,
)
from tests.conftest import data_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.root:events", ("a.root", "events")),
        ("/data/a.root:dir/events", ("/data/a.root", "dir/events")),
        ("/data/a.root:events;1", ("/data/a.root", "events;1")),
        ("/data/a.ROOT:events", ("/data/a.ROOT", "events")),
        ("/data/a.root.1:events", ("/data/a.root.1", "events")),
        ("root://host//a.root:events", ("root://host//a.root", "events")),
        ("root://host:1094//store/a.root:events", ("root://host:1094//store/a.root", "events")),
        ("https://host:8443/a.root:dir/t", ("https://host:8443/a.root", "dir/t")),
        ("file:///data/a.root:events", ("file:///data/a.root", "events")),
        ("C:\\data\\a.root:events", ("C:\\data\\a.root", "events")),
        # never split: no tree named
        ("a.root", ("a.root", None)),
        ("C:\\a.root", ("C:\\a.root", None)),
        ("C:/a.root", ("C:/a.root", None)),
        ("C:a.root", ("C:a.root", None)),
        ("file:///C:/a.root", ("file:///C:/a.root", None)),
        ("root://host:1094", ("root://host:1094", None)),
        ("root://host:1094/", ("root://host:1094/", None)),
        ("root://host:1094//a.root", ("root://host:1094//a.root", None)),
        ("/data/run:2024/a.root", ("/data/run:2024/a.root", None)),
        ("/data/x:y/a.root", ("/data/x:y/a.root", None)),
        ("https://host/a.root?x=1:ev", ("https://host/a.root?x=1:ev", None)),
        ("a.root:", ("a.root:", None)),
        ("a.root:bad tree", ("a.root:bad tree", None)),
        ("a.root:/events", ("a.root:/events", None)),
        ("a.root:dir//events", ("a.root:dir//events", None)),
        ("mydata:events", ("mydata:events", None)),  # no suffix: give {path: tree}
        ("zmumu", ("zmumu", None)),
    ],
)
def test_split_file_tree(text: str, expected: tuple[str, str | None]) -> None:
    assert split_file_tree(text) == expected


_SEGMENT = st.text(st.sampled_from("abcXYZ019_-.;"), min_size=1, max_size=8)
_TREE = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)


@st.composite
def file_paths(draw: st.DrawFn, colons: bool = True) -> str:
    """A path or URL whose last component ends like a file.

    With `colons`, directory and file names may hold ':' and ' ' too; without,
    the only colons are a drive's, a URL scheme's and a port's.
    """
    extra = ": " if colons else ""
    dirs = draw(st.lists(st.text(st.sampled_from("abcXYZ019_-." + extra), min_size=1,
                                 max_size=8), max_size=3))
    stem = draw(st.text(st.sampled_from("abc019_-" + extra), min_size=1, max_size=6))
    name = stem + draw(st.sampled_from([".root", ".ROOT", ".root.1", ".h5"]))
    style = draw(st.sampled_from(["relative", "posix", "windows", "url", "file-url"]))
    if style == "relative":
        return "/".join([*dirs, name])
    if style == "posix":
        return "/" + "/".join([*dirs, name])
    if style == "windows":
        drive = draw(st.sampled_from("CDz"))
        return f"{drive}:\\" + "\\".join([*dirs, name])
    if style == "file-url":
        return "file:///" + "/".join([*dirs, name])
    scheme = draw(st.sampled_from(["root", "roots", "http", "https"]))
    port = draw(st.sampled_from(["", ":1094", ":8443"]))
    return f"{scheme}://host.cern.ch{port}//" + "/".join([*dirs, name])


@given(file_paths(), _TREE)
def test_a_file_and_tree_round_trip(path: str, tree: str) -> None:
    assert split_file_tree(join_file_tree(path, tree)) == (path, tree)


@given(file_paths(colons=False))
def test_a_file_alone_is_never_split_at_a_drive_scheme_or_port(path: str) -> None:
    assert split_file_tree(path) == (path, None)


@given(st.text(max_size=40))
def test_nothing_is_lost(text: str) -> None:
    path, tree = split_file_tree(text)
    assert join_file_tree(path, tree) == text
    assert tree is None or (tree and ":" not in tree)


def test_files_win_over_catalog_names() -> None:
    nothing = lambda _: False  # noqa: E731
    everything = lambda _: True  # noqa: E731
    assert names_catalog("zmumu", exists=nothing)
    assert names_catalog("zmumu.root", exists=nothing)  # a valid name, and no such file
    assert names_catalog("alice/zmumu|bob/zee,COMMON/x?entries=0-9", exists=nothing)
    assert names_catalog("zmumu#dir/events", exists=nothing)
    assert not names_catalog("zmumu", exists=everything)  # an existing file wins
    assert not names_catalog("zmumu.root:events", exists=nothing)
    assert not names_catalog("root://host//zmumu", exists=nothing)
    assert not names_catalog("file:///zmumu", exists=nothing)
    assert not names_catalog("/data/x.root", exists=nothing)  # not a valid name: a file
    assert not names_catalog("C:\\a.root", exists=nothing)


def test_session_reads_strings_with_the_same_parser(tmp_path: Path) -> None:
    here = os.path.abspath("a.root")
    assert parse_dataset("a.root:events") == [[here, "events"]]
    assert parse_dataset("root://h:1094//a.root:events") == [["root://h:1094//a.root", "events"]]
    assert parse_dataset(["a.root", {"b.root": "t"}]) == [
        [here, None], [os.path.abspath("b.root"), "t"]]
    # a directory with a colon is a path, not a tree (this used to be cut at the last ':')
    odd = tmp_path / "run:2024" / "a.root"
    assert parse_dataset(str(odd)) == [[str(odd), None]]
    assert is_catalog_spec("zmumu") and not is_catalog_spec(data_file("uproot-Zmumu.root"))
    assert not is_catalog_spec(str(odd) + ":events") and not is_catalog_spec(["zmumu"])


def test_register_stores_file_and_tree_separately(tmp_path: Path) -> None:
    zmumu = data_file("uproot-Zmumu.root")
    with Catalog(tmp_path / "cat.sqlite", user="alice", group="cms") as cat:
        cat.register("z", [f"{zmumu}:events"], verify=True)
        (record,) = cat.show("z").files
        assert (record.url, record.tree, record.entries, record.ok) == (
            zmumu, "events", 2304, True)
        resolution = cat.resolve("z")
    assert [(e.url, e.tree, e.entries) for e in resolution.elements] == [
        (zmumu, "events", 2304)]


def test_globs_and_urls_keep_their_tree(tmp_path: Path) -> None:
    for name in ("a.root", "b.root"):
        (tmp_path / name).write_bytes(b"")
    records = expand([f"{tmp_path}/*.root:events", "root://h:1094//x.root:dir/t"])
    assert [(r.url, r.tree) for r in records] == [
        (str(tmp_path / "a.root"), "events"), (str(tmp_path / "b.root"), "events"),
        ("root://h:1094//x.root", "dir/t")]


def test_a_file_list_may_name_trees_with_a_colon(tmp_path: Path) -> None:
    listing = tmp_path / "files.txt"
    listing.write_text("a.root:events\nb.root tree=t\nc.root:t tree=t\n")
    records = read_list_file(listing)
    assert [(os.path.basename(r.url), r.tree) for r in records] == [
        ("a.root", "events"), ("b.root", "t"), ("c.root", "t")]
    listing.write_text("a.root:events tree=other\n")
    with pytest.raises(SourceError, match=r"files\.txt:1: 'a\.root:events' names tree "
                                          r"'events' but tree=other; give the tree once"):
        read_list_file(listing)
