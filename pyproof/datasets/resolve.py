"""From a dataset's files and a selection to the master's elements (pure, no I/O).

The catalog reads the datasets a spec names in one snapshot and calls
`elements_for` once per dataset reference; this module decides which tree
each file is read with, which files are bad, and how a dataset-wide entry
selection (entry numbers counted through the good files in order) maps onto
per-file local entry ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pyproof.datasets.errors import EntriesUnknownError, NoTreeError
from pyproof.datasets.names import EntrySelection
from pyproof.datasets.records import Element, FileRecord, SkippedFile

BadFiles = Literal["fail", "skip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """What one dataset reference asks for: its dataset's files, tree and entries."""

    dataset: str
    default_tree: str | None
    files: Sequence[FileRecord]
    tree: str | None = None
    entries: EntrySelection | None = None
    part: int = 0
    label: str | None = None                 # a fileset dataset's short name
    metadata: dict[str, Any] | None = None   # and its metadata


def file_problem(record: FileRecord, tree: str, default_tree: str | None) -> str | None:
    """Why `record` cannot be read with `tree`, or None if nothing is known against it."""
    if record.missing:
        return record.problem or "missing"
    if record.corrupt:
        return record.problem or "corrupt"
    if record.friend_mismatch:
        return record.problem or "associated file has a different number of entries"
    if record.trees:
        names = [name for name, _ in record.trees]
        if tree not in names:
            return f"no tree {tree!r} (has: {', '.join(names) or 'none'})"
        return None
    if record.wrong_tree and tree == (record.tree or default_tree):
        return record.problem or f"no tree {tree!r}"
    return None


def elements_for(selection: Selection) -> tuple[list[Element], list[SkippedFile]]:
    """The elements of one dataset reference, and the bad files left out.

    Whether bad files fail the query is the caller's choice (the catalog
    collects them over the whole spec, so its error lists them all).
    """
    chosen: list[tuple[int, FileRecord, str, int | None]] = []
    skipped: list[SkippedFile] = []
    for index, record in enumerate(selection.files):
        tree = selection.tree or record.tree or selection.default_tree
        if tree is None:
            raise NoTreeError(
                f"dataset {selection.dataset!r} has no default tree and file {record.url!r} "
                f"names none; give one as '{selection.dataset}#tree' or set the dataset's "
                "default tree"
            )
        problem = file_problem(record, tree, selection.default_tree)
        if problem is not None:
            skipped.append(SkippedFile(url=record.url, dataset=selection.dataset, reason=problem))
            continue
        chosen.append((index, record, tree, record.entries_of(tree, selection.default_tree)))

    if selection.entries is None:
        elements = [
            _element(selection, index, record, tree, 0, entries, entries)
            for index, record, tree, entries in chosen
        ]
        return elements, skipped

    unknown = [record.url for _, record, _, entries in chosen if entries is None]
    if unknown:
        raise EntriesUnknownError(
            f"cannot select entries of {selection.dataset!r}: the entries of {len(unknown)} "
            f"file(s) are not known (first: {unknown[0]!r}); verify the dataset first"
        )
    total = sum(entries or 0 for _, _, _, entries in chosen)
    wanted = selection.entries.clip(total)
    elements = []
    offset = 0
    for index, record, tree, entries in chosen:
        assert entries is not None
        for start, stop in wanted:
            lo, hi = max(start, offset), min(stop, offset + entries)
            if lo < hi:
                elements.append(
                    _element(selection, index, record, tree, lo - offset, hi - offset, entries)
                )
        offset += entries
    return elements, skipped


def _element(
    selection: Selection,
    index: int,
    record: FileRecord,
    tree: str,
    start: int,
    stop: int | None,
    file_entries: int | None,
) -> Element:
    friend_tree = record.friend_tree
    if record.has_friend and friend_tree is None:
        friend_tree = tree
    return Element(
        url=record.url,
        tree=tree,
        entry_start=start,
        entry_stop=stop,
        entries=None if stop is None else stop - start,
        file_entries=file_entries,
        host=record.host,
        dataset=selection.dataset,
        label=selection.label,
        metadata=selection.metadata,
        part=selection.part,
        file_index=index,
        friend_url=record.url if record.has_friend and record.friend_url is None
        else record.friend_url,
        friend_tree=friend_tree,
    )
