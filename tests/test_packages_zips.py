"""Packages without a cluster: building, checking hostile zips, the host cache's rules."""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproof.packages import PackageError, zips
from pyproof.packages.store import PackageStore
from tests.conftest import at_once
from tests.package_helpers import write_package, zip_dir


def _zip(entries: list[tuple[str, bytes]], *, link: str | None = None) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are hostile input we want
        for name, data in entries:
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return out.getvalue()


def test_a_directory_and_its_zip_build_the_same_package(tmp_path):
    path = write_package(str(tmp_path), "pkg_same")
    (tmp_path / "pkg_same" / "__pycache__").mkdir()
    (tmp_path / "pkg_same" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    from_dir = zips.build_package(path)
    from_zip = zips.build_package(zip_dir(path, str(tmp_path / "pkg_same.zip")))
    assert from_dir.name == from_zip.name == "pkg_same"
    assert from_dir.digest == from_zip.digest
    assert from_dir.data == from_zip.data  # canonical: same bytes whatever made them


def test_a_flat_zip_goes_under_a_directory_named_after_it_and_a_wheel_keeps_its_root(tmp_path):
    flat = tmp_path / "flatpkg.zip"
    flat.write_bytes(_zip([("mod.py", b"X = 1\n")]))
    built = zips.build_package(flat)
    assert built.name == "flatpkg"
    assert [n for n, _ in zips.safe_entries(built.data, where="t")] == ["flatpkg/mod.py"]
    wheel = tmp_path / "wheelpkg-1.0-py3-none-any.whl"
    wheel.write_bytes(_zip([("wheelpkg/__init__.py", b""),
                            ("wheelpkg-1.0.dist-info/METADATA", b"Name: wheelpkg\n")]))
    built = zips.build_package(wheel)
    assert built.name == "wheelpkg"
    assert "wheelpkg/__init__.py" in dict(zips.safe_entries(built.data, where="t"))


def test_a_link_out_of_a_package_directory_is_refused(tmp_path):
    path = write_package(str(tmp_path), "pkg_link")
    os.symlink("/etc/hostname", os.path.join(path, "data", "host"))
    with pytest.raises(PackageError, match=r"is a link out of the package"):
        zips.build_package(path)


@pytest.mark.parametrize(("entries", "link", "message"), [
    ([("/etc/evil.py", b"")], None, r"entry '/etc/evil.py' has an absolute path"),
    ([("pkg/../../evil.py", b"")], None, r"entry 'pkg/../../evil.py' has '..'"),
    ([("C:/evil.py", b"")], None, r"has an absolute path"),
    ([("pkg\\..\\evil.py", b"")], None, r"has a backslash"),
    ([("pkg/a.py", b"")], "pkg/link", r"entry 'pkg/link' is a symbolic link"),
    # the same file twice under two spellings would crash the unpacker
    ([("pkg/x.py", b""), ("pkg/./x.py", b"")], None, r"has an empty or '\.' path segment"),
    ([("pkg//x.py", b"")], None, r"has an empty or '\.' path segment"),
])
def test_hostile_zip_entries_are_refused_before_anything_is_unpacked(tmp_path, entries, link,
                                                                     message):
    data = _zip(entries, link=link)
    target = tmp_path / "out"
    with pytest.raises(PackageError, match=message):
        zips.unpack(data, str(target), digest="0" * 64, where="package 'evil'")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_a_zip_bomb_is_refused_by_its_declared_size_and_by_what_it_inflates(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(zips, "MAX_UNPACKED", 1024 * 1024)
    bomb = _zip([("pkg/zeros.bin", b"\0" * (2 * 1024 * 1024))])  # a few KiB compressed
    with pytest.raises(PackageError, match=r"unpacks to more than 1 MiB .* \(a zip bomb\?\)"):
        zips.safe_entries(bomb, where="package 'bomb'")
    # a liar: the header says 10 bytes, the data inflates to 2 MiB (zipfile stops reading
    # at the declared size, so the liar shows as a bad checksum)
    raw = bytearray(bomb)
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        info = zf.infolist()[0]
    for offset in (info.header_offset + 22, raw.rfind(b"PK\x01\x02") + 24):
        raw[offset:offset + 4] = (10).to_bytes(4, "little")
    with pytest.raises(PackageError, match=r"^package 'liar': entry 'pkg/zeros.bin' (inflates "
                                           r"beyond its declared size|cannot be read \(Bad CRC)"):
        zips.safe_entries(bytes(raw), where="package 'liar'")


def test_content_that_does_not_match_its_hash_is_refused(tmp_path):
    data = _zip([("pkg/a.py", b"A = 1\n")])
    with pytest.raises(PackageError, match=r"its content hashes to .*upload it again"):
        zips.unpack(data, str(tmp_path / "v"), digest="1" * 64, where="package 'pkg'")


_names = st.lists(st.sampled_from(["pkg", "..", ".", "", "/", "a.py", "C:", "\\", "b", "\x00"]),
                  min_size=1, max_size=5).map("/".join).filter(lambda n: n.split("\x00", 1)[0])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(_names, st.binary(max_size=64)), min_size=1, max_size=6),
       link=st.one_of(st.none(), _names), junk=st.binary(max_size=64))
