"""Dataset names, specs, entry selections and patterns (pyproof.datasets.names)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.datasets.errors import DatasetNameError
from pyproof.datasets.names import (
    COMMON,
    DatasetName,
    DatasetRef,
    DatasetSpec,
    EntrySelection,
    NamePattern,
    parse_entries,
    parse_name,
    parse_pattern,
    parse_spec,
)

ME = {"group": "cms", "user": "alice"}


def spec(text: str) -> DatasetSpec:
    return parse_spec(text, **ME)


# ---- strategies ---------------------------------------------------------------------

_FIRST = "abcxyzABCXYZ0189_"
components = st.builds(
    str.__add__, st.sampled_from(_FIRST), st.text(alphabet=_FIRST + ".-", max_size=20)
)
tree_segments = st.text(alphabet=_FIRST + ".;:+-", min_size=1, max_size=12)


@st.composite
def dataset_names(draw: st.DrawFn) -> DatasetName:
    if draw(st.booleans()):
        return DatasetName(group=COMMON, user=COMMON, name=draw(components))
    group = draw(components.filter(lambda c: c != COMMON))
    user = draw(components.filter(lambda c: c != COMMON))
    return DatasetName(group=group, user=user, name=draw(components))


@st.composite
def entry_selections(draw: st.DrawFn) -> EntrySelection:
    ranges = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, 10_000))
        stop = draw(st.one_of(st.none(), st.integers(start + 1, start + 10_000)))
        ranges.append((start, stop))
    return EntrySelection(tuple(ranges))


@st.composite
def refs(draw: st.DrawFn) -> DatasetRef:
    tree = draw(st.one_of(st.none(), st.lists(tree_segments, min_size=1, max_size=3)))
    return DatasetRef(
        name=draw(dataset_names()),
        tree=None if tree is None else "/".join(tree),
        entries=draw(st.one_of(st.none(), entry_selections())),
    )


specs = st.builds(
    DatasetSpec,
    parts=st.lists(st.lists(refs(), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3)
    .map(tuple),
)


# ---- round trips --------------------------------------------------------------------


@settings(deadline=None)
@given(specs)
def test_a_formatted_spec_parses_back_to_the_same_spec(value: DatasetSpec) -> None:
    text = str(value)
    assert parse_spec(text, **ME) == value
    assert str(parse_spec(text, **ME)) == text


@given(dataset_names())
def test_a_full_name_parses_back_whatever_the_callers_identity(value: DatasetName) -> None:
    assert parse_name(value.path, group="other", user="someone") == value


@given(entry_selections())
def test_an_entry_selection_round_trips_through_its_text(value: EntrySelection) -> None:
    assert parse_entries(str(value)) == value


@given(entry_selections(), st.integers(0, 30_000))
def test_clipped_ranges_are_sorted_disjoint_and_inside_the_total(
    value: EntrySelection, total: int
) -> None:
    clipped = value.clip(total)
    previous_stop = -1
    for start, stop in clipped:
        assert 0 <= start < stop <= total
        assert start > previous_stop
        previous_stop = stop
    assert value.count(total) == sum(b - a for a, b in clipped)


@given(st.lists(st.integers(0, 200), min_size=1, max_size=30))
def test_an_entry_list_selects_exactly_those_entries(entries: list[int]) -> None:
    value = EntrySelection.coerce(entries)
    selected = [n for start, stop in value.clip(1000) for n in range(start, stop)]
    assert selected == sorted(set(entries))


# ---- defaults, COMMON, trees, entries -----------------------------------------------


def test_a_bare_name_takes_the_callers_group_and_user() -> None:
    assert spec("higgs").refs[0].name == DatasetName(group="cms", user="alice", name="higgs")


def test_user_slash_name_takes_the_callers_group() -> None:
    assert spec("bob/zmm").refs[0].name == DatasetName(group="cms", user="bob", name="zmm")


def test_common_slash_name_is_the_common_area() -> None:
    assert spec("COMMON/ref").refs[0].name.path == "/COMMON/COMMON/ref"
    assert spec("/COMMON/COMMON/ref").refs[0].name.is_common


def test_tree_with_directory_and_entries() -> None:
    ref = spec("/cms/bob/zmm#dir/events?entries=0-99+500-").refs[0]
    assert ref.tree == "dir/events"
    assert ref.entries == EntrySelection(((0, 100), (500, None)))


def test_first_last_includes_both_ends_and_a_single_number_is_one_entry() -> None:
    assert parse_entries("10-19").ranges == ((10, 20),)
    assert parse_entries("7").ranges == ((7, 8),)
    assert parse_entries("3+1+2").ranges == ((1, 4),)


def test_entry_selection_coerces_api_arguments() -> None:
    assert EntrySelection.coerce(range(5, 10)).ranges == ((5, 10),)
    assert EntrySelection.coerce((5, None)).ranges == ((5, None),)
    assert EntrySelection.coerce("0-4").ranges == ((0, 5),)


def test_union_and_sequential_with_comma_binding_loosest() -> None:
    value = spec("a|b, c")
    assert value.sequential
    assert [[r.name.name for r in part] for part in value.parts] == [["a", "b"], ["c"]]
    assert not spec("a|b").sequential


# ---- errors name the bad part and the rule -------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a||b", "bad dataset name 'a||b' at '': each dataset between '|' or ',' needs a name"),
        (
            "a b",
            "bad dataset name 'a b' at 'a b': a group, user or name starts with a letter, "
            "digit or '_' and has only letters, digits, '_', '.' and '-' (at most 128 "
            "characters)",
        ),
        (
            "/cms/x",
            "bad dataset name '/cms/x' at '/cms/x': a dataset is 'name', 'user/name' or "
            "'/group/user/name'",
        ),
        (
            "/COMMON/bob/x",
            "bad dataset name '/COMMON/bob/x' at '/COMMON/bob': the COMMON area is "
            "'/COMMON/COMMON/name' (or 'COMMON/name')",
        ),
        (
            "a#dir//t",
            "bad dataset name 'a#dir//t' at '#dir//t': a tree is '#name' or '#dir/name', each "
            "part without '/', '#', '?', ',', '|', '*' or spaces",
        ),
        ("a?first=3", "bad dataset name 'a?first=3' at '?first=3': the only option is "
         "'?entries=...'"),
        (
            "b|a?entries=x",
            "bad dataset name 'b|a?entries=x' at 'x': entries are 'N', 'first-last' (both "
            "included) or 'first-' (to the end), joined by '+', e.g. '?entries=0-99+500-'",
        ),
        (
            "a?entries=9-3",
            "bad dataset name 'a?entries=9-3' at '9-3': the last entry of a range is not "
            "before its first",
        ),
        (
            "a?entries=1,5",
            "bad dataset name 'a?entries=1,5' at ',5': entry list items are joined by '+', "
            "not ','",
        ),
        (
            "data*",
            "bad dataset name 'data*' at 'data*': '*' is for listing patterns, not for naming "
            "a dataset",
        ),
    ],
)
def test_bad_specs_raise_with_the_bad_part_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(DatasetNameError, match=f"^{re.escape(message)}$"):
        spec(text)


# ---- listing patterns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "/cms/alice/*"),
        ("*", "/cms/alice/*"),
        ("h*", "/cms/alice/h*"),
        ("*/z*", "/cms/*/z*"),
        ("/", "/*/*/*"),
        ("/atlas", "/atlas/*/*"),
        ("/atlas/", "/atlas/*/*"),
        ("/*/bob", "/*/bob/*"),
        ("/COMMON", "/COMMON/COMMON/*"),
        ("COMMON/*", "/COMMON/COMMON/*"),
    ],
)
def test_patterns_fill_in_the_callers_area_and_wildcards(text: str, expected: str) -> None:
    assert str(parse_pattern(text, **ME)) == expected


def test_a_pattern_matches_with_wildcards_in_any_component() -> None:
    pattern = NamePattern(group="*", user="b*", name="z*m")
    assert pattern.matches(DatasetName(group="cms", user="bob", name="zmm"))
    assert not pattern.matches(DatasetName(group="cms", user="alice", name="zmm"))


def test_a_bad_pattern_names_the_rule() -> None:
    with pytest.raises(DatasetNameError, match=r"^bad dataset name '/a/b/c/d' at '/a/b/c/d': "):
        parse_pattern("/a/b/c/d", **ME)
