"""The supervision trees as data (actors/trees.py): pure functions, checked without actors."""

from __future__ import annotations

import dataclasses

from pyproof.actors import messages as m
from pyproof.actors import sessions, trees
from pyproof.supervision.spec import ChildType, Restart, Strategy


def create(workers: int = 2, **kw) -> m.CreateSession:
    return m.CreateSession(corr="c1", session_id="s1", workers=workers, run_dir="/run/p",
                           log_dir="/log/p", data_key=b"k", **kw)


def test_a_session_is_its_master_then_its_workers_all_dialing_the_masters_address():
    tree = trees.session_tree(create(workers=3))
    assert tree.name == "session-s1"
    assert [c.id for c in tree.children] == ["master", "worker-0", "worker-1", "worker-2"]
    master = tree.children[0].start
    assert master.actor == "pyproof.actors.master:Master"
    assert master.init.packet_address == "ipc:///run/p/master-s1.ipc"
    assert master.init.data_key == b"k"
    for worker in tree.children[1:]:
        assert worker.start.actor == "pyproof.actors.worker:Worker"
        assert worker.start.init.packet_address == master.init.packet_address
        assert worker.start.init.worker_id == worker.id
        assert worker.restart == Restart.PERMANENT
    assert tree.flags.strategy == Strategy.ONE_FOR_ONE
    assert tree.flags.intensity == 10 + 5 * 3  # restarts allowed scale with the session


def test_the_same_message_gives_the_same_tree():
    assert trees.session_tree(create()) == trees.session_tree(create())
    assert trees.session_tree(create(workers=1)) != trees.session_tree(create(workers=2))


def test_a_session_child_is_temporary_and_remote_parts_run_the_remote_supervisor():
    local = trees.session_child(create())
    assert (local.id, local.type, local.restart) == ("s1", ChildType.SUPERVISOR,
                                                     Restart.TEMPORARY)
    assert local.start.actor == "pyproof.actors.sessions:SessionSupervisor"
    remote = trees.session_child(create(remote_of="host-a", worker_ids=("worker-0",)))
    assert remote.start.actor == "pyproof.actors.remote_session:RemoteSession"


def test_root_runs_sessions_then_hosts_in_a_cluster_then_the_gateway_rest_for_one():
    boot = m.Boot(corr="b", control_address="ipc:///run/p/control", run_dir="/run/p",
                  log_dir="/log/p", daemon_pid=1, limits={"sessions_per_user": 2})
    tree = trees.root_tree(boot)
    assert [c.id for c in tree.children] == ["sessions", "gateway"]
    assert tree.flags.strategy == Strategy.REST_FOR_ONE
    assert tree.children[0].type == ChildType.SUPERVISOR
    assert tree.children[0].start.init.limits == {"sessions_per_user": 2}
    assert tree.children[1].start.init.sessions is None  # filled in by Root.child_init
    clustered = trees.root_tree(dataclasses.replace(boot, cluster={"info": {}}))
    assert [c.id for c in clustered.children] == ["sessions", "hosts", "gateway"]


def test_the_sessions_supervisor_starts_empty_and_tolerates_many_session_restarts():
    tree = trees.sessions_tree()
    assert tree.children == ()
    assert (tree.flags.strategy, tree.flags.intensity) == (Strategy.ONE_FOR_ONE, 100)
    assert tree.flags.independent  # no session's open waits for another's close


def test_trees_agree_with_the_actors_that_still_build_their_own():
    # sessions.py keeps its own WATCHDOG and master_address (being rewritten elsewhere)
    assert trees.WATCHDOG == sessions.WATCHDOG
    assert trees.master_address("/r", "s") == sessions.master_address("/r", "s")


def test_root_tree_is_the_tree_root_py_builds_today(monkeypatch):
    """Root hands its core what trees.root_tree builds (it used to build its own)."""
    from pyproof.actors.root import Root

    for cluster in (None, {"info": {}}):
        boot = m.Boot(corr="b", control_address="ipc:///run/p/control", run_dir="/run/p",
                      log_dir="/log/p", daemon_pid=1, auth={"mode": "none"}, cluster=cluster)
        root = Root()
        built = []
        monkeypatch.setattr(root, "start_log", lambda *a, **k: None)
        monkeypatch.setattr(root, "supervise", built.append)
        root.receive_other(boot, sender=None)
        assert built == [trees.root_tree(boot)]


def test_the_boots_pre_opened_session_goes_to_the_first_sessions_supervisor_only():
    """A restarted sessions supervisor re-adopts that session; it must not open another."""
    from pyproof.actors.root import Root

    preopen = m.CreateSession(corr="preopen-s1", session_id="s1", workers=2, run_dir="/run/p",
                              log_dir="/log/p", user="u", request_id="r1")
    boot = m.Boot(corr="b", control_address="ipc:///run/p/control", run_dir="/run/p",
                  log_dir="/log/p", daemon_pid=1, preopen=preopen)
    init = trees.root_tree(boot).children[0].start.init
    assert init.preopen == preopen
    root = Root()
    assert root.child_init("sessions", init).preopen == preopen
    assert root.child_init("sessions", init).preopen is None
