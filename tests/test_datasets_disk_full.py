"""A catalog on a disk that fills up: a real tiny tmpfs, not a fake.

The error says "disk full" and names the catalog, is a ProofError, and the
catalog keeps what it held before (the failed change is rolled back).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import pyproof
from pyproof.datasets import Catalog, CatalogFullError


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 kB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def test_a_full_disk_says_disk_full_naming_the_catalog_and_loses_nothing(tiny_disk):
    path = str(tiny_disk / "catalog.sqlite")
    long = "x" * 200
    registered = []
    with Catalog(path, user="alice") as catalog:
        with pytest.raises(pyproof.ProofError,
                           match=rf"^disk full: cannot write the dataset catalog "
                                 rf"'{re.escape(path)}' \(database or disk is full\); nothing was "
                                 r"changed; free space on its filesystem and try again$") as info:
            for i in range(1000):  # 256 kB hold a few of these, never 1000
                catalog.register(f"ds{i}", [f"root://eos.example//{long}/f{j}.root"
                                            for j in range(20)], trust=True)
                registered.append(f"ds{i}")
        assert isinstance(info.value, CatalogFullError) and info.value.path == path
        assert registered  # it did fill up while registering, not on opening
    with Catalog(path, user="alice") as catalog:
        assert sorted(i.name.name for i in catalog.list()) == sorted(registered)
    assert os.path.exists(path)


def test_a_catalog_that_cannot_even_be_created_on_a_full_disk_says_so(tiny_disk):
    filler = tiny_disk / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * 1024 * 1024)  # fill the disk up
    path = str(tiny_disk / "catalog.sqlite")
    with pytest.raises(CatalogFullError, match=rf"^disk full: .*'{re.escape(path)}'"):
        Catalog(path, user="alice")