def test_the_unpacker_never_writes_outside_its_target_whatever_the_zip(tmp_path, entries, link,
                                                                       junk):
    data = _zip(entries, link=link) if junk[:1] != b"!" else junk  # some are not zips at all
    work = tmp_path / os.urandom(6).hex()
    work.mkdir()
    target = work / "v"
    try:
        ok = zips.safe_entries(data, where="fuzz")
        digest = zips.content_digest(ok)
        zips.unpack(data, str(target), digest=digest, where="fuzz")
    except PackageError:
        assert not target.exists()
    else:
        for root, _, files in os.walk(work):
            for file in files:
                assert os.path.realpath(os.path.join(root, file)).startswith(str(target) + "/")
    assert set(os.listdir(work)) <= {"v"}


def _upload(store: PackageStore, built: zips.Built) -> dict:
    reply = store.put(built.name, built.digest, len(built.data))
    if not reply["have"]:
        store.chunk(built.digest, 0, built.data, len(built.data))
        reply = store.put(built.name, built.digest, len(built.data))
    return reply


def test_eight_concurrent_uploads_of_one_package_unpack_it_once_and_whole(tmp_path):
    built = zips.build_package(write_package(str(tmp_path), "pkg_many"))
    root = str(tmp_path / "cache")
    # each its own store, so its own lock fd
    outcomes = at_once(8, lambda: _upload(PackageStore("alice", root), built)["have"])
    assert outcomes == [True] * 8, outcomes
    store = PackageStore("alice", root)
    listing = store.listing()
    assert listing["stats"]["unpacked"] == 1
    tree = store.version_dir(built.digest)
    assert sorted(os.listdir(os.path.join(tree, "pkg_many"))) == [
        "__init__.py", "data", "pyproof_setup.py", "selectors.py"]
    assert [n for n in os.listdir(os.path.dirname(tree))] == [built.digest]  # no leftovers
    for root_, dirs, files in os.walk(store.root):
        for name in dirs + files:
            mode = os.lstat(os.path.join(root_, name)).st_mode
            assert not mode & 0o077, (name, oct(mode))


def test_dependencies_come_first_and_a_cycle_or_a_missing_one_is_refused(tmp_path):
    store = PackageStore("bob", str(tmp_path / "cache"))
    for name, requires in (("base_a", []), ("mid_b", ["base_a"]), ("top_c", ["mid_b"]),
                           ("cyc_x", ["cyc_y"]), ("cyc_y", ["cyc_x"]), ("lone", ["nowhere"])):
        _upload(store, zips.build_package(write_package(str(tmp_path), name,
                                                        requires=requires)))
    assert store.enable("s1", "top_c") == ["base_a", "mid_b", "top_c"]
    assert [p["name"] for p in store.resolve("s1")] == ["base_a", "mid_b", "top_c"]
    with pytest.raises(PackageError, match=r"^package dependencies form a cycle: "
                                           r"cyc_x -> cyc_y -> cyc_x; remove one"):
        store.enable("s1", "cyc_x")
    with pytest.raises(PackageError, match=r"^no package 'nowhere' on this host .*"
                                           r"\(required by 'lone'\)$"):
        store.enable("s1", "lone")
    with pytest.raises(PackageError, match=r"package 'mid_b' is required by top_c"):
        store.disable("s1", "mid_b")
    assert [p["name"] for p in store.resolve("s1")] == ["base_a", "mid_b", "top_c"]


