"""coffea filesets for `proofctl run --fileset` and the catalog (one dataset per name,
metadata kept, `ctx.dataset` the short name), on a real lite session and from the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import uproot

from pyproof.client.control import current_user
from pyproof.datasets import Catalog
from pyproof.datasets.errors import DatasetExistsError
from pyproof.sandbox import default_catalog_path
from tests.conftest import data_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZMUMU, ZSTD = data_file("uproot-Zmumu.root"), data_file("uproot-Zmumu-zstd.root")
FILESET = {"zz": [f"{ZMUMU}:events"],
           "zstd": {"files": {ZSTD: "events"}, "metadata": {"xsec": 5.5, "is_mc": True}}}
ENTRIES = 2304  # each file's events


def proofctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyproof.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def test_a_fileset_registers_one_dataset_per_name_and_queries_see_short_names(session):
    catalog = Catalog(default_catalog_path(), user=current_user())
    infos = catalog.register_fileset(FILESET, overwrite=True)
    me = f"/default/{current_user()}"
    assert [i.path for i in infos] == [f"{me}/zz", f"{me}/zstd"]
    assert catalog.fileset_metadata("zstd") == {"xsec": 5.5, "is_mc": True}
    assert catalog.fileset_metadata("zz") == {}
    assert [f.tree for f in catalog.show("zstd").files] == ["events"]
    result = session.process("tests.scikit_selectors:DatasetNames", dataset="zz|zstd",
                             progress=False, packetizer="basic",
                             packetizer_params={"packet_entries": 500})
    assert result.outputs["entries"] == {"zz": ENTRIES, "zstd": ENTRIES}
    assert set(result.outputs["metadata"]) == {"zz={}", 'zstd={"is_mc": true, "xsec": 5.5}'}
    # a dataset not registered from a fileset keeps its full name, as before
    catalog.register("plainzz", [ZMUMU], tree="events", overwrite=True)
    plain = session.process("tests.scikit_selectors:DatasetNames", dataset="plainzz",
                            progress=False)
    assert plain.outputs["entries"] == {f"{me}/plainzz": ENTRIES}


def test_a_fileset_whose_name_exists_changes_nothing(tmp_path):
    with Catalog(str(tmp_path / "cat.sqlite"), user="ann") as catalog:
        catalog.register("zstd", [ZSTD], tree="events")
        with pytest.raises(DatasetExistsError):
            catalog.register_fileset(FILESET)
        assert not catalog.exists("zz")
        assert catalog.fileset_metadata("zstd") is None


def test_proofctl_ds_register_and_run_take_a_fileset_file(tmp_path):
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(FILESET))
    catalog = str(tmp_path / "cat.sqlite")
    out = proofctl("ds", "register", "--fileset", str(path), "--catalog", catalog, "--json")
    assert out.returncode == 0, out.stderr
    assert [i["name"].rsplit("/", 1)[1] for i in json.loads(out.stdout)] == ["zz", "zstd"]
    with Catalog(catalog) as cat:
        assert cat.fileset_metadata("zstd") == {"xsec": 5.5, "is_mc": True}

    out = proofctl("run", "tests.scikit_selectors:DatasetNames", "--fileset", str(path),
                   "--workers", "1", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["outputs"]["entries"] == {"zz": ENTRIES, "zstd": ENTRIES}
    assert set(report["outputs"]["metadata"]) == {"zz={}",
                                                  'zstd={"is_mc": true, "xsec": 5.5}'}
    assert report["stats"]["entries"] == 2 * ENTRIES


def test_proofctl_names_a_bad_fileset_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zz": ')
    out = proofctl("run", "tests.scikit_selectors:DatasetNames", "--fileset", str(bad))
    assert out.returncode == 1
    assert f"proofctl: fileset {bad} is not valid JSON" in out.stderr
    bad.write_text('["a.root"]')
    out = proofctl("ds", "register", "--fileset", str(bad), "--catalog", str(tmp_path / "c"))
    assert out.returncode == 1
    assert "must be a JSON object of dataset name -> list of files" in out.stderr
    out = proofctl("run", "tests.scikit_selectors:DatasetNames", "--fileset",
                   str(tmp_path / "nowhere.json"))
    assert "proofctl: cannot read fileset" in out.stderr and "nowhere.json" in out.stderr
    out = proofctl("ds", "register", "--catalog", str(tmp_path / "c"))
    assert out.returncode == 1
    assert "needs a dataset name (or --fileset FILE)" in out.stderr
    out = proofctl("ds", "register", "x", "--fileset", str(bad), "--catalog",
                   str(tmp_path / "c"))
    assert out.returncode == 1 and "give no name, paths, --list, --from or --tree" in out.stderr


def test_the_catalog_schema_1_gains_the_fileset_table(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.sqlite")
    with Catalog(path, user="ann") as catalog:
        catalog.register("old", [ZMUMU], tree="events")
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE fileset_metadata")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Catalog(path, user="ann") as catalog:
        assert catalog.fileset_metadata("old") is None
        catalog.register_fileset({"new": [f"{ZMUMU}:events"]})
        assert catalog.fileset_metadata("new") == {}
    assert uproot.open(ZMUMU)["events"].num_entries == ENTRIES
