"""The master's look-up: from a query's dataset to elements with entry counts.

A dataset is a file list (`[[path, tree], ...]`) or a catalog spec resolved
through datasets/ (`name`, `a|b`, `a,b`, `#tree`, `?entries=`). Files are
opened here only to count entries and check branches; unreadable ones fail
the query or, when the user asked to skip them, are listed as missing.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.packetizer.base import WorkRange

FRIEND = "friend."
NOT_A_FILE = (
    "{spec!r} was tried as a file too: no such file where the client runs; a URL, "
    "'file.root:tree' or an existing path is read as files, anything else as catalog datasets"
)
LOOKUP_THREADS = 8  # files opened at once: remote ones overlap; bounded so a big list
                    # does not start hundreds of threads


class LookupError_(Exception):
    """A dataset element cannot be used; carries where."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context


class MissingBranchError(LookupError_):
    """A tree lacks a branch the selector reads (found on the master, or on a worker)."""


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
    clusters: tuple[int, ...] = ()  # entries where baskets of every branch begin (TreeInfo)
    label: str | None = None  # a dataset registered from a fileset: its short name ...
    metadata: dict | None = None  # ... and metadata, for ctx.dataset and ctx.metadata

    @property
    def stop(self) -> int:
        return self.entries if self.entry_stop is None else min(self.entry_stop, self.entries)


@dataclass(frozen=True, slots=True)
class TreeInfo:
    """What a look-up learns about one file's tree: enough to check any query's branches."""

    tree: str
    entries: int
    branches: frozenset[str]
    clusters: tuple[int, ...] = ()
    """Entries where a basket of every branch begins (packet edges go there)."""


Stamp = tuple[int, int, int]  # (size, mtime_ns, inode) of a local file


def file_stamp(path: str) -> Stamp | None:
    """A local file's (size, mtime_ns, inode); None for a remote URL (not cached).

    A missing local file is reported here, as the look-up would: "file not found".
    """
    if "://" in path and not path.startswith("file://"):
        return None
    local = path[len("file://"):] if path.startswith("file://") else path
    try:
        st = os.stat(local)
    except FileNotFoundError:
        raise LookupError_(f"file not found: {path}", file=path) from None
    except OSError:
        return None  # let uproot say what is wrong with it
    return st.st_size, st.st_mtime_ns, st.st_ino


class LookupCache:
    """A session's look-ups, keyed by (path, tree asked for, size, mtime, inode).

    A file rewritten since (another size, mtime or inode) misses and is opened
    again. Remote URLs have no cheap stamp and are never cached: a file
    replaced on a server would otherwise be read with stale entry counts.
    Failures are not cached. Bounded (oldest out first); thread-safe, since
    a stopped query's look-up thread may still run beside the next one's.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str | None], tuple[Stamp, TreeInfo]] = {}
        self._lock = threading.Lock()

    def get(self, path: str, tree: str | None, stamp: Stamp) -> TreeInfo | None:
        with self._lock:
            hit = self._entries.get((path, tree))
        return hit[1] if hit is not None and hit[0] == stamp else None

    def put(self, path: str, tree: str | None, stamp: Stamp, info: TreeInfo) -> None:
        with self._lock:
            self._entries.pop((path, tree), None)
            self._entries[(path, tree)] = (stamp, info)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


def open_tree(path: str, tree: str | None) -> TreeInfo:
    """Open a file, find its tree, and read its entry count and branch names."""
    import uproot  # imported on first use: a session starts without it (warmup.py)

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
        return TreeInfo(tree=tree, entries=int(obj.num_entries), branches=branch_names(obj),
                        clusters=clusters(obj))


def clusters(tree: Any) -> tuple[int, ...]:
    """Entries where a basket of every branch of an uproot TTree begins (metadata only:
    no basket is read); empty if uproot cannot tell."""
    try:
        return tuple(int(e) for e in tree.common_entry_offsets())
    except Exception:  # noqa: BLE001 (an optimization only: packets are cut anywhere)
        return ()


def branch_names(tree: Any) -> frozenset[str]:
    """Every name a selector may give for a branch of an uproot TTree."""
    return frozenset(tree.keys(recursive=True, full_paths=True)) | frozenset(tree.keys())


def check_branches(info: TreeInfo, path: str, branches: list[str] | None) -> None:
    """MissingBranchError naming the first branch the tree lacks, and the nearest ones."""
    for branch in branches or ():
        if branch not in info.branches:
            near = difflib.get_close_matches(branch, sorted(info.branches), n=5, cutoff=0.0)
            raise MissingBranchError(
                f"no branch {branch!r} in tree {info.tree!r} of {path} "
                f"(nearest: {', '.join(near)})", file=path, tree=info.tree, branch=branch)


@dataclass(frozen=True, slots=True)
class Want:
    """One look-up to do: a file's tree, and the branches to check in it."""

    path: str
    tree: str | None
    branches: list[str] | None


