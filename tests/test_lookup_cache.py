"""The master's look-up cache and pool (pyproof.actors.lookup), on real files written
with uproot: a file rewritten since (other size or mtime) is opened again."""

from __future__ import annotations

import os

import numpy as np
import pytest
import uproot

from pyproof.actors.lookup import (
    LookupCache,
    LookupError_,
    Lookups,
    Want,
    file_elements,
    file_stamp,
)


def write(path, n: int, start: int = 0) -> str:
    with uproot.recreate(path, compression=None) as f:  # same n, same size
        f["t"] = {"x": np.arange(start, start + n, dtype=np.int64)}
    return str(path)


def test_a_second_look_up_of_an_unchanged_file_opens_nothing(tmp_path):
    path = write(tmp_path / "a.root", 10)
    lookups = Lookups(LookupCache())
    info, opened = lookups.one(Want(path, "t", ["x"]))
    assert (info.entries, info.tree, opened) == (10, "t", True)
    info, opened = lookups.one(Want(path, "t", ["x"]))
    assert (info.entries, opened) == (10, False)


def test_the_cache_notices_a_file_rewritten_with_another_size(tmp_path):
    path = write(tmp_path / "a.root", 10)
    lookups = Lookups(LookupCache())
    lookups.one(Want(path, "t", None))
    size = os.path.getsize(path)
    write(path, 1000)
    assert os.path.getsize(path) != size
    info, opened = lookups.one(Want(path, "t", None))
    assert (info.entries, opened) == (1000, True)


def test_the_cache_notices_a_file_rewritten_with_the_same_size_but_another_mtime(tmp_path):
    path = write(tmp_path / "a.root", 10)
    stat = os.stat(path)
    lookups = Lookups(LookupCache())
    lookups.one(Want(path, "t", None))
    write(path, 10, start=100)  # same size, other content, in place
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = os.stat(path)
    assert (after.st_size, after.st_ino) == (stat.st_size, stat.st_ino)
    _, opened = lookups.one(Want(path, "t", None))
    assert opened
    _, opened = lookups.one(Want(path, "t", None))
    assert not opened


def test_a_missing_branch_is_named_from_the_cache_too(tmp_path):
    path = write(tmp_path / "a.root", 10)
    lookups = Lookups(LookupCache())
    lookups.one(Want(path, "t", ["x"]))
    with pytest.raises(LookupError_, match=r"^no branch 'y' in tree 't' of .*a\.root "
                                           r"\(nearest: x\)$"):
        lookups.one(Want(path, "t", ["y"]))


def test_a_deleted_file_is_not_found_even_when_it_was_cached(tmp_path):
    path = write(tmp_path / "a.root", 10)
    lookups = Lookups(LookupCache())
    lookups.one(Want(path, "t", None))
    os.remove(path)
    with pytest.raises(LookupError_, match=r"^file not found: .*a\.root$"):
        lookups.one(Want(path, "t", None))


def test_remote_urls_have_no_stamp_and_are_not_cached():
    assert file_stamp("root://eos.example.org//store/a.root") is None
    assert file_stamp("https://example.org/a.root") is None


def test_many_files_are_looked_up_in_order_in_a_pool_and_counted(tmp_path):
    paths = [write(tmp_path / f"f{i}.root", 10 + i) for i in range(12)]
    cache = LookupCache()
    first = Lookups(cache, threads=4)
    elements, missing = file_elements([(p, "t") for p in paths], ["x"], skip_missing=False,
                                      lookups=first)
    assert [e.entries for e in elements] == [10 + i for i in range(12)] and not missing
    assert (first.opened, first.cached) == (12, 0)
    write(paths[5], 3)
    second = Lookups(cache, threads=4)
    elements, _ = file_elements([(p, "t") for p in paths], ["x"], skip_missing=False,
                                lookups=second)
    assert elements[5].entries == 3
    assert (second.opened, second.cached) == (1, 11)


