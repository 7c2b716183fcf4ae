"""Cluster options and commands say what is wrong, in one line (proofctl's rule)."""

from __future__ import annotations

import os

from pyproof.actors.system import spare_port
from pyproof.transport import auth
from tests.daemon_helpers import Daemon
from tests.test_cli_daemon import one_error_line, proofctl


def test_join_without_a_cluster_secret_is_refused_naming_the_option():
    out = proofctl("daemon", "start", "--port", str(spare_port()), "--join",
                   "proof://127.0.0.1:1093")
    one_error_line(out, r"^proofctl: proofd failed to start: --join needs --cluster-secret "
                        r"FILE \(the cluster's shared secret, 0600, the same on every host\)$")


def test_a_cluster_secret_others_can_read_is_refused(tmp_path):
    path = auth.write_secret(tmp_path / "cluster.secret", auth.fresh_cluster_secret())
    os.chmod(path, 0o640)
    out = proofctl("daemon", "start", "--port", str(spare_port()), "--cluster-secret",
                   str(path), "--name", "m")
    one_error_line(out, rf"^proofctl: proofd failed to start: .*{path}.*")


def test_a_hosts_file_error_names_file_and_line(tmp_path):
    secret = auth.write_secret(tmp_path / "cluster.secret", auth.fresh_cluster_secret())
    listed = tmp_path / "proof.conf"
    listed.write_text("h2 proof://10.0.0.2:1093\nh3 10.0.0.3\n")
    out = proofctl("daemon", "start", "--port", str(spare_port()), "--cluster-secret",
                   str(secret), "--hosts", str(listed))
    one_error_line(out, rf"^proofctl: proofd failed to start: {listed}, line 2: host 'h3': "
                        r"address must be proof://host:port, not '10.0.0.3'$")


def test_hosts_and_workers_of_a_daemon_outside_a_cluster_say_how_to_join_one():
    daemon = Daemon()
    try:
        one_error_line(proofctl("hosts", "--url", daemon.url),
                       r"^proofctl: this daemon is not part of a cluster: start it with "
                       r"--cluster-secret FILE")
        one_error_line(proofctl("workers", "add", "abc", "2", "--host", "h2", "--url",
                                daemon.url),
                       r"^proofctl: this daemon is not part of a cluster: workers can be "
                       r"added only on its own host, not on 'h2' \(start the daemons with "
                       r"--cluster-secret FILE\)$")
    finally:
        daemon.stop()
