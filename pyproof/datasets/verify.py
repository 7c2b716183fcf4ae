"""Verification: open each file, count entries per tree, checksum, mark what is bad.

`verify_file` checks one file and returns a `FileRecord`; it needs nothing
but the file, so the cluster's file packetizer can run it on workers (it is
a plain top-level function: picklable). `verify_dataset` verifies a
cataloged dataset with any map-like executor (`builtins.map`,
`ProcessPoolExecutor().map`, ...) and writes the results back in one
transaction.

What is checked, per file:

- missing: a local path that does not exist (remote: uproot's "not found");
- corrupt: uproot cannot open it or read its trees' metadata, or a local file
  is shorter than the length ROOT recorded in its header (`fEND`: truncated),
  or (with `deep=True`) a basket of the tree fails to read or decompress;
- wrong tree: the tree asked for is not in the file (the record lists the
  trees that are, `TTree` and `RNTuple`, as `dir/name`);
- friend mismatch: the associated file or tree is missing or has a different
  number of entries.

The checksum is xxHash's XXH3-64 of the file's bytes, written
`"xxh3_64:<16 hex digits>"` (fast, and `xxhash` is a dependency already);
only local files get one. The UUID is the one ROOT (or uproot) wrote in the
file header.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pyproof.datasets.errors import FriendMismatchError
from pyproof.datasets.records import FileRecord
from pyproof.datasets.sources import local_path

if TYPE_CHECKING:
    from pyproof.datasets.catalog import Catalog

CHECKSUM_ALGORITHM = "xxh3_64"
_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple")
_CHUNK = 1 << 20


def checksum_file(path: str) -> str:
    """`"xxh3_64:<hex>"` of the bytes of a local file."""
    import xxhash

    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


class _Bad(Exception):
    """Internal: the file is bad in the way `kind` says."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.kind = kind
        self.problem = problem


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _trees(handle: Any) -> dict[str, Any]:
    """Every tree in an open file as {'dir/name': object}, the highest cycle of each."""
    found: dict[str, tuple[int, str]] = {}
    for key, classname in handle.iterclassnames(recursive=True):
        if classname not in _TREE_CLASSES:
            continue
        name, _, cycle = key.rpartition(";")
        number = int(cycle) if cycle.isdigit() else 0
        if name not in found or number > found[name][0]:
            found[name] = (number, key)
    return {name: handle[key] for name, (_, key) in sorted(found.items())}


def _read_baskets(tree: Any) -> None:
    """Read and decompress every basket of a TTree (no interpretation)."""
    if not hasattr(tree, "itervalues"):
        return  # RNTuple: metadata checks only
    for branch in tree.itervalues(recursive=True):
        for index in range(branch.num_baskets):
            branch.basket(index)


def _open_trees(url: str, deep_tree: str | None = None) -> tuple[dict[str, int], str | None, int]:
    """(entries per tree, uuid, fEND) of a file; raises _Bad."""
    import uproot

    try:
        with uproot.open(url) as handle:
            trees = {name: int(obj.num_entries) for name, obj in _trees(handle).items()}
            uuid = str(handle.file.uuid) if getattr(handle.file, "uuid", None) else None
            end = int(handle.file.fEND)
            if deep_tree is not None and deep_tree in trees:
                _read_baskets(_trees(handle)[deep_tree])
    except FileNotFoundError as err:
        raise _Bad("missing", f"no such file ({_first_line(err)})") from None
    except ImportError:
        raise  # a missing protocol plugin (fsspec-xrootd, aiohttp) says what to install
    except Exception as err:  # uproot raises many kinds on damaged files
        raise _Bad("corrupt", f"cannot read: {_first_line(err)}") from None
    return trees, uuid, end


def verify_file(
    url: str,
    tree: str | None = None,
    *,
    friend_url: str | None = None,
    friend_tree: str | None = None,
    checksum: bool = True,
    deep: bool = False,
    now: float | None = None,
) -> FileRecord:
    """Open `url`, count the entries of its trees and return what was found.

    `tree` None picks the file's only tree (a file with several is marked
    wrong tree). `friend_url`/`friend_tree` name an associated tree to check
    (friend_url None: the same file; friend_tree None: the same tree name).
    `deep` also reads every basket of the tree. Never raises for a bad file:
    the returned record's flags and `problem` say what is wrong; an
    ImportError (uproot lacks the plugin for a `root://` or `http://` URL)
    is raised as is, since it says nothing about the file. `now` is the
    time stamp to record (default: the current time).
    """
    stamp = time.time() if now is None else now
    record = FileRecord(
        url=url, tree=tree, friend_url=friend_url, friend_tree=friend_tree, verified_at=stamp
    )
    path = local_path(url)
    size = None
    if path is not None:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return replace(record, missing=True, problem="no such file")
        except OSError as err:
            return replace(record, missing=True, problem=f"cannot stat: {err.strerror}")
    record = replace(record, size=size)
    try:
        trees, uuid, end = _open_trees(url, tree if deep else None)
    except _Bad as bad:
        return replace(record, **{bad.kind: True}, problem=bad.problem)
    record = replace(record, uuid=uuid, trees=tuple(trees.items()))
    if size is not None and size < end:
        return replace(record, corrupt=True, problem=f"truncated: {size} bytes of {end}")
    if deep and tree is None and len(trees) == 1:
        try:
            _open_trees(url, next(iter(trees)))
        except _Bad as bad:
            return replace(record, **{bad.kind: True}, problem=bad.problem)
    if path is not None and checksum:
        try:
            record = replace(record, checksum=checksum_file(path))
        except OSError as err:
            return replace(record, corrupt=True, problem=f"cannot read: {err.strerror}")
    if tree is None:
        if len(trees) != 1:
            listed = ", ".join(trees) or "none"
            return replace(
                record, wrong_tree=True,
                problem=f"no tree named and the file has {len(trees)} trees ({listed})",
            )
        tree = next(iter(trees))
        record = replace(record, tree=tree)
    if tree not in trees:
        listed = ", ".join(trees) or "none"
        return replace(record, wrong_tree=True, problem=f"no tree {tree!r} (has: {listed})")
    record = replace(record, entries=trees[tree])
    if friend_url is not None or friend_tree is not None:
        record = _check_friend(record, tree, trees)
        if not record.ok:
            return record
    return replace(record, staged=True)