def test_the_first_bad_file_in_list_order_fails_the_look_up(tmp_path):
    paths = [write(tmp_path / f"f{i}.root", 5) for i in range(6)]
    dataset = [(p, "t") for p in paths]
    dataset[2] = (str(tmp_path / "gone2.root"), "t")
    dataset[4] = (str(tmp_path / "gone4.root"), "t")
    with pytest.raises(LookupError_, match=r"^file not found: .*gone2\.root$"):
        file_elements(dataset, None, skip_missing=False, lookups=Lookups(threads=4))
    elements, missing = file_elements(dataset, None, skip_missing=True,
                                      lookups=Lookups(threads=4))
    assert len(elements) == 4
    assert [m["file"] for m in missing] == [dataset[2][0], dataset[4][0]]


def test_a_look_up_learns_where_baskets_begin_and_the_work_carries_it(tmp_path):
    """Packet edges go on basket boundaries (packetizer.common.on_boundary): the look-up
    reads them from the file's metadata, and the work ranges carry them to the packetizer."""
    from pyproof.actors.lookup import select_ranges

    path = str(tmp_path / "b.root")
    with uproot.recreate(path) as f:
        f.mktree("t", {"x": np.int64, "y": np.float32})
        for start in range(0, 25, 10):  # one basket per extend: 10, 10, 5 entries
            n = min(10, 25 - start)
            f["t"].extend({"x": np.arange(n, dtype=np.int64), "y": np.ones(n, np.float32)})
    info, _ = Lookups().one(Want(path, "t", ["x"]))
    assert info.clusters == (0, 10, 20, 25)
    elements, _ = file_elements([(path, "t")], ["x"], skip_missing=False)
    (work,) = select_ranges(elements, 0, None)
    assert work.boundaries == (0, 10, 20, 25)


def test_files_the_cache_knows_are_answered_without_a_pool(tmp_path, monkeypatch):
    # a pool's threads are started and waited for: about 1.5 ms of a warm 8-file query
    from pyproof.actors import lookup

    paths = [write(tmp_path / f"f{i}.root", 10 + i) for i in range(8)]
    cache = LookupCache()
    file_elements([(p, "t") for p in paths], ["x"], skip_missing=False,
                  lookups=Lookups(cache, threads=4))
    pools: list[int] = []
    real_pool = lookup.ThreadPoolExecutor

    def counted_pool(*args, **kwargs):
        pools.append(kwargs.get("max_workers", 0))
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(lookup, "ThreadPoolExecutor", counted_pool)
    again = Lookups(cache, threads=4)
    elements, _ = file_elements([(p, "t") for p in paths], ["x"], skip_missing=False,
                                lookups=again)
    assert [e.entries for e in elements] == [10 + i for i in range(8)]
    assert (again.opened, again.cached, pools) == (0, 8, [])
    # one file rewritten, two new ones: only those go to a pool (of two threads)
    write(paths[3], 2)
    more = [write(tmp_path / f"g{i}.root", 5) for i in range(2)]
    third = Lookups(cache, threads=4)
    elements, _ = file_elements([(p, "t") for p in paths + more], ["x"], skip_missing=False,
                                lookups=third)
    assert [e.entries for e in elements][3:4] + [e.entries for e in elements][8:] == [2, 5, 5]
    assert (third.opened, third.cached, pools) == (3, 7, [3])
    with pytest.raises(LookupError_, match="no branch 'y'"):  # checked from the cache too
        file_elements([(p, "t") for p in paths], ["y"], skip_missing=False,
                      lookups=Lookups(cache, threads=4))


def test_a_missing_file_among_cached_ones_is_an_error_of_its_own_not_of_the_look_up(tmp_path):
    # each (index, result): the missing file's error is its result, the others still come
    paths = [write(tmp_path / f"f{i}.root", 10) for i in range(3)]
    cache = LookupCache()
    Lookups(cache, threads=4).many([Want(p, "t", ["x"]) for p in paths])
    gone = str(tmp_path / "gone.root")
    results = Lookups(cache, threads=4).many([Want(p, "t", ["x"]) for p in [paths[0], gone,
                                                                             paths[2]]])
    assert [r.entries for r in (results[0], results[2])] == [10, 10]
    assert isinstance(results[1], LookupError_) and str(results[1]) == f"file not found: {gone}"