def test_a_pinned_version_stays_while_newer_ones_are_uploaded(tmp_path):
    store = PackageStore("carol", str(tmp_path / "cache"))
    v1 = zips.build_package(write_package(str(tmp_path / "1"), "pinned", factor=1))
    v2 = zips.build_package(write_package(str(tmp_path / "2"), "pinned", factor=2))
    _upload(store, v1)
    _upload(store, v2)
    store.enable("s", "pinned", version=v1.digest)
    store.enable("t", "pinned")
    assert store.resolve("s")[0]["version"] == v1.digest
    assert store.resolve("t")[0]["version"] == v2.digest
    with pytest.raises(PackageError, match=r"^package 'pinned' has no version 2222222222222222 "
                                           r"on this host \(it has: "):
        store.enable("s", "pinned", version="2" * 64)
    store.enable("s", "pinned", version=v2.digest[:12])  # a prefix, as `ls` shows it
    assert store.resolve("s")[0]["version"] == v2.digest


def test_a_setup_hook_that_hangs_is_bounded(tmp_path, monkeypatch):
    from pyproof.packages import activate

    release = threading.Event()
    hook = tmp_path / "v" / "hangs" / "pyproof_setup.py"
    hook.parent.mkdir(parents=True)
    hook.write_text("import builtins\n\ndef setup(ctx):\n    builtins._pyproof_release.wait(30)\n")
    import builtins
    monkeypatch.setattr(builtins, "_pyproof_release", release, raising=False)
    monkeypatch.setattr(activate, "SETUP_TIMEOUT", 0.2)
    package = {"name": "hangs", "version": "a" * 64, "path": str(tmp_path / "v"),
               "setup": str(hook)}
    try:
        with pytest.raises(PackageError, match=r"^package 'hangs' setup hook .*: setup\(ctx\) "
                                               r"did not return within 0.2 s"):
            activate.activate([package])
    finally:
        release.set()
        activate.activate([])  # leave this process's sys.path as it was
    assert str(tmp_path / "v") not in __import__("sys").path


def test_the_gateway_refuses_a_query_spec_that_names_packages_itself():
    from pyproof.query.spec import QuerySpec, SpecError

    spec = {"selector": "m:C", "cycles": 1, "client_address": "ipc:///x", "branches": None,
            "entries": None, "packetizer": None, "packetizer_params": None, "sys_path": None,
            "packages": [{"name": "x", "path": "/etc"}]}
    with pytest.raises(SpecError, match=r"^unknown query field\(s\): packages$"):
        QuerySpec.from_wire(spec)  # what the gateway calls on every start_query
    spec.pop("packages")
    assert QuerySpec.from_wire(spec).packages == ()
    spec["output_dir"] = "/etc"  # nor where workers write
    with pytest.raises(SpecError, match=r"^unknown query field\(s\): output_dir$"):
        QuerySpec.from_wire(spec)


def test_past_its_size_cap_the_cache_evicts_least_recently_used_versions_no_session_enables(
        tmp_path, monkeypatch):
    store = PackageStore("dave", str(tmp_path / "cache"))
    built = [zips.build_package(write_package(str(tmp_path / str(i)), "evicted", factor=i))
             for i in range(4)]
    _upload(store, built[0])
    store.enable("s", "evicted", version=built[0].digest)  # pinned: never evicted
    size = store.listing()["packages"][0]["size"]
    monkeypatch.setenv("PYPROOF_PACKAGE_CACHE", str(3 * size))
    for b in built[1:]:
        _upload(store, b)
    versions = store.listing()["packages"][0]["versions"]
    assert built[1].digest not in versions  # the least recently used unpinned one went
    assert {built[0].digest, built[2].digest, built[3].digest} == set(versions)
    assert not os.path.exists(store.version_dir(built[1].digest))
    assert store.resolve("s")[0]["version"] == built[0].digest


@pytest.mark.parametrize("size", [0, -1, zips.MAX_ZIP + 2])
def test_an_upload_of_an_impossible_size_is_refused_not_a_crash(tmp_path, monkeypatch, size):
    from pyproof.packages.service import handle_request

    monkeypatch.setenv("PYPROOF_SANDBOX", str(tmp_path))
    kind, body = handle_request("package_put", {"name": "abc", "digest": "0" * 64,
                                                "size": size}, user="erin", session=None)
    assert kind == "error"
    assert body["message"].startswith(f"package 'abc': size {size} is not between 1 and ")
