"""Packages on other hosts (packages/remote.py): a host pulls a version it lacks from the
master host's store, chunk by chunk, checked as an upload is; no bytes when it has it."""

from __future__ import annotations

import os
import threading

import pytest
from package_helpers import write_package, zip_dir

from pyproof.packages import remote
from pyproof.packages.errors import PackageError
from pyproof.packages.store import PackageStore
from pyproof.packages.zips import build_package


def master_with(tmp_path, factor: int = 3) -> tuple[PackageStore, list[dict]]:
    src = write_package(str(tmp_path / f"src{factor}"), "rpkg", factor=factor)
    built = build_package(zip_dir(src, str(tmp_path / f"rpkg{factor}.zip")))
    master = PackageStore("alice", root=str(tmp_path / "master"))
    master.chunk(built.digest, 0, built.data, len(built.data))
    assert master.put(built.name, built.digest, len(built.data))["have"]
    master.enable("s1", "rpkg")
    resolved = master.resolve("s1")
    # workers ran there: bytecode in the tree is not part of the package
    os.makedirs(os.path.join(resolved[0]["path"], "rpkg", "__pycache__"), exist_ok=True)
    with open(os.path.join(resolved[0]["path"], "rpkg", "__pycache__", "x.pyc"), "wb") as f:
        f.write(b"junk")
    return master, remote.wire_list(resolved)


def fetcher(master: PackageStore, calls: list, length: int = 500):
    def fetch(digest: str, offset: int) -> dict:
        calls.append(offset)
        return remote.serve(master, digest, offset, length)
    return fetch


def test_a_missing_version_is_pulled_in_chunks_unpacked_and_resolved_locally(tmp_path):
    master, wanted = master_with(tmp_path)
    assert wanted[0]["setup"] == "rpkg/pyproof_setup.py" and wanted[0]["requires"] == []
    peer = PackageStore("alice", root=str(tmp_path / "peer"))
    calls: list = []
    local = remote.ensure(peer, "s1@h1", remote.check_wire_list(wanted),
                          fetcher(master, calls))
    assert len(calls) >= 2  # chunked
    assert [p["version"] for p in local] == [wanted[0]["version"]]
    assert local[0]["path"].startswith(str(tmp_path / "peer"))
    with open(os.path.join(local[0]["path"], "rpkg", "data", "factor.txt")) as f:
        assert f.read() == "3"
    assert local[0]["setup"] == os.path.join(local[0]["path"], "rpkg", "pyproof_setup.py")
    calls.clear()  # idempotent: no bytes the second time
    assert remote.ensure(peer, "s1@h1", remote.check_wire_list(wanted),
                         fetcher(master, calls)) == local
    assert calls == []


def test_a_lying_master_is_refused_by_the_same_checks_as_an_upload(tmp_path):
    master, wanted = master_with(tmp_path)
    peer = PackageStore("alice", root=str(tmp_path / "peer"))

    def corrupt(digest: str, offset: int) -> dict:
        answer = remote.serve(master, digest, offset, 10**6)
        data = bytearray(answer["data"])
        data[-30] ^= 0xFF
        return {**answer, "data": bytes(data)}

    with pytest.raises(PackageError, match="rpkg|hash|zip"):
        remote.ensure(peer, "s1@h1", remote.check_wire_list(wanted), corrupt)

    def huge(digest: str, offset: int) -> dict:
        return {"size": 10**12, "offset": offset, "data": b"x"}

    with pytest.raises(PackageError, match="over the cap"):
        remote.ensure(peer, "s1@h1", remote.check_wire_list(wanted), huge)
    with pytest.raises(PackageError, match="not a content hash"):
        remote.check_wire_list([{"name": "rpkg", "version": "../etc"}])
    with pytest.raises(PackageError, match="not a Python identifier"):
        remote.check_wire_list([{"name": "../x", "version": "0" * 64}])


def test_concurrent_pulls_unpack_once(tmp_path):
    master, wanted = master_with(tmp_path)
    peer_root = str(tmp_path / "peer")
    calls: list = []
    results: list = []
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait(10)
        results.append(remote.ensure(PackageStore("alice", root=peer_root), "s1@h1",
                                     remote.check_wire_list(wanted), fetcher(master, calls)))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert PackageStore("alice", root=peer_root).listing()["stats"]["unpacked"] == 1


def test_the_master_refuses_a_version_whose_tree_changed(tmp_path):
    master, wanted = master_with(tmp_path)
    path = master.resolve("s1")[0]["path"]
    with open(os.path.join(path, "rpkg", "data", "factor.txt"), "w") as f:
        f.write("99")
    remote._packed.clear()
    with pytest.raises(PackageError, match="changed since it was unpacked"):
        remote.serve(master, wanted[0]["version"], 0)