class Lookups:
    """One query's look-ups: from the session's cache, else opened in a bounded pool.

    Counts what it did (`opened`, `cached`, `catalog`) for the query's stats.
    """

    def __init__(self, cache: LookupCache | None = None, *, threads: int = LOOKUP_THREADS) -> None:
        self.cache = cache
        self.threads = threads
        self.opened = 0
        self.cached = 0
        self.catalog = 0  # entry counts taken from the catalog, no file opened

    def one(self, want: Want) -> tuple[TreeInfo, bool]:
        """(what the file holds, whether it was opened); LookupError_ if unusable."""
        stamp = file_stamp(want.path)
        info = None if stamp is None or self.cache is None else self.cache.get(
            want.path, want.tree, stamp)
        opened = info is None
        if info is None:
            info = open_tree(want.path, want.tree)
            if stamp is not None and self.cache is not None:
                self.cache.put(want.path, want.tree, stamp, info)
        check_branches(info, want.path, want.branches)
        return info, opened

    def each(self, wants: list[Want]) -> Iterator[tuple[int, TreeInfo | LookupError_]]:
        """Every look-up as `many` does, but each (index, result) as soon as it is known.

        The master hands out packets of a file while others are still being
        looked up. Leaving the loop early cancels the look-ups not yet started.
        """
        def attempt(want: Want) -> tuple[TreeInfo | LookupError_, bool]:
            try:
                return self.one(want)
            except LookupError_ as exc:
                return exc, True

        # files the session's cache knows first, here: a pool (its threads started and
        # waited for, a millisecond or more under load) only for files to open
        todo: list[int] = []
        for index, want in enumerate(wants):
            if self.cache is None:
                todo.append(index)
                continue
            try:  # a missing file is known here too ("file not found")
                stamp = file_stamp(want.path)
                info = None if stamp is None else self.cache.get(want.path, want.tree, stamp)
                if info is not None:
                    check_branches(info, want.path, want.branches)
            except LookupError_ as exc:
                yield index, self._counted(exc, True)
                continue
            if info is None:
                todo.append(index)
                continue
            yield index, self._counted(info, False)
        if len(todo) <= 1 or self.threads <= 1:
            for index in todo:
                yield index, self._counted(*attempt(wants[index]))
            return
        pool = ThreadPoolExecutor(max_workers=min(self.threads, len(todo)),
                                  thread_name_prefix="lookup")
        try:
            futures = {pool.submit(attempt, wants[i]): i for i in todo}
            for future in as_completed(futures):
                yield futures[future], self._counted(*future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _counted(self, result: TreeInfo | LookupError_, opened: bool) -> TreeInfo | LookupError_:
        if isinstance(result, TreeInfo):
            if opened:
                self.opened += 1
            else:
                self.cached += 1
        return result

    def many(self, wants: list[Want]) -> list[TreeInfo | LookupError_]:
        """Every look-up, in order; up to `threads` at once (remote files overlap)."""
        results: list[TreeInfo | LookupError_ | None] = [None] * len(wants)
        for index, result in self.each(wants):
            results[index] = result
        return results  # type: ignore[return-value]  (every index was filled)

    def stats(self) -> dict[str, int]:
        return {"lookups_opened": self.opened, "lookups_cached": self.cached,
                "lookups_catalog": self.catalog}


def lookup_element(path: str, tree: str | None, branches: list[str] | None) -> Element:
    """Open a file, find its tree, count entries and check the branches exist."""
    info, _ = Lookups(threads=1).one(Want(path, tree, branches))
    return Element(path=path, tree=info.tree, entries=info.entries, clusters=info.clusters)


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
            ranges.append(WorkRange(element=index, entry_start=lo + base, entry_stop=hi + base,
                                    boundaries=element.clusters))
        offset += n
    return ranges


def split_branches(branches: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """Main-tree branches, and the friend tree's (`friend.y` -> `y`)."""
    if branches is None:
        return None, []
    main = [b for b in branches if not b.startswith(FRIEND)]
    return main, [b[len(FRIEND):] for b in branches if b.startswith(FRIEND)]


def file_elements(dataset: list[Any], branches: list[str] | None, *, skip_missing: bool,
                  lookups: Lookups | None = None) -> tuple[list[Element], list[dict[str, Any]]]:
    """Elements of a file list; with skip_missing, bad files are listed instead of failing.

    Every file is looked up (there is no catalog to ask), from the session's
    cache when it has the file unchanged, else opened, several at once.
    """
    lookups = lookups or Lookups()
    main, _ = split_branches(branches)
    pairs = [(path, tree) for path, tree in dataset]
    results = lookups.many([Want(path, tree, main) for path, tree in pairs])
    elements, missing = [], []
    for (path, tree), result in zip(pairs, results, strict=True):
        if isinstance(result, LookupError_):
            if not skip_missing or "branch" in result.context:
                raise result
            missing.append({"file": path, "tree": tree, "reason": str(result)})
        else:
            elements.append(Element(path=path, tree=result.tree, entries=result.entries,
                                    clusters=result.clusters))
    return elements, missing


def catalog_elements(spec: str, user: str, branches: list[str] | None, *, skip_missing: bool,
                     catalog_path: str | None = None, lookups: Lookups | None = None,
                     ) -> tuple[list[Element], list[dict], int]:
    """Elements of a catalog dataset spec; returns (elements, missing, number of parts).

    A file the catalog has no entry count for is always opened. Otherwise the
    count comes from the catalog, and only the first file of each (dataset,
    tree) is opened, to check the selector's branches (the catalog does not
    know branches); a later file missing a branch fails on the worker that
    reads it, naming the file. If that first file cannot be read (and is
    skipped), the next one of its group is tried in another round. Friend
    files are opened where their main file is, and their entries compared;
    elsewhere the catalog's verification vouches for them (a mismatch marks
    the file bad).
    """
    from pyproof.datasets import Catalog, DatasetError, DatasetNotFoundError
    from pyproof.sandbox import default_catalog_path

    lookups = lookups or Lookups()
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
    resolved = list(resolution.elements)
    checking = bool(main) or bool(friends)
    infos: dict[int, TreeInfo | LookupError_] = {}
    checked: set[tuple[str, str]] = set()  # (dataset, tree) whose branches were checked
    while True:
        wanted, planned = [], set()
        for i, e in enumerate(resolved):
            group = (e.dataset, e.tree)
            if i in infos:
                continue
            unchecked = checking and group not in checked and group not in planned
            if e.entries is None or unchecked:
                wanted.append(i)
            planned.add(group)
        if not wanted:
            break
        results = lookups.many([Want(resolved[i].url, resolved[i].tree, main) for i in wanted])
        for i, result in zip(wanted, results, strict=True):
            infos[i] = result
            if isinstance(result, TreeInfo):
                checked.add((resolved[i].dataset, resolved[i].tree))
        if not skip_missing:
            break  # a failure fails the query below; no second round needed
    friend_wants = [i for i, r in infos.items()
                    if friends and isinstance(r, TreeInfo) and resolved[i].friend_url]
    friend_infos = dict(zip(friend_wants, lookups.many(
        [Want(resolved[i].friend_url, resolved[i].friend_tree, friends) for i in friend_wants]),
        strict=True))
    elements: list[Element] = []
    for i, e in enumerate(resolved):
        try:
            result = infos.get(i)
            if isinstance(result, LookupError_):
                raise result
            clusters: tuple[int, ...] = ()
            if result is None:
                lookups.catalog += 1
                entries = e.file_entries or 0
            else:
                entries, clusters = result.entries, result.clusters
            friend = friend_infos.get(i)
            if isinstance(friend, LookupError_):
                raise friend
            if friend is not None and friend.entries != entries:
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
        elements.append(Element(path=e.url, tree=e.tree, entries=entries,
                                entry_start=e.entry_start, entry_stop=e.entry_stop,
                                dataset=e.dataset, part=e.part, host=e.host,
                                friend_path=e.friend_url,
                                friend_tree=e.friend_tree, label=e.label,
                                metadata=e.metadata, clusters=clusters))
    return elements, missing, len(resolution.parts)
