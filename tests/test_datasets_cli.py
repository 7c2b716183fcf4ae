"""`proofctl ds ...` as wired by add_commands, on a real catalog file."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from pyproof.datasets.cli import add_commands, default_catalog_path, parse_bytes

DATA = Path(__file__).resolve().parent / "data"


def proofctl() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proofctl")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return parser


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    catalog = str(tmp_path / "cat.sqlite")

    def call(*argv: str) -> tuple[int, str, str]:
        args = proofctl().parse_args(["ds", *argv, "--user", "alice", "--group", "cms"])
        code = args.ds_handler(args, catalog)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def good(tmp_path: Path) -> list[str]:
    out = []
    for name in ("uproot-HZZ.root", "uproot-Zmumu.root"):
        shutil.copyfile(DATA / name, tmp_path / name)
        out.append(str(tmp_path / name))
    return out


def test_register_ls_show_verify_rm_round_trip(run, good: list[str]) -> None:
    code, out, _ = run("register", "mu#events", *good)
    assert code == 0 and out.startswith("registered /cms/alice/mu\n")
    code, out, _ = run("ls", "--json")
    (listed,) = json.loads(out)
    assert (listed["name"], listed["n_files"], listed["n_unverified"]) == ("/cms/alice/mu", 2, 2)
    code, out, _ = run("verify", "mu")
    assert code == 0
    assert out.startswith("verified /cms/alice/mu: 2 files, 2 ok, 0 missing, 0 corrupt")
    code, out, _ = run("show", "mu")
    lines = out.splitlines()
    assert lines[0].split() == [
        "DATASET", "FILES", "ENTRIES", "SIZE", "TREE", "BAD", "UNVERIFIED", "MODIFIED"
    ]
    assert lines[1].split()[:7] == ["/cms/alice/mu", "2", "4725", "396.9", "kB", "events", "0"]
    assert lines[3].split() == ["#", "URL", "TREE", "ENTRIES", "SIZE", "HOST", "STATUS", "PROBLEM"]
    assert lines[4].split()[1:4] == [good[0], "events", "2421"]
    code, out, _ = run("show", "mu", "--json")
    assert [f["entries"] for f in json.loads(out)["files"]] == [2421, 2304]
    code, out, _ = run("rm", "mu")
    assert (code, out) == (0, "removed /cms/alice/mu (2 files; files not touched)\n")
    assert run("ls")[1] == "no datasets\n"


def test_verify_exits_4_and_lists_the_bad_files(run, good: list[str]) -> None:
    run("register", "mu#events", *good)
    Path(good[1]).unlink()
    code, out, _ = run("verify", "mu", "--json")
    assert code == 4
    assert json.loads(out)["problems"] == [[good[1], "missing", "no such file"]]


def test_errors_are_one_line_on_stderr_or_json_with_exit_1(run, good: list[str]) -> None:
    run("register", "higgs#events", good[0])
    code, out, err = run("show", "higgz")
    assert (code, out) == (1, "")
    assert err == (
        "proofctl ds show: error: no dataset '/cms/alice/higgz'; did you mean "
        "'/cms/alice/higgs'?\n"
    )
    code, out, _ = run("register", "higgs", good[1], "--json")
    assert code == 1
    assert json.loads(out)["error"]["type"] == "DatasetExistsError"
    code, _, err = run("ls", "bad name")
    assert code == 1 and "error: bad dataset name 'bad name' at 'bad name'" in err


def test_register_update_from_a_list_and_from_a_dataset(
    run, good: list[str], tmp_path: Path
) -> None:
    listing = tmp_path / "files.txt"
    listing.write_text(f"{good[0]}\n{good[1]}\n")
    run("register", "a", good[0], "--tree", "events", "--verify")
    code, out, _ = run("register", "a", "--list", str(listing), "--update", "--json")
    assert (code, json.loads(out)["n_files"]) == (0, 2)
    code, out, _ = run("register", "b", "--from", "a", "--json")
    assert json.loads(out)["default_tree"] == "events"


def test_register_file_colon_tree_stores_file_and_tree_apart(run, good: list[str]) -> None:
    # HZZ holds 'events'; so does Zmumu: each file names its own tree, no default tree
    code, out, _ = run("register", "pertree", f"{good[0]}:events", f"{good[1]}:events",
                       "--verify", "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["default_tree"], info["n_bad"], info["total_entries"]) == (None, 0, 4725)
    code, out, _ = run("show", "pertree", "--json")
    assert [(f["url"], f["tree"], f["entries"]) for f in json.loads(out)["files"]] == [
        (good[0], "events", 2421), (good[1], "events", 2304)]


def test_quota_set_show_and_refusal(run, good: list[str]) -> None:
    code, _, err = run("quota", "--set", "100kB")
    assert code == 1 and "may not set quotas" in err
    code, out, _ = run("quota", "cms", "--set", "300kB", "--admin")
    assert out.split("\n")[1].split() == ["cms", "300.0", "kB", "0", "B", "300.0", "kB"]
    code, _, err = run("register", "both", *good)
    assert code == 1 and "error: registering '/cms/alice/both' needs 396.9 kB" in err
    code, out, _ = run("quota", "--json")
    assert json.loads(out) == [{"group": "cms", "limit": 300_000, "used": 0}]


def test_func_uses_the_catalog_option(tmp_path: Path, good: list[str], capsys) -> None:
    catalog = tmp_path / "elsewhere.sqlite"
    args = proofctl().parse_args(
        ["ds", "register", "x", good[0], "--catalog", str(catalog), "--group", "g"]
    )
    assert args.func(args) == 0
    assert catalog.exists()
    capsys.readouterr()


def test_the_default_catalog_lives_in_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYPROOF_CATALOG", raising=False)
    monkeypatch.setenv("PYPROOF_SANDBOX", "/srv/proof")
    assert default_catalog_path() == "/srv/proof/datasets.sqlite"
    monkeypatch.setenv("PYPROOF_CATALOG", "/x/c.sqlite")
    assert default_catalog_path() == "/x/c.sqlite"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1000", 1000), ("500MB", 500_000_000), ("1.5 GB", 1_500_000_000), ("2GiB", 2 << 30)],
)
def test_sizes_for_quotas(text: str, value: int) -> None:
    assert parse_bytes(text) == value
