"""The master's look-up: from a query's dataset to elements with entry counts.

A dataset is a file list (`[[path, tree], ...]`) or a catalog spec resolved
through datasets/ (`name`, `a|b`, `a,b`, `#tree`, `?entries=`). Files are
opened here only to count entries and check branches; unreadable ones fail
the query or, when the user asked to skip them, are listed as missing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import uproot

from pyproof.packetizer.base import WorkRange

FRIEND = "friend."
NOT_A_FILE = (
    "{spec!r} was tried as a file too: no such file where the client runs; a URL, "
    "'file.root:tree' or an existing path is read as files, anything else as catalog datasets"
)


class LookupError_(Exception):
    """A dataset element cannot be used; carries where."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context


@dataclass(slots=True)
class Element:
    """One file's tree in a query: `[entry_start, entry_stop)` of it is processed."""

    path: str
    tree: str
    entries: int
    entry_start: int = 0
    entry_stop: int | None = None
    dataset: str | None = None
    part: int = 0
    friend_path: str | None = None
    friend_tree: str | None = None
    host: str | None = None  # the storage node holding the file, when the catalog knows

    @property
    def stop(self) -> int:
        return self.entries if self.entry_stop is None else min(self.entry_stop, self.entries)


def lookup_element(path: str, tree: str | None, branches: list[str] | None) -> Element:
    """Open a file, find its tree, count entries and check the branches exist."""
    try:
        handle = uproot.open(path)
    except FileNotFoundError:
        raise LookupError_(f"file not found: {path}", file=path) from None
    except Exception as exc:
        raise LookupError_(f"cannot open {path}: {exc}", file=path) from exc
    with handle:
        trees = [k.split(";")[0] for k, c in handle.classnames().items() if c == "TTree"]
        if tree is None:
            if len(trees) != 1:
                raise LookupError_(
                    f"{path} holds {len(trees)} trees ({', '.join(trees) or 'none'}); "
                    f"name one as '{path}:TREE'", file=path)
            tree = trees[0]
        try:
            obj = handle[tree]
        except Exception:
            near = difflib.get_close_matches(tree, trees, n=3, cutoff=0.0)
            raise LookupError_(
                f"no tree {tree!r} in {path} (trees in the file: {', '.join(near) or 'none'})",
                file=path, tree=tree) from None
        if not hasattr(obj, "num_entries"):
            raise LookupError_(f"{tree!r} in {path} is a {type(obj).__name__}, not a TTree",
                               file=path, tree=tree)
        if branches:
            known = set(obj.keys(recursive=True, full_paths=True)) | set(obj.keys())
            for branch in branches:
                if branch not in known:
                    near = difflib.get_close_matches(branch, sorted(known), n=5, cutoff=0.0)
                    raise LookupError_(
                        f"no branch {branch!r} in tree {tree!r} of {path} "
                        f"(nearest: {', '.join(near)})", file=path, tree=tree, branch=branch)
        return Element(path=path, tree=tree, entries=int(obj.num_entries))


def select_ranges(elements: list[Element], first: int, count: int | None) -> list[WorkRange]:
    """The global half-open selection [first, first+count) over the elements' own ranges.

    A `first` at or past the end is an error naming the dataset's size: an
    empty result would look like a dataset with nothing in it.
    """
    total = sum(max(0, e.stop - e.entry_start) for e in elements)
    if first > 0 and first >= total:
        hint = f"numbered from 0 (give first= below {total})" if total else "nothing to skip"
        raise LookupError_(
            f"first={first} is past the end of the dataset: it has {total} entries, {hint}")
    ranges: list[WorkRange] = []
    stop_global = None if count is None else first + count
    offset = 0
    for index, element in enumerate(elements):
        n = max(0, element.stop - element.entry_start)
        lo = max(first, offset)
        hi = offset + n if stop_global is None else min(offset + n, stop_global)
        if hi > lo:
            base = element.entry_start - offset
            ranges.append(WorkRange(element=index, entry_start=lo + base, entry_stop=hi + base))
        offset += n
    return ranges


def split_branches(branches: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """Main-tree branches, and the friend tree's (`friend.y` -> `y`)."""
    if branches is None:
        return None, []
    main = [b for b in branches if not b.startswith(FRIEND)]
    return main, [b[len(FRIEND):] for b in branches if b.startswith(FRIEND)]


def file_elements(dataset: list[Any], branches: list[str] | None, *,
                  skip_missing: bool) -> tuple[list[Element], list[dict[str, Any]]]:
    """Elements of a file list; with skip_missing, bad files are listed instead of failing."""
    main, _ = split_branches(branches)
    elements, missing = [], []
    for path, tree in dataset:
        try:
            elements.append(lookup_element(path, tree, main))
        except LookupError_ as exc:
            if not skip_missing or "branch" in exc.context:
                raise
            missing.append({"file": path, "tree": tree, "reason": str(exc)})
    return elements, missing


def catalog_elements(spec: str, user: str, branches: list[str] | None, *, skip_missing: bool,
                     catalog_path: str | None = None) -> tuple[list[Element], list[dict], int]:
    """Elements of a catalog dataset spec; returns (elements, missing, number of parts)."""
    from pyproof.datasets import Catalog, DatasetError, DatasetNotFoundError
    from pyproof.sandbox import default_catalog_path

    main, friends = split_branches(branches)
    try:
        catalog = Catalog(catalog_path or default_catalog_path(), user=user or None)
        resolution = catalog.resolve(spec, bad_files="skip" if skip_missing else "fail")
    except DatasetNotFoundError as exc:
        # the client sends a catalog spec only when no such file exists (names_catalog)
        raise LookupError_(f"{exc} ({NOT_A_FILE.format(spec=spec)})", dataset=spec) from None
    except DatasetError as exc:
        raise LookupError_(str(exc), dataset=spec) from None
    missing = [{"file": s.url, "dataset": s.dataset, "reason": s.reason}
               for s in resolution.skipped]
    elements: list[Element] = []
    checked: set[tuple[str, str]] = set()
    for e in resolution.elements:
        try:
            if e.entries is None or (e.url, e.tree) not in checked:
                counted = lookup_element(e.url, e.tree, main)  # unverified, or check branches
                entries = counted.entries
            else:
                entries = e.file_entries or 0
            if friends and e.friend_url and (e.friend_url, e.friend_tree) not in checked:
                friend = lookup_element(e.friend_url, e.friend_tree, friends)
                if friend.entries != entries:
                    raise LookupError_(
                        f"friend {e.friend_url} has {friend.entries} entries in "
                        f"{e.friend_tree!r}, but {e.url} has {entries}", file=e.url)
            if friends and not e.friend_url:
                raise LookupError_(f"the selector reads friend branches but {e.url} in "
                                   f"{e.dataset} has no associated file", file=e.url)
        except LookupError_ as exc:
            if not skip_missing or "branch" in exc.context:
                raise
            missing.append({"file": e.url, "dataset": e.dataset, "reason": str(exc)})
            continue
        checked.add((e.url, e.tree))
        elements.append(Element(path=e.url, tree=e.tree, entries=entries,
                                entry_start=e.entry_start, entry_stop=e.entry_stop,
                                dataset=e.dataset, part=e.part, host=e.host,
                                friend_path=e.friend_url,
                                friend_tree=e.friend_tree))
    return elements, missing, len(resolution.parts)


