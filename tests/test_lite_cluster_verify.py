"""Dataset verification on a real lite cluster (one file per packet, the file packetizer):
it marks what a local verification marks and records it in the catalog."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import uproot

import pyproof
from pyproof.cli.main import build_parser
from pyproof.datasets import Catalog, verify_dataset
from tests.conftest import data_file


def mixed_files(directory: Path) -> list[str]:
    """Three good files, a truncated one, a missing one and one without the tree."""
    good = []
    for i in range(3):
        good.append(str(directory / f"good{i}.root"))
        shutil.copyfile(data_file("uproot-Zmumu.root"), good[-1])
    truncated = directory / "truncated.root"
    data = Path(data_file("uproot-Zmumu.root")).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    wrong = directory / "wrong_tree.root"
    with uproot.recreate(wrong) as out:
        out["other"] = {"x": np.arange(10.0)}
    return [good[0], str(truncated), good[1], str(directory / "missing.root"), str(wrong),
            good[2]]


def without_times(records):
    return [dataclasses.replace(r, verified_at=None) for r in records]


def test_cluster_verification_marks_bad_files_as_a_local_one_does(tmp_path, session):
    files = mixed_files(tmp_path)
    local = Catalog(tmp_path / "local.sqlite", user="alice")
    remote = Catalog(tmp_path / "remote.sqlite", user="alice")
    for catalog in (local, remote):
        catalog.register("mixed", files, tree="events")
    expected = verify_dataset(local, "mixed")
    summary = session.verify_dataset("mixed", catalog=remote)
    assert summary == expected
    assert (summary.files, summary.ok, summary.missing, summary.corrupt, summary.wrong_tree) == (
        6, 3, 1, 1, 1)
    assert summary.entries == 3 * 2304
    status = {url.rsplit("/", 1)[1]: why for url, why, _ in summary.problems}
    assert status == {"truncated.root": "corrupt", "missing.root": "missing",
                      "wrong_tree.root": "wrong-tree"}
    # recorded in the catalog, file by file, as the local verification recorded them
    assert without_times(remote.show("mixed").files) == without_times(local.show("mixed").files)
    assert all(f.verified for f in remote.show("mixed").files)
    # and spread over the workers, one file per packet
    stats = session.result(session.last_query).stats
    assert stats.packets == 6
    local.close()
    remote.close()


def test_an_unknown_dataset_is_an_error_before_the_cluster_is_asked(tmp_path, session):
    with Catalog(tmp_path / "c.sqlite", user="alice") as catalog, pytest.raises(
            pyproof.datasets.DatasetNotFoundError, match=r"nope"):
        session.verify_dataset("nope", catalog=catalog)


def test_proofctl_ds_verify_cluster(tmp_path, capsys):
    files = mixed_files(tmp_path)
    path = tmp_path / "cli.sqlite"
    with Catalog(path, user="alice") as catalog:
        catalog.register("mixed", files, tree="events")
    parser = build_parser()
    args = parser.parse_args(["ds", "verify", "mixed", "--cluster", "--workers", "2", "--json",
                              "--catalog", str(path), "--user", "alice"])
    assert args.func(args) == 4  # bad files found
    report = json.loads(capsys.readouterr().out)
    assert (report["files"], report["ok"], report["missing"], report["corrupt"],
            report["wrong_tree"]) == (6, 3, 1, 1, 1)
    with Catalog(path, user="alice") as catalog:
        assert catalog.info("mixed").n_bad == 3
