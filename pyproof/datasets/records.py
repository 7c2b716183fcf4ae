"""The records of the catalog, as frozen dataclasses (pure, no I/O).

`FileRecord` is one file of a dataset with everything known about it;
`DatasetInfo` summarises a dataset; `Element` is what the resolver hands the
master (one file, or one entry range of a file, to be packetized);
`Resolution` is the resolver's whole answer. Each has `to_dict()` and
`from_dict()` with plain str/int/float/bool/None/list/dict values, ready for
JSON or CBOR.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.datasets.names import DatasetName
from pyproof.transport.codec import TAG_DATASET_RECORD, register_tag


class _Plain:
    """Mixin: `to_dict()`/`from_dict()` for flat dataclasses of plain values."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, DatasetName):
        return value.path
    if dataclasses.is_dataclass(value) and isinstance(value, _Plain):
        return value.to_dict()
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecord(_Plain):
    """One file of a dataset.

    `url` is an absolute local path, or a `root://`/`http(s)://` URL passed
    to uproot as-is. `tree` None means the dataset's default tree; `entries`
    counts that tree (None: not known yet, verify). `checksum` is
    `"xxh3_64:<16 hex digits>"` of the file's bytes. `trees` lists every tree
    (TTree or RNTuple, `dir/name`) found at verification with its entries.
    The flags say what verification found; `problem` says it in words.
    `friend_url`/`friend_tree` name the associated file (a tree with the
    same number of entries); a friend_url of None with a friend_tree means a
    second tree in the same file.
    """

    url: str
    tree: str | None = None
    entries: int | None = None
    size: int | None = None
    checksum: str | None = None
    uuid: str | None = None
    host: str | None = None
    staged: bool = False
    missing: bool = False
    corrupt: bool = False
    wrong_tree: bool = False
    friend_mismatch: bool = False
    problem: str | None = None
    verified_at: float | None = None
    trees: tuple[tuple[str, int], ...] = ()
    friend_url: str | None = None
    friend_tree: str | None = None
    friend_entries: int | None = None

    def __post_init__(self) -> None:
        # lists arrive from JSON/CBOR; keep the record hashable
        if not isinstance(self.trees, tuple):
            object.__setattr__(self, "trees", tuple((str(t), int(n)) for t, n in self.trees))

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> FileRecord:
        """`from_dict` for data from another process: ValueError naming a bad field."""
        if not isinstance(data, Mapping) or "url" not in data:
            raise ValueError("a file record must be a map with at least a url")
        for name, value in data.items():
            kinds = _WIRE_TYPES.get(name) if isinstance(name, str) else None
            if kinds is None:
                raise ValueError(f"file record has unknown field {name!r}")
            if type(value) not in kinds:
                raise ValueError(f"file record field {name!r} cannot be {type(value).__name__}")
        trees = data.get("trees", ())
        if not all(isinstance(pair, list | tuple) and len(pair) == 2
                   and type(pair[0]) is str and type(pair[1]) is int for pair in trees):
            raise ValueError("file record field 'trees' must hold [name, entries] pairs")
        return cls(**data)

    @property
    def ok(self) -> bool:
        """False when verification marked the file missing, corrupt, wrong tree or mismatched."""
        return not (self.missing or self.corrupt or self.wrong_tree or self.friend_mismatch)

    @property
    def has_friend(self) -> bool:
        return self.friend_url is not None or self.friend_tree is not None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    def entries_of(self, tree: str, default_tree: str | None = None) -> int | None:
        """Entries of `tree` in this file if known (from verification or the record)."""
        for name, entries in self.trees:
            if name == tree:
                return entries
        if tree == (self.tree or default_tree):
            return self.entries
        return None

    def status(self) -> str:
        """One word for tables: ok, missing, corrupt, wrong-tree, friend-mismatch, unverified."""
        if self.missing:
            return "missing"
        if self.corrupt:
            return "corrupt"
        if self.wrong_tree:
            return "wrong-tree"
        if self.friend_mismatch:
            return "friend-mismatch"
        return "ok" if self.verified else "unverified"