def _check_friend(record: FileRecord, tree: str, trees: dict[str, int]) -> FileRecord:
    friend_url = record.friend_url or record.url
    friend_tree = record.friend_tree or tree
    if friend_url == record.url:
        friend_trees = trees
    else:
        path = local_path(friend_url)
        if path is not None and not os.path.exists(path):
            return replace(
                record, friend_mismatch=True,
                problem=f"associated file {friend_url!r} is missing",
            )
        try:
            friend_trees, _, _ = _open_trees(friend_url)
        except _Bad as bad:
            return replace(
                record, friend_mismatch=True,
                problem=f"associated file {friend_url!r}: {bad.problem}",
            )
    if friend_tree not in friend_trees:
        listed = ", ".join(friend_trees) or "none"
        return replace(
            record, friend_mismatch=True,
            problem=f"associated file {friend_url!r} has no tree {friend_tree!r} (has: {listed})",
        )
    friend_entries = friend_trees[friend_tree]
    record = replace(record, friend_entries=friend_entries)
    if friend_entries != record.entries:
        mismatch = FriendMismatchError(
            record.url, tree, record.entries or 0, friend_url, friend_tree, friend_entries
        )
        return replace(record, friend_mismatch=True, problem=str(mismatch))
    return record


def verify_record(
    record: FileRecord,
    default_tree: str | None = None,
    *,
    checksum: bool = True,
    deep: bool = False,
    now: float | None = None,
) -> FileRecord:
    """Verify a cataloged file: `verify_file` with the record's tree and friend.

    The result keeps the record's URL, host and friend; its `tree` stays None
    when the dataset's default tree applies.
    """
    tree = record.tree or default_tree
    found = verify_file(
        record.url, tree, friend_url=record.friend_url, friend_tree=record.friend_tree,
        checksum=checksum, deep=deep, now=now,
    )
    kept_tree = record.tree if (record.tree or default_tree) else found.tree
    return replace(found, tree=kept_tree, host=record.host)


def _verify_task(task: tuple[FileRecord, str | None, bool, bool, float | None]) -> FileRecord:
    record, default_tree, checksum, deep, now = task
    return verify_record(record, default_tree, checksum=checksum, deep=deep, now=now)


def verify_records(
    records: Iterable[FileRecord],
    default_tree: str | None,
    *,
    map: Callable[..., Iterator[FileRecord]] = builtins.map,
    checksum: bool = True,
    deep: bool = False,
    now: float | None = None,
) -> list[FileRecord]:
    """`verify_record` over `records` with a map-like executor, results in input order."""
    tasks = [(record, default_tree, checksum, deep, now) for record in records]
    return list(map(_verify_task, tasks))


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifySummary:
    """What verifying a dataset found. `problems` holds (url, status, reason) of bad files."""

    dataset: str
    files: int
    ok: int
    missing: int
    corrupt: int
    wrong_tree: int
    friend_mismatch: int
    entries: int
    size: int
    problems: tuple[tuple[str, str, str], ...]

    @property
    def bad(self) -> int:
        return self.files - self.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "files": self.files, "ok": self.ok,
            "missing": self.missing, "corrupt": self.corrupt, "wrong_tree": self.wrong_tree,
            "friend_mismatch": self.friend_mismatch, "entries": self.entries,
            "size": self.size, "problems": [list(p) for p in self.problems],
        }


def summarize(dataset: str, records: Iterable[FileRecord]) -> VerifySummary:
    records = list(records)
    return VerifySummary(
        dataset=dataset,
        files=len(records),
        ok=sum(r.ok for r in records),
        missing=sum(r.missing for r in records),
        corrupt=sum(r.corrupt for r in records),
        wrong_tree=sum(r.wrong_tree for r in records),
        friend_mismatch=sum(r.friend_mismatch for r in records),
        entries=sum(r.entries or 0 for r in records if r.ok),
        size=sum(r.size or 0 for r in records),
        problems=tuple((r.url, r.status(), r.problem or "") for r in records if not r.ok),
    )


def verify_dataset(
    catalog: Catalog,
    name: str,
    *,
    map: Callable[..., Iterator[FileRecord]] = builtins.map,
    checksum: bool = True,
    deep: bool = False,
    record: bool = True,
) -> VerifySummary:
    """Verify every file of dataset `name`, record the results, and summarise them.

    `record=False` only reports (for datasets one may read but not change);
    with `record=True` a DatasetPermissionError comes before any file is read.

    `map` is any map-like executor, called once as `map(function, tasks)`;
    the function and tasks are picklable. The catalog is not locked while
    files are read; results are written back in one transaction (files
    removed meanwhile are left out).
    """
    dataset = catalog.show(name)
    if record:
        catalog.check_may_change(dataset.info.path)
    now = catalog.now()
    results = verify_records(
        dataset.files, dataset.info.default_tree, map=map, checksum=checksum, deep=deep, now=now
    )
    if record:
        catalog.record_verification(dataset.info.path, results)
    return summarize(dataset.info.path, results)
