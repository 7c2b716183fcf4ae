"""proofctl against real daemons (TLS ones too), and the errors and exit codes a user meets.

Every command that talks to a daemon takes --url, else $PYPROOF_URL, and dials
it the way pyproof.connect does (TLS when $PYPROOF_TLS_CA is set).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

import pyproof
from pyproof.actors.system import spare_port
from pyproof.cli.main import main
from tests.conftest import data_file
from tests.daemon_helpers import Daemon, tls_server_env
from tests.test_cli import ROOT

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

ZMUMU = data_file("uproot-Zmumu.root") + ":events"


def proofctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyproof.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_error_line(out: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 1 and exactly one line on stderr, `proofctl: ...`, matching `pattern`."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert re.match(pattern, out.stderr.strip()), out.stderr


@pytest.fixture
def tls_daemon(tmp_path, monkeypatch):
    tls_server_env(tmp_path, monkeypatch)
    monkeypatch.delenv("PYPROOF_URL", raising=False)
    d = Daemon()
    # from here on a client: it trusts the CA, has no certificate of its own
    monkeypatch.delenv("PYPROOF_TLS_CERT")
    monkeypatch.delenv("PYPROOF_TLS_KEY")
    yield d
    d.stop()


def test_every_admin_command_reaches_a_tls_daemon_named_by_url(tls_daemon):
    url = tls_daemon.url
    with pyproof.connect(f"{url}?workers=1") as session:
        sessions = proofctl("sessions", "--url", url, "--json")
        assert sessions.returncode == 0, sessions.stderr
        assert json.loads(sessions.stdout)[session.id]["alive"] is True

        status = proofctl("status", "--url", url, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout) == {
            "url": url, "root_pid": tls_daemon.pids()["root"], "sessions": 1, "workers": 1,
            "restarts": 0}

        tree = proofctl("tree", "--url", url, "--json")
        assert tree.returncode == 0, tree.stderr
        assert tree_ids(json.loads(tree.stdout)) >= {"gateway", "sessions", session.id}

        logs = proofctl("logs", session.id, "--url", url, "--json")
        assert logs.returncode == 0, logs.stderr
        records = [json.loads(line) for line in logs.stdout.splitlines()]
        assert records and {r["session"] for r in records} == {session.id}

        unknown = proofctl("kill", "no-such-session", "--url", url)
        one_error_line(unknown, rf"^proofctl: no session 'no-such-session' at "
                                rf"{re.escape(url)} \(yours: {session.id}\); "
                                r"`proofctl sessions` lists them$")

        kill = proofctl("kill", session.id, "--url", url, "--json")
        assert kill.returncode == 0, kill.stderr
        assert json.loads(kill.stdout) == {"closed": [session.id]}
    after = json.loads(proofctl("sessions", "--url", url, "--json").stdout)
    assert session.id not in after

    with pyproof.connect(f"{url}?workers=1") as mine:
        reset = proofctl("reset", "--url", url, "--json")
        assert reset.returncode == 0, reset.stderr
        assert json.loads(reset.stdout) == {"closed": [mine.id]}


def tree_ids(node: dict) -> set[str]:
    found = {node.get("id") or node.get("name")}
    for child in node.get("children", []):
        found.add(child["id"])
        if child.get("tree"):
            found |= tree_ids(child["tree"])
    return found


def test_pyproof_url_names_the_daemon_for_run_logs_and_daemon_stop(tls_daemon, tmp_path):
    env = {"PYPROOF_URL": tls_daemon.url}
    run = proofctl("run", "tests/sample_selectors.py:ZmumuMass", "--dataset", ZMUMU,
                   "--workers", "1", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"]["n"] == 2304

    logs = proofctl("logs", "--json", env=env)  # the daemon's logs, not a lite session's
    assert logs.returncode == 0, logs.stderr
    finished = [json.loads(line) for line in logs.stdout.splitlines()
                if '"query_finished"' in line]
    assert finished and finished[-1]["entries"] == 2304
    assert json.loads(run.stdout)["query"] in {r["query"] for r in finished}

    status = proofctl("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["url"] == tls_daemon.url

    stop = proofctl("daemon", "stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout == f"proofd on port {tls_daemon.port} stopped\n"
    gone = proofctl("status", env=env)
    one_error_line(gone, r"^proofctl: no daemon answers at .* \(connection refused\)")


def test_url_wins_over_pyproof_url_for_run_logs_and_daemon_stop(tls_daemon):
    closed = f"proof://127.0.0.1:{spare_port()}"
    env = {"PYPROOF_URL": closed}  # nothing there: only --url can make these work
    run = proofctl("run", "tests/sample_selectors.py:ZmumuMass", "--dataset", ZMUMU,
                   "--workers", "1", "--url", tls_daemon.url, "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"]["n"] == 2304
    logs = proofctl("logs", "--url", tls_daemon.url, "--json", env=env)
    assert logs.returncode == 0, logs.stderr
    assert '"query_finished"' in logs.stdout
    stop = proofctl("daemon", "stop", "--url", tls_daemon.url, env=env)
    assert stop.returncode == 0, stop.stderr


def test_a_tls_daemon_without_the_ca_says_to_set_it_at_once(tls_daemon, monkeypatch):
    monkeypatch.delenv("PYPROOF_TLS_CA")
    started = time.monotonic()
    out = proofctl("status", "--url", tls_daemon.url)
    assert time.monotonic() - started < 10  # not a 10 s wait for an answer
    one_error_line(out, rf"^proofctl: {re.escape(tls_daemon.url)} closed the connection "
                        r"\(.*\): if the daemon serves TLS, set \$PYPROOF_TLS_CA to the "
                        r"cluster's CA certificate$")


def test_status_with_nothing_listening_says_to_start_a_daemon_within_two_seconds(capsys):
    port = spare_port()
    started = time.monotonic()
    code = main(["status", "--url", f"proof://127.0.0.1:{port}"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1
    assert err == (f"proofctl: no daemon answers at proof://127.0.0.1:{port} (connection "
                   f"refused): start one with `proofctl daemon start --port {port}`, or give "
                   "the URL of a running one\n")
    assert elapsed < 2.0


def test_pyproof_connect_to_a_closed_port_fails_at_once_naming_the_fix():
    port = spare_port()
    started = time.monotonic()
    with pytest.raises(pyproof.ConnectError,
                       match=rf"^no daemon answers at proof://127.0.0.1:{port}\?workers=1 "
                             rf"\(connection refused\): start one with `proofctl daemon start "
                             rf"--port {port}`"):
        pyproof.connect(f"proof://127.0.0.1:{port}?workers=1")
    assert time.monotonic() - started < 3.0


def test_errors_are_one_line_and_debug_adds_the_traceback(tmp_path):
    missing = tmp_path / "nothere.py"
    out = proofctl("run", f"{missing}:Count")
    one_error_line(out, rf"^proofctl: selector file '{re.escape(str(missing))}' "
                        r"does not exist$")
    debug = proofctl("--debug", "run", f"{missing}:Count")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "SelectorError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == f"proofctl: selector file '{missing}' does not exist"

    bad = proofctl("run", f"{missing}:Count", "--inputs", "{bad")
    one_error_line(bad, r"^proofctl: --inputs is not valid JSON: Expecting property name "
                        r"enclosed in double quotes at column 2 of '\{bad'$")
    listed = proofctl("run", f"{missing}:Count", "--inputs", "[1, 2]")
    one_error_line(listed, r"^proofctl: --inputs must be a JSON object .*, not list: '\[1, 2\]'$")

    url = proofctl("status", "--url", "http://example.org")
    one_error_line(url, r"^proofctl: 'http://example.org' is not a daemon URL: "
                        r"use proof://host:port$")
    elsewhere = proofctl("logs", "--url", "proof://192.0.2.1:1093")
    one_error_line(elsewhere, r"^proofctl: proofctl logs reads the log files of a daemon on "
                              r"this host, and 192.0.2.1 is another host: run it there$")


def test_run_json_is_alone_on_stdout_when_the_selector_prints(tmp_path):
    source = tmp_path / "chatty.py"
    source.write_text(
        "import pyproof\n"
        "class Chatty(pyproof.Selector):\n"
        "    branches = ['M']\n"
        "    def begin(self, ctx):\n"
        "        print('begin on a worker')\n"
        "        ctx.outputs['n'] = 0\n"
        "    def process(self, events, ctx):\n"
        "        print('a packet')\n"
        "        ctx.outputs['n'] += len(events)\n"
        "    def terminate(self, outputs):\n"
        "        print('hello from terminate')\n"
    )
    out = proofctl("run", f"{source}:Chatty", "--dataset", ZMUMU, "--workers", "1", "--json",
                   env={"PYPROOF_URL": ""})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outputs"]["n"] == 2304
    assert "hello from terminate" in out.stderr


def test_logs_into_a_pipe_closed_early_exits_cleanly(tmp_path):
    # a lite session's log directory with more lines than a pipe holds
    logs = tmp_path / "lite" / "sess-1" / "logs"
    logs.mkdir(parents=True)
    record = {"timestamp": "2024-01-01T00:00:00", "level": "info", "actor": "worker-0",
              "event": "packet_done", "entries": 1000}
    with open(logs / "worker-0.jsonl", "w") as f:
        for i in range(20_000):
            f.write(json.dumps({**record, "packet": i}) + "\n")
    reader = subprocess.Popen([sys.executable, "-m", "pyproof.cli.main", "logs"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYPROOF_SANDBOX": str(tmp_path),
                                   "PYPROOF_URL": ""})
    try:
        assert b"packet_done" in reader.stdout.readline()  # `head -1`, then gone
        reader.stdout.close()
        _, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(10)
    assert reader.returncode == 0, err
    assert err == b""


def test_version_names_the_installed_release():
    out = proofctl("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"proofctl {version('pyproof')}\n"