_TEXT, _COUNT, _FLAG = (str, type(None)), (int, type(None)), (bool,)
_WIRE_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,), "tree": _TEXT, "entries": _COUNT, "size": _COUNT, "checksum": _TEXT,
    "uuid": _TEXT, "host": _TEXT, "staged": _FLAG, "missing": _FLAG, "corrupt": _FLAG,
    "wrong_tree": _FLAG, "friend_mismatch": _FLAG, "problem": _TEXT,
    "verified_at": (float, int, type(None)), "trees": (list, tuple), "friend_url": _TEXT,
    "friend_tree": _TEXT, "friend_entries": _COUNT,
}
"""The exact Python types each `FileRecord` field may arrive as."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetInfo(_Plain):
    """A dataset's summary: name, default tree, owner, times and totals over its files.

    `total_size` and `total_entries` sum what is known; `n_unverified` files
    have never been verified and `n_bad` were found missing, corrupt, with a
    wrong tree or a mismatched friend. Times are Unix seconds.
    """

    name: DatasetName
    default_tree: str | None
    owner: str
    created: float
    modified: float
    n_files: int = 0
    n_staged: int = 0
    n_bad: int = 0
    n_unverified: int = 0
    total_size: int = 0
    total_entries: int = 0

    @property
    def path(self) -> str:
        return self.name.path

    @property
    def group(self) -> str:
        return self.name.group

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetInfo:
        data = dict(data)
        if isinstance(data.get("name"), str):
            _, group, user, name = data["name"].split("/")
            data["name"] = DatasetName(group=group, user=user, name=name)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """A dataset's summary and its files, in order."""

    info: DatasetInfo
    files: tuple[FileRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info.to_dict(), "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaInfo(_Plain):
    """A group's quota in bytes (None: no limit) and its usage.

    `used` counts every file of the group's datasets, unknown sizes at the
    catalog's average file size.
    """

    group: str
    limit: int | None
    used: int

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Element(_Plain):
    """One unit for the master's packetizer: a file's tree, or an entry range of it.

    `[entry_start, entry_stop)` is local to the file's tree, as uproot's
    `entry_start`/`entry_stop`; `entries` is their difference. When the
    catalog does not know the file's entries yet (never verified),
    `entry_stop`, `entries` and `file_entries` are None: the master must
    count them. `dataset` is the full name the element came from (the
    selector's `ctx.dataset`), `part` the index of its sequential part
    (`a,b`: a is part 0, b part 1), `file_index` its position in that dataset.
    """

    url: str
    tree: str
    entry_start: int
    entry_stop: int | None
    entries: int | None
    file_entries: int | None
    host: str | None
    dataset: str
    part: int
    file_index: int
    friend_url: str | None = None
    friend_tree: str | None = None
    label: str | None = None                # registered from a fileset: its short name
    metadata: dict[str, Any] | None = None  # and the fileset's metadata


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedFile(_Plain):
    """A bad file the resolver left out (bad_files='skip'), and why."""

    url: str
    dataset: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """The resolver's answer: elements in processing order, grouped into parts.

    `parts[i]` lists the dataset names of sequential part i; the elements of
    part i (`elements_of(i)`) form one packetizer's input, processed after
    part i-1's. A union `a|b` is one part; `a,b` two.
    """

    spec: str
    parts: tuple[tuple[str, ...], ...]
    elements: tuple[Element, ...]
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def sequential(self) -> bool:
        return len(self.parts) > 1

    def elements_of(self, part: int) -> tuple[Element, ...]:
        return tuple(e for e in self.elements if e.part == part)

    @property
    def total_entries(self) -> int | None:
        """The sum of the elements' entries; None if any is not known."""
        total = 0
        for element in self.elements:
            if element.entries is None:
                return None
            total += element.entries
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "parts": [list(p) for p in self.parts],
            "elements": [e.to_dict() for e in self.elements],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resolution:
        return cls(
            spec=data["spec"],
            parts=tuple(tuple(p) for p in data["parts"]),
            elements=tuple(Element.from_dict(e) for e in data["elements"]),
            skipped=tuple(SkippedFile.from_dict(s) for s in data["skipped"]),
        )


# the transport knows no dataset type: this package registers its own tag
register_tag(TAG_DATASET_RECORD, FileRecord, to_wire=FileRecord.to_dict,
             from_wire=FileRecord.from_wire, name="dataset record")
