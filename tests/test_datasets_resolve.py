"""The pure resolver core: entry selections over files become exact local ranges."""

from __future__ import annotations

import importlib
import pkgutil

from hypothesis import given, settings
from hypothesis import strategies as st

import pyproof.datasets
from pyproof.datasets.names import EntrySelection
from pyproof.datasets.records import FileRecord
from pyproof.datasets.resolve import Selection, elements_for


@st.composite
def selections(draw: st.DrawFn) -> tuple[list[int], EntrySelection]:
    counts = draw(st.lists(st.integers(0, 50), min_size=1, max_size=8))
    ranges = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, sum(counts) + 10))
        stop = draw(st.one_of(st.none(), st.integers(start + 1, start + 60)))
        ranges.append((start, stop))
    return counts, EntrySelection(tuple(ranges))


@settings(max_examples=150, deadline=None)
@given(selections())
def test_elements_cover_exactly_the_selected_entries_once_in_order(
    case: tuple[list[int], EntrySelection],
) -> None:
    counts, entries = case
    files = [FileRecord(url=f"f{i}", entries=n) for i, n in enumerate(counts)]
    elements, skipped = elements_for(
        Selection(dataset="/g/u/d", default_tree="t", files=files, entries=entries)
    )
    assert skipped == []
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    covered = []
    for element in elements:
        assert 0 <= element.entry_start < element.entry_stop <= counts[element.file_index]
        assert element.entries == element.entry_stop - element.entry_start
        assert element.url == f"f{element.file_index}"
        base = offsets[element.file_index]
        covered += range(base + element.entry_start, base + element.entry_stop)
    wanted = [n for start, stop in entries.clip(sum(counts)) for n in range(start, stop)]
    assert covered == wanted


def test_a_friend_in_the_same_file_resolves_to_that_file() -> None:
    files = [FileRecord(url="f.root", entries=3, friend_tree="calib")]
    (element,), _ = elements_for(Selection(dataset="/g/u/d", default_tree="events", files=files))
    assert (element.friend_url, element.friend_tree) == ("f.root", "calib")


def test_the_package_exports_what_its_modules_define() -> None:
    for info in pkgutil.iter_modules(pyproof.datasets.__path__):
        importlib.import_module(f"pyproof.datasets.{info.name}")
    for name in pyproof.datasets.__all__:
        assert getattr(pyproof.datasets, name) is not None
    assert sorted(pyproof.datasets.__all__, key=str.lower) == sorted(
        set(pyproof.datasets.__all__), key=str.lower
    )
