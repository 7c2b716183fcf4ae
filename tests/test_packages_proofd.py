"""Packages on a real proofd with a sandbox of its own (its workers never see the client's
files), and the `proofctl packages` commands."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import pyproof
from pyproof.cli.main import main as proofctl
from pyproof.sandbox import default_secret_path, make_private_dir
from pyproof.transport import auth
from tests.daemon_helpers import Daemon
from tests.package_helpers import write_package, zip_dir
from tests.test_packages_lite import RUN, STDIN_SELECTOR, _python_stdin, run, unique


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    client_sandbox = os.environ["PYPROOF_SANDBOX"]
    own = str(tmp_path_factory.mktemp("proofd-sandbox"))
    auth.load_or_create_secret()  # the client's; the daemon gets a copy to check logins
    make_private_dir(own)
    shutil.copy(default_secret_path(), os.path.join(own, "secret"))
    os.chmod(os.path.join(own, "secret"), 0o600)
    os.environ["PYPROOF_SANDBOX"] = own
    try:
        daemon = Daemon()
    finally:
        os.environ["PYPROOF_SANDBOX"] = client_sandbox
    daemon.sandbox = own
    yield daemon
    os.environ["PYPROOF_SANDBOX"] = own
    try:
        daemon.stop()
    finally:
        os.environ["PYPROOF_SANDBOX"] = client_sandbox


def test_a_zip_package_runs_from_the_daemons_own_cache(daemon, tmp_path):
    name = unique("pkgremote")
    source = write_package(str(tmp_path / "src"), name, factor=6)
    archive = zip_dir(source, str(tmp_path / f"{name}.zip"))
    with pyproof.connect(daemon.url, workers=2) as session:
        assert session.upload_package(archive) == name
        shutil.rmtree(tmp_path / "src")  # what runs is the daemon's copy, not the client's
        os.remove(archive)
        session.enable_package(name)
        assert run(session, name).outputs["x"] == 600
    unpacked = os.path.join(daemon.sandbox, "packages")
    assert any(name in dirs for _, dirs, _ in os.walk(unpacked))
    client_cache = os.path.join(os.environ["PYPROOF_SANDBOX"], "packages")
    assert not any(name in dirs for _, dirs, _ in os.walk(client_cache))


def test_a_selector_from_standard_input_runs_on_proofd(daemon, tmp_path):
    body = STDIN_SELECTOR.format(imports="", extra="")
    out = _python_stdin(body + RUN.format(url=daemon.url + "?workers=2", ship=""),
                        str(tmp_path))
    assert "x 500" in out, out


def _ctl(capsys, *args: str) -> tuple[int, str, str]:
    code = proofctl(["packages", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_proofctl_packages_upload_ls_enable_disable_rm_clear(daemon, tmp_path, capsys):
    name = unique("pkgctl")
    path = write_package(str(tmp_path), name, factor=2)
    url = ["--url", daemon.url]
    code, out, _ = _ctl(capsys, "upload", path, *url, "--json")
    assert code == 0 and json.loads(out)["bytes_sent"] > 0
    code, out, _ = _ctl(capsys, "upload", path, *url)
    assert code == 0 and out.endswith("already on the host, nothing sent\n")
    with pyproof.connect(daemon.url, workers=1) as session:
        code, _, err = _ctl(capsys, "enable", name, *url)
        assert code == 1
        assert err == ("proofctl: `proofctl packages enable` needs --session S "
                       "(`proofctl sessions` lists yours)\n")
        code, out, _ = _ctl(capsys, "enable", name, *url, "--session", session.id)
        assert code == 0 and out == f"enabled in session {session.id}: {name}\n"
        code, out, _ = _ctl(capsys, "ls", *url, "--session", session.id, "--json")
        listed = {p["name"]: p for p in json.loads(out)["packages"]}
        assert listed[name]["enabled"] and listed[name]["setup"]
        assert run(session, name).outputs["x"] == 200
        code, out, _ = _ctl(capsys, "disable", name, *url, "--session", session.id)
        assert code == 0
        assert not {p["name"]: p for p in session.packages()}[name]["enabled"]
        code, _, err = _ctl(capsys, "disable", name, *url, "--session", session.id)
        assert code == 1 and f"package {name!r} is not enabled in session" in err
    code, out, _ = _ctl(capsys, "rm", name, *url)
    assert code == 0 and out == f"package {name} removed\n"
    code, _, err = _ctl(capsys, "rm", name, *url)
    assert code == 1 and err.startswith(f"proofctl: no package {name!r} on this host")
    _ctl(capsys, "upload", path, *url)
    code, out, _ = _ctl(capsys, "clear", *url, "--json")
    assert code == 0 and json.loads(out)["removed"] >= 1
    code, out, _ = _ctl(capsys, "ls", *url, "--json")
    assert json.loads(out)["packages"] == []
