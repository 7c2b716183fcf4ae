"""Look-ups on a real lite cluster: a second query on the same files opens none of them
on the master (the session remembers them), a rewritten file is looked up again, and a
cataloged dataset's entries come from the catalog. Results stay exact throughout."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

import pyproof
from pyproof.client.control import current_user
from pyproof.datasets import Catalog
from pyproof.datasets.cli import default_catalog_path


def write(path, start: int, n: int, branch: str = "x") -> str:
    with uproot.recreate(path) as f:
        f["t"] = {branch: np.arange(start, start + n, dtype=np.int64)}
    return str(path)


def ids(result) -> list[int]:
    return sorted(result.outputs["x"].tolist())


def test_a_second_query_on_the_same_files_opens_none_of_them_on_the_master(tmp_path, session):
    paths = [write(tmp_path / f"f{i}.root", 1000 * i, 300 + i) for i in range(4)]
    dataset = [f"{p}:t" for p in paths]
    expected = sorted(x for i in range(4) for x in range(1000 * i, 1000 * i + 300 + i))
    first = session.process("tests.sample_selectors:EntryList", dataset=dataset)
    assert (first.stats.lookups_opened, first.stats.lookups_cached) == (4, 0)
    second = session.process("tests.sample_selectors:EntryList", dataset=dataset)
    assert (second.stats.lookups_opened, second.stats.lookups_cached) == (0, 4)
    assert ids(first) == ids(second) == expected
    # a file rewritten since is looked up again, and read with its new entries
    write(paths[2], 50_000, 7)
    third = session.process("tests.sample_selectors:EntryList", dataset=dataset)
    assert (third.stats.lookups_opened, third.stats.lookups_cached) == (1, 3)
    assert ids(third) == sorted([x for x in expected if not 2000 <= x < 2302]
                                + list(range(50_000, 50_007)))


def test_a_cataloged_dataset_opens_only_its_first_file_to_check_branches(tmp_path, session):
    catalog = Catalog(default_catalog_path(), user=current_user())
    paths = [write(tmp_path / f"c{i}.root", 1000 * i, 200) for i in range(5)]
    catalog.register("counted", paths, tree="t", verify=True, overwrite=True)
    result = session.process("tests.sample_selectors:EntryList", dataset="counted")
    assert (result.stats.lookups_opened, result.stats.lookups_catalog) == (1, 4)
    assert ids(result) == sorted(x for i in range(5) for x in range(1000 * i, 1000 * i + 200))


def test_a_later_cataloged_file_without_the_branch_fails_on_the_worker_naming_it(
        tmp_path, session):
    catalog = Catalog(default_catalog_path(), user=current_user())
    paths = [write(tmp_path / "good.root", 0, 100), write(tmp_path / "bad.root", 0, 100, "z")]
    catalog.register("halfbad", paths, tree="t", verify=True, overwrite=True)
    with pytest.raises(pyproof.QueryError, match=r"MissingBranchError: no branch 'x' in tree "
                                                 r"'t' of .*bad\.root \(nearest: z\)"):
        session.process("tests.sample_selectors:EntryList", dataset="halfbad")
    # and the first file's branches are checked on the master, naming the branch
    catalog.register("badfirst", paths[::-1], tree="t", verify=True, overwrite=True)
    with pytest.raises(pyproof.QueryError, match=r"no branch 'x' in tree 't' of .*bad\.root"):
        session.process("tests.sample_selectors:EntryList", dataset="badfirst")
