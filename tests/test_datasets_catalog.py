"""The SQLite dataset catalog: register, show, list, remove, quotas, resolve."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from pyproof.datasets.catalog import SCHEMA_VERSION, Catalog
from pyproof.datasets.errors import (
    BadFilesError,
    CatalogError,
    DatasetError,
    DatasetExistsError,
    DatasetNameError,
    DatasetNotFoundError,
    DatasetPermissionError,
    EntriesUnknownError,
    NoTreeError,
    QuotaExceededError,
    SourceError,
)
from pyproof.datasets.records import DatasetInfo, Element, FileRecord, Resolution


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "catalog.sqlite"


@pytest.fixture
def cat(db: Path) -> Catalog:
    catalog = Catalog(db, user="alice", group="cms", host="node0", clock=Clock())
    yield catalog
    catalog.close()


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    """Five small local files (not ROOT: the catalog does not open files)."""
    out = []
    for i in range(5):
        path = tmp_path / "data" / f"f{i}.root"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * (100 * (i + 1)))
        out.append(str(path))
    return out


def remote(
    n: int, entries: int = 100, tree: str | None = None, prefix: str = "r"
) -> list[FileRecord]:
    return [
        FileRecord(url=f"root://eos{i % 2}.cern.ch//data/{prefix}{i}.root", entries=entries,
                   size=10, tree=tree)
        for i in range(n)
    ]


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# ---- opening -------------------------------------------------------------------------


def test_a_new_catalog_uses_wal_and_records_its_schema_version(cat: Catalog, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_catalog_from_a_newer_pyproof_is_refused(db: Path) -> None:
    Catalog(db, user="alice", group="cms").close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError,
                       match=rf"has schema version {SCHEMA_VERSION + 1}, newer than this"):
        Catalog(db, user="alice", group="cms")


# ---- registering ---------------------------------------------------------------------


def test_register_from_paths_keeps_order_absolute_paths_sizes_and_host(
    cat: Catalog, files: list[str]
) -> None:
    info = cat.register("run1#events", [files[2], files[0]])
    assert info.path == "/cms/alice/run1"
    assert info.default_tree == "events"
    assert (info.n_files, info.total_size, info.n_unverified) == (2, 400, 2)
    shown = cat.show("run1")
    assert [f.url for f in shown.files] == [files[2], files[0]]
    assert [f.host for f in shown.files] == ["node0", "node0"]
    assert shown.info.owner == "alice"


def test_register_from_a_glob_expands_in_sorted_order(cat: Catalog, files: list[str]) -> None:
    cat.register("g", [str(Path(files[0]).parent / "f[1-3].root")], tree="t")
    assert [Path(f.url).name for f in cat.show("g").files] == ["f1.root", "f2.root", "f3.root"]


def test_a_glob_that_matches_nothing_is_an_error(cat: Catalog, tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing*.root")
    with pytest.raises(SourceError, match=exact(f"glob {pattern!r} matched no file")):
        cat.register("g", [pattern])


def test_register_from_a_text_file_relative_to_it_with_metadata_kept_when_trusted(
    cat: Catalog, files: list[str], tmp_path: Path
) -> None:
    listing = tmp_path / "data" / "list.txt"
    listing.write_text(
        "# my files\n"
        "f0.root entries=7 tree=events host=n1\n"
        "\n"
        f"{files[1]}\n"
        "root://eos.cern.ch//x.root size=99 entries=3\n"
    )
    cat.register("listed", list_file=listing, trust=True)
    got = cat.show("listed").files
    assert [f.url for f in got] == [files[0], files[1], "root://eos.cern.ch//x.root"]
    assert (got[0].entries, got[0].tree, got[0].host) == (7, "events", "n1")
    assert (got[2].host, got[2].size) == ("eos.cern.ch", 99)


def test_a_bad_line_in_a_text_file_names_the_file_and_line(cat: Catalog, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.root\nb.root colour=red\n")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(listing))}:2: 'colour=red' is not"):
        cat.register("listed", list_file=listing)


def test_without_trust_given_metadata_is_reset(cat: Catalog) -> None:
    cat.register("r", remote(2), tree="t")
    assert [f.entries for f in cat.show("r").files] == [None, None]
    cat.register("r2", remote(2), tree="t", trust=True)
    assert [f.entries for f in cat.show("r2").files] == [100, 100]


def test_register_from_another_dataset_copies_files_metadata_and_tree(cat: Catalog) -> None:
    cat.register("src", remote(3), tree="events", trust=True)
    info = cat.register("copy", from_dataset="src")
    assert (info.default_tree, info.n_files, info.total_entries) == ("events", 3, 300)


def test_duplicate_registration_without_overwrite_is_refused(
    cat: Catalog, files: list[str]
) -> None:
    cat.register("dup", files[:1])
    with pytest.raises(
        DatasetExistsError,
        match=exact(
            "dataset '/cms/alice/dup' exists; register with overwrite=True to replace it or "
            "update=True to add files to it"
        ),
    ):
        cat.register("dup", files[1:2])
    assert [f.url for f in cat.show("dup").files] == files[:1]


def test_overwrite_replaces_the_files(cat: Catalog, files: list[str]) -> None:
    cat.register("ds", files[:3])
    info = cat.register("ds", files[3:], overwrite=True)
    assert [f.url for f in cat.show("ds").files] == files[3:]
    assert info.n_files == 2


def test_update_adds_new_files_and_drops_duplicates(cat: Catalog, files: list[str]) -> None:
    cat.register("ds", files[:2])
    info = cat.register("ds", [files[1], files[2], files[2], files[0], files[3]], update=True)
    assert [f.url for f in cat.show("ds").files] == files[:4]
    assert info.n_files == 4


def test_a_missing_local_file_is_marked_at_registration(cat: Catalog, tmp_path: Path) -> None:
    cat.register("m", [str(tmp_path / "gone.root")])
    (record,) = cat.show("m").files
    assert (record.missing, record.problem, record.status()) == (True, "no such file", "missing")


def test_registering_nothing_is_an_error(cat: Catalog) -> None:
    with pytest.raises(SourceError, match=r"^nothing to register as '/cms/alice/e'"):
        cat.register("e", [])


def test_registering_an_entry_selection_is_a_name_error(cat: Catalog, files: list[str]) -> None:
    with pytest.raises(DatasetNameError, match=r"holds whole files"):
        cat.register("x?entries=0-9", files)


# ---- show, list, remove --------------------------------------------------------------


def test_an_unknown_dataset_suggests_the_nearest_names(cat: Catalog, files: list[str]) -> None:
    for name in ("higgs_2018", "higgs_2017", "zmumu"):
        cat.register(name, files[:1])
    with pytest.raises(
        DatasetNotFoundError,
        match=exact(
            "no dataset '/cms/alice/higgs_2019'; did you mean '/cms/alice/higgs_2017', "
            "'/cms/alice/higgs_2018'?"
        ),
    ):
        cat.show("higgs_2019")
    with pytest.raises(
        DatasetNotFoundError,
        match=exact("no dataset '/cms/alice/qcd'; no similar names; 'ds ls' lists the datasets"),
    ):
        cat.info("qcd")


def test_a_name_in_another_area_is_suggested_by_its_last_component(
    db: Path, files: list[str]
) -> None:
    with Catalog(db, user="bob", group="atlas") as bob:
        bob.register("ttbar_nominal", files[:1])
    with Catalog(db, user="alice", group="cms") as alice, pytest.raises(
        DatasetNotFoundError, match=r"did you mean '/atlas/bob/ttbar_nominal'\?$"
    ):
        alice.show("ttbar_nomimal")


def test_list_with_wildcards_across_areas(db: Path, files: list[str]) -> None:
    with Catalog(db, user="bob", group="cms") as bob:
        bob.register("zmm", files[:1])
    with Catalog(db, user="alice", group="cms") as alice:
        alice.register("zee", files[:1])
        alice.register("higgs", files[:2])
        assert [i.path for i in alice.list()] == ["/cms/alice/higgs", "/cms/alice/zee"]
        assert [i.path for i in alice.list("z*")] == ["/cms/alice/zee"]
        assert [i.path for i in alice.list("*/z*")] == ["/cms/alice/zee", "/cms/bob/zmm"]
        assert [i.path for i in alice.list("/")] == [
            "/cms/alice/higgs", "/cms/alice/zee", "/cms/bob/zmm"
        ]


def test_remove_forgets_the_dataset_and_its_files(cat: Catalog, files: list[str]) -> None:
    cat.register("gone", files[:2])
    assert cat.remove("gone").n_files == 2
    assert not cat.exists("gone")
    with pytest.raises(DatasetNotFoundError):
        cat.remove("gone")
    assert all(Path(f).exists() for f in files)


# ---- areas and permissions -----------------------------------------------------------


def test_common_is_readable_by_all_and_a_bare_name_falls_back_to_it(
    db: Path, files: list[str]
) -> None:
    with Catalog(db, user="root", group="admins", admin=True) as admin:
        admin.register("COMMON/reference", files[:1])
    with Catalog(db, user="alice", group="cms") as alice:
        assert alice.show("reference").info.path == "/COMMON/COMMON/reference"
        assert alice.resolve("COMMON/reference#t").parts == (("/COMMON/COMMON/reference",),)
        with pytest.raises(DatasetPermissionError, match=r"may not change '/COMMON/COMMON/ref"):
            alice.remove("reference")


def test_changing_another_users_dataset_is_refused(db: Path, files: list[str]) -> None:
    with Catalog(db, user="bob", group="cms") as bob:
        bob.register("zmm", files[:1])
    with Catalog(db, user="alice", group="cms") as alice:
        assert alice.show("bob/zmm").info.owner == "bob"
        with pytest.raises(
            DatasetPermissionError,
            match=exact(
                "user 'alice' of group 'cms' may not change '/cms/bob/zmm': only datasets "
                "under /cms/alice/ can be changed (and /COMMON/COMMON/ by an admin)"
            ),
        ):
            alice.register("bob/zmm", files[1:2], update=True)


# ---- quotas --------------------------------------------------------------------------


def test_over_quota_registration_is_refused_and_changes_nothing(
    db: Path, files: list[str]
) -> None:
    with Catalog(db, user="root", group="cms", admin=True) as admin:
        admin.set_quota("cms", 1000)
    with Catalog(db, user="alice", group="cms") as alice:
        alice.register("a", files[:3])  # 100 + 200 + 300 bytes
        with pytest.raises(
            QuotaExceededError,
            match=exact(
                "registering '/cms/alice/b' needs 900 B but group 'cms' has 400 B left of its "
                "1.0 kB quota (600 B used); nothing was registered"
            ),
        ):
            alice.register("b", files[3:])
        assert not alice.exists("b")
        assert alice.quota().used == 600
        alice.register("a", files[3:4], overwrite=True)  # shrinking to 400 B is fine
        assert alice.quota() == alice.quotas()[0]
        assert alice.quota().left == 600


def test_files_of_unknown_size_count_at_the_average_file_size(db: Path) -> None:
    with Catalog(db, user="root", group="cms", admin=True, average_file_size=600) as admin:
        admin.set_quota("cms", 1000)
        with pytest.raises(QuotaExceededError, match=r"needs 1.2 kB"):
            admin.register("cms/big", ["root://eos//a.root", "root://eos//b.root"])


def test_only_an_admin_sets_quotas(cat: Catalog) -> None:
    with pytest.raises(DatasetPermissionError, match=r"^user 'alice' may not set quotas"):
        cat.set_quota("cms", 10)


# ---- resolving -----------------------------------------------------------------------


@pytest.fixture
def three(cat: Catalog) -> Catalog:
    cat.register("a#events", remote(2, entries=100), trust=True)
    cat.register("b#events", remote(3, entries=50, prefix="b")[::-1], trust=True)
    cat.register("c", remote(1, entries=10, tree="other", prefix="c"), trust=True)
    return cat


def test_a_single_dataset_resolves_to_one_element_per_file(three: Catalog) -> None:
    resolved = three.resolve("a")
    assert resolved.parts == (("/cms/alice/a",),)
    assert [(e.url, e.tree, e.entry_start, e.entry_stop, e.host) for e in resolved.elements] == [
        ("root://eos0.cern.ch//data/r0.root", "events", 0, 100, "eos0.cern.ch"),
        ("root://eos1.cern.ch//data/r1.root", "events", 0, 100, "eos1.cern.ch"),
    ]
    assert resolved.total_entries == 200
    assert not resolved.sequential


def test_a_union_is_one_part_with_the_concatenated_files(three: Catalog) -> None:
    union = three.resolve("a|b")
    three.register(
        "ab#events", three.show("a").files + three.show("b").files, trust=True
    )
    concatenated = three.resolve("ab")

    def strip(e: Element) -> tuple:
        return (e.url, e.tree, e.entry_start, e.entry_stop, e.host)

    assert [strip(e) for e in union.elements] == [strip(e) for e in concatenated.elements]
    assert union.parts == (("/cms/alice/a", "/cms/alice/b"),)
    assert [e.dataset for e in union.elements] == ["/cms/alice/a"] * 2 + ["/cms/alice/b"] * 3


def test_a_sequence_is_one_part_per_dataset(three: Catalog) -> None:
    resolved = three.resolve("a,b")
    assert resolved.sequential
    assert [len(resolved.elements_of(i)) for i in range(2)] == [2, 3]
    assert three.resolve(["a", "b"], sequential=True).parts == resolved.parts
    assert three.resolve(["a", "b"]).parts == (("/cms/alice/a", "/cms/alice/b"),)


def test_entry_ranges_count_through_the_files_and_become_local_ranges(
    three: Catalog,
) -> None:
    resolved = three.resolve("a?entries=90-109+150-")
    assert [(e.file_index, e.entry_start, e.entry_stop) for e in resolved.elements] == [
        (0, 90, 100), (1, 0, 10), (1, 50, 100)
    ]
    assert resolved.total_entries == 70
    listed = three.resolve("b", entries=[0, 1, 2, 120])
    assert [(e.file_index, e.entry_start, e.entry_stop) for e in listed.elements] == [
        (0, 0, 3), (2, 20, 21)
    ]


def test_tree_from_the_spec_the_file_or_the_dataset(three: Catalog) -> None:
    assert [e.tree for e in three.resolve("c").elements] == ["other"]
    assert [e.tree for e in three.resolve("a#dir/t").elements] == ["dir/t", "dir/t"]
    # entries of a tree the catalog never counted are unknown: the master counts them
    assert three.resolve("a#dir/t").elements[0].entries is None


def test_no_tree_anywhere_is_an_error(cat: Catalog) -> None:
    cat.register("nt", remote(1))
    with pytest.raises(NoTreeError, match=r"^dataset '/cms/alice/nt' has no default tree"):
        cat.resolve("nt")


def test_an_entry_selection_needs_known_entries(cat: Catalog) -> None:
    cat.register("unverified#t", remote(2))
    assert cat.resolve("unverified").total_entries is None
    with pytest.raises(
        EntriesUnknownError,
        match=exact(
            "cannot select entries of '/cms/alice/unverified': the entries of 2 file(s) are not "
            "known (first: 'root://eos0.cern.ch//data/r0.root'); verify the dataset first"
        ),
    ):
        cat.resolve("unverified?entries=0-9")


def test_bad_files_fail_naming_them_or_are_skipped(cat: Catalog) -> None:
    good = FileRecord(url="root://h//good.root", entries=5, verified_at=1.0, staged=True,
                      trees=(("t", 5),))
    gone = FileRecord(url="root://h//gone.root", missing=True, problem="no such file")
    bent = FileRecord(url="root://h//bent.root", corrupt=True, problem="truncated: 5 of 9")
    cat.register("mixed#t", [gone, good, bent], trust=True)
    with pytest.raises(
        BadFilesError,
        match=exact(
            "2 bad file(s): root://h//gone.root: no such file; root://h//bent.root: truncated: "
            "5 of 9; skip them with bad_files='skip' or fix them and verify again"
        ),
    ):
        cat.resolve("mixed")
    resolved = cat.resolve("mixed", bad_files="skip")
    assert [e.url for e in resolved.elements] == ["root://h//good.root"]
    assert [(s.url, s.reason) for s in resolved.skipped] == [
        ("root://h//gone.root", "no such file"), ("root://h//bent.root", "truncated: 5 of 9")
    ]
    other_tree = cat.resolve("mixed#x", bad_files="skip")
    assert other_tree.elements == ()
    assert other_tree.skipped[1].reason == "no tree 'x' (has: t)"


def test_resolving_an_unknown_dataset_in_a_union_suggests_names(three: Catalog) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"^no dataset '/cms/alice/bb'; did you"):
        three.resolve("a|bb")


def test_every_error_is_a_dataset_error() -> None:
    for cls in (BadFilesError, CatalogError, DatasetExistsError, DatasetNameError,
                DatasetNotFoundError, DatasetPermissionError, EntriesUnknownError, NoTreeError,
                QuotaExceededError, SourceError):
        assert issubclass(cls, DatasetError)


def test_records_and_resolutions_round_trip_through_plain_dicts(three: Catalog) -> None:
    resolved = three.resolve("a|b,c")
    assert Resolution.from_dict(resolved.to_dict()) == resolved
    info = three.info("a")
    assert DatasetInfo.from_dict(info.to_dict()) == info
    record = FileRecord(url="u", trees=(("t", 1),), entries=1)
    assert FileRecord.from_dict(record.to_dict()) == record
