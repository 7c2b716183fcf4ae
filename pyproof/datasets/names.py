"""Dataset names, specs and listing patterns: parsing and formatting (pure, no I/O).

Grammar (PROOF's `[[/group/]user/]name[#[dir/]tree]`, plus entry selections
and several datasets at once)::

    spec      := part (',' part)*            sequential: one after the other
    part      := ref ('|' ref)*              union: one packetizer over all files
    ref       := path ['#' tree] ['?entries=' entries]
    path      := name | user '/' name | '/' group '/' user '/' name
    tree      := seg ('/' seg)*              e.g. 'events' or 'dir/events'
    entries   := item ('+' item)*
    item      := N | first '-' last | first '-'

A bare `name` or `user/name` takes the caller's own group (and user) as its
prefix. `COMMON` as user (or group) means the shared area `/COMMON/COMMON/`,
readable by all. Entry numbers count through the dataset's files in order;
`first-last` includes both ends (`0-99` is the half-open range `[0, 100)`),
`first-` runs to the end. Whitespace around `|` and `,` is ignored.

Listing patterns (`parse_pattern`) have the same path forms with `*`
wildcards in any component; missing trailing components of a `/group...`
pattern mean `*`, and an empty pattern lists the caller's own area.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import field
from fnmatch import fnmatchcase

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.datasets.errors import DatasetNameError

COMMON = "COMMON"
"""The group and user tag of the shared area `/COMMON/COMMON/`, readable by all."""

MAX_COMPONENT = 128

RULE_PATH = "a dataset is 'name', 'user/name' or '/group/user/name'"
RULE_COMPONENT = (
    "a group, user or name starts with a letter, digit or '_' and has only letters, "
    "digits, '_', '.' and '-' (at most 128 characters)"
)
RULE_COMMON = "the COMMON area is '/COMMON/COMMON/name' (or 'COMMON/name')"
RULE_TREE = (
    "a tree is '#name' or '#dir/name', each part without '/', '#', '?', ',', '|', '*' "
    "or spaces"
)
RULE_QUERY = "the only option is '?entries=...'"
RULE_ENTRIES = (
    "entries are 'N', 'first-last' (both included) or 'first-' (to the end), joined by "
    "'+', e.g. '?entries=0-99+500-'"
)
RULE_ENTRY_ORDER = "the last entry of a range is not before its first"
RULE_ENTRY_SEP = "entry list items are joined by '+', not ','"
RULE_EMPTY = "each dataset between '|' or ',' needs a name"
RULE_WILDCARD = "'*' is for listing patterns, not for naming a dataset"
RULE_PATTERN = (
    "a pattern is 'name', 'user/name' or '/group[/user[/name]]', components made of "
    "letters, digits, '_', '.', '-' and '*'"
)

_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_PATTERN_COMPONENT = re.compile(r"[A-Za-z0-9_.\-*]+")
_TREE_SEGMENT = re.compile(r"[^/#?,|*\s]+")
_ENTRY_ITEM = re.compile(r"(\d+)(?:(-)(\d*))?")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetName:
    """A full dataset name `/group/user/name`; `str()` gives that path."""

    group: str
    user: str
    name: str

    @property
    def path(self) -> str:
        return f"/{self.group}/{self.user}/{self.name}"

    @property
    def is_common(self) -> bool:
        return self.group == COMMON

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class EntrySelection:
    """Which entries of a dataset to process: sorted, disjoint half-open ranges.

    `ranges` holds `(start, stop)` pairs, `stop` exclusive or None for "to
    the end"; construction sorts and merges them, so equal selections compare
    equal. Entry numbers count through the dataset's files in order.
    """

    ranges: tuple[tuple[int, int | None], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", _normalize(self.ranges))

    @classmethod
    def coerce(cls, value: object) -> EntrySelection:
        """An EntrySelection from what an API caller may pass.

        Accepts an EntrySelection, the text form ('0-99+500-'), a `range` with
        step 1, a `(start, stop)` pair (stop exclusive or None) or an iterable
        of entry numbers.
        """
        if isinstance(value, EntrySelection):
            return value
        if isinstance(value, str):
            return parse_entries(value)
        if isinstance(value, range):
            if value.step != 1:
                raise ValueError(f"entries range {value!r} must have step 1")
            return cls(((value.start, value.stop),))
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], int)
            and (value[1] is None or isinstance(value[1], int))
        ):
            return cls(((value[0], value[1]),))
        if isinstance(value, Iterable):
            return cls(tuple((int(n), int(n) + 1) for n in value))
        raise TypeError(f"cannot make an entry selection from {value!r}")

    def clip(self, total: int) -> list[tuple[int, int]]:
        """The selected ranges within `[0, total)`, empty ones dropped."""
        out = []
        for start, stop in self.ranges:
            end = total if stop is None else min(stop, total)
            if start < end:
                out.append((start, end))
        return out

    def count(self, total: int) -> int:
        return sum(stop - start for start, stop in self.clip(total))

    def __str__(self) -> str:
        items = []
        for start, stop in self.ranges:
            if stop is None:
                items.append(f"{start}-")
            elif stop == start + 1:
                items.append(f"{start}")
            else:
                items.append(f"{start}-{stop - 1}")
        return "+".join(items)


def _normalize(
    ranges: Iterable[tuple[int, int | None]],
) -> tuple[tuple[int, int | None], ...]:
    checked = []
    for start, stop in ranges:
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"bad entry range [{start}, {stop}): need 0 <= start <= stop")
        if stop is None or stop > start:
            checked.append((start, stop))
    checked.sort(key=lambda r: r[0])
    merged: list[tuple[int, int | None]] = []
    for start, stop in checked:
        if merged:
            last_start, last_stop = merged[-1]
            if last_stop is None:
                continue
            if start <= last_stop:
                new_stop = None if stop is None else max(stop, last_stop)
                merged[-1] = (last_start, new_stop)
                continue
        merged.append((start, stop))
    if not merged:
        raise ValueError("an entry selection needs at least one entry")
    return tuple(merged)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetRef:
    """One dataset in a spec: its name, an optional tree and entry selection."""

    name: DatasetName
    tree: str | None = None
    entries: EntrySelection | None = None

    def __str__(self) -> str:
        text = self.name.path
        if self.tree is not None:
            text += f"#{self.tree}"
        if self.entries is not None:
            text += f"?entries={self.entries}"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSpec:
    """What to process: sequential parts, each a union of datasets.

    `a|b` is one part of two refs (one packetizer over both); `a,b` is two
    parts processed one after the other.
    """

    parts: tuple[tuple[DatasetRef, ...], ...] = field()

    def __post_init__(self) -> None:
        if not self.parts or not all(self.parts):
            raise ValueError("a dataset spec needs at least one dataset in each part")

    @property
    def sequential(self) -> bool:
        return len(self.parts) > 1

    @property
    def refs(self) -> tuple[DatasetRef, ...]:
        return tuple(ref for part in self.parts for ref in part)

    def __str__(self) -> str:
        return ",".join("|".join(str(ref) for ref in part) for part in self.parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class NamePattern:
    """A listing pattern: each component may hold `*` wildcards."""

    group: str
    user: str
    name: str

    def matches(self, name: DatasetName) -> bool:
        return (
            fnmatchcase(name.group, self.group)
            and fnmatchcase(name.user, self.user)
            and fnmatchcase(name.name, self.name)
        )

    def __str__(self) -> str:
        return f"/{self.group}/{self.user}/{self.name}"


def _check_component(text: str, part: str) -> str:
    if "*" in part:
        raise DatasetNameError(text, part, RULE_WILDCARD)
    if not _COMPONENT.fullmatch(part) or len(part) > MAX_COMPONENT:
        raise DatasetNameError(text, part, RULE_COMPONENT)
    return part


def _apply_common(text: str, group: str, user: str, explicit_group: bool) -> tuple[str, str]:
    if user == COMMON and not explicit_group:
        return COMMON, COMMON
    if (group == COMMON) != (user == COMMON):
        raise DatasetNameError(text, f"/{group}/{user}", RULE_COMMON)
    return group, user


def parse_name(text: str, *, group: str, user: str) -> DatasetName:
    """`name`, `user/name` or `/group/user/name` as a full DatasetName.

    `group` and `user` are the caller's own, the default prefix.
    """
    if text.startswith("/"):
        pieces = text[1:].split("/")
        if len(pieces) != 3:
            raise DatasetNameError(text, text, RULE_PATH)
        g, u, n = (_check_component(text, p) for p in pieces)
        g, u = _apply_common(text, g, u, explicit_group=True)
        return DatasetName(group=g, user=u, name=n)
    pieces = text.split("/")
    if len(pieces) == 1:
        return DatasetName(group=group, user=user, name=_check_component(text, pieces[0]))
    if len(pieces) == 2:
        u, n = (_check_component(text, p) for p in pieces)
        g, u = _apply_common(text, group, u, explicit_group=False)
        return DatasetName(group=g, user=u, name=n)
    raise DatasetNameError(text, text, RULE_PATH)


def parse_entries(text: str, *, spec: str | None = None) -> EntrySelection:
    """The text form of an entry selection ('0-99+500-'), see the module docstring."""
    where = text if spec is None else spec
    ranges: list[tuple[int, int | None]] = []
    for item in text.split("+"):
        match = _ENTRY_ITEM.fullmatch(item)
        if match is None:
            raise DatasetNameError(where, item, RULE_ENTRIES)
        first = int(match.group(1))
        if match.group(2) is None:
            ranges.append((first, first + 1))
        elif match.group(3) == "":
            ranges.append((first, None))
        else:
            last = int(match.group(3))
            if last < first:
                raise DatasetNameError(where, item, RULE_ENTRY_ORDER)
            ranges.append((first, last + 1))
    return EntrySelection(tuple(ranges))


def parse_ref(text: str, *, group: str, user: str, spec: str | None = None) -> DatasetRef:
    """One dataset with its optional `#tree` and `?entries=...`."""
    where = text if spec is None else spec
    if not text:
        raise DatasetNameError(where, text, RULE_EMPTY)
    entries = None
    rest, sep, query = text.partition("?")
    if sep:
        key, eq, value = query.partition("=")
        if key != "entries" or not eq:
            raise DatasetNameError(where, "?" + query, RULE_QUERY)
        entries = parse_entries(value, spec=where)
    path, sep, tree_text = rest.partition("#")
    tree = None
    if sep:
        segments = tree_text.split("/")
        for seg in segments:
            if not _TREE_SEGMENT.fullmatch(seg):
                raise DatasetNameError(where, "#" + tree_text, RULE_TREE)
        tree = tree_text
    if not path:
        raise DatasetNameError(where, text, RULE_EMPTY)
    try:
        name = parse_name(path, group=group, user=user)
    except DatasetNameError as err:
        raise DatasetNameError(where, err.part, err.rule) from None
    return DatasetRef(name=name, tree=tree, entries=entries)


def parse_spec(text: str, *, group: str, user: str) -> DatasetSpec:
    """A full spec: `a`, `a|b` (union), `a,b` (sequential), `a|b,c` (`,` binds loosest)."""
    parts: list[tuple[DatasetRef, ...]] = []
    previous: DatasetRef | None = None
    for part_text in text.split(","):
        refs = []
        for ref_text in part_text.split("|"):
            ref_text = ref_text.strip()
            if (
                previous is not None
                and previous.entries is not None
                and not refs
                and _ENTRY_ITEM.fullmatch(ref_text)
            ):
                raise DatasetNameError(text, "," + ref_text, RULE_ENTRY_SEP)
            ref = parse_ref(ref_text, group=group, user=user, spec=text)
            refs.append(ref)
            previous = ref
        parts.append(tuple(refs))
    return DatasetSpec(parts=tuple(parts))


def parse_pattern(text: str, *, group: str, user: str) -> NamePattern:
    """A listing pattern with `*` wildcards (see the module docstring)."""
    text = text.strip()
    if text in ("", "*"):
        return NamePattern(group=group, user=user, name="*")
    if text.startswith("/"):
        pieces = text[1:].rstrip("/").split("/") if text != "/" else []
        if len(pieces) > 3:
            raise DatasetNameError(text, text, RULE_PATTERN)
        pieces += ["*"] * (3 - len(pieces))
        for piece in pieces:
            if not _PATTERN_COMPONENT.fullmatch(piece):
                raise DatasetNameError(text, piece, RULE_PATTERN)
        g, u, n = pieces
        if g == COMMON and u == "*":
            u = COMMON
        return NamePattern(group=g, user=u, name=n)
    pieces = text.split("/")
    if len(pieces) > 2:
        raise DatasetNameError(text, text, RULE_PATTERN)
    for piece in pieces:
        if not _PATTERN_COMPONENT.fullmatch(piece):
            raise DatasetNameError(text, piece, RULE_PATTERN)
    if len(pieces) == 1:
        return NamePattern(group=group, user=user, name=pieces[0])
    u, n = pieces
    g = COMMON if u == COMMON else group
    return NamePattern(group=g, user=u, name=n)
