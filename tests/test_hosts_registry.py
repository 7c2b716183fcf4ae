"""The host registry's pure core: joined, alive, lost, restarted, with time passed in."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pyproof.hosts.registry import (
    Announce,
    AnnounceAgain,
    Heartbeat,
    HostInfo,
    HostJoined,
    HostLeft,
    HostListError,
    HostLost,
    HostRegistry,
    HostRestarted,
    Leave,
    Tick,
    parse_hosts_file,
)


def info(name: str, cores: int = 4) -> HostInfo:
    return HostInfo(name=name, address=f"proof://198.18.0.2:{1093}", cores=cores)


def test_a_host_that_announces_is_alive_and_lost_when_silent_longer_than_lost_after():
    r = HostRegistry(lost_after=3.0)
    assert r.handle(Announce(info=info("h2"), incarnation="a", now=0.0)) == [
        HostJoined(name="h2", rejoined=False)]
    assert r.handle(Heartbeat(name="h2", incarnation="a", now=2.0, workers=3)) == []
    assert r.handle(Tick(now=4.9)) == []
    assert r.snapshot(4.9)[0]["state"] == "alive"
    assert r.snapshot(4.9)[0]["workers"] == 3
    assert r.handle(Tick(now=5.1)) == [HostLost(name="h2", reason="silent for 3.1 s")]
    assert r.snapshot(5.1)[0]["state"] == "lost"
    assert r.snapshot(5.1)[0]["workers"] == 0
    r.validate()


def test_a_lost_host_that_heartbeats_is_told_to_announce_again_and_then_rejoins():
    r = HostRegistry(lost_after=1.0)
    r.handle(Announce(info=info("h2"), incarnation="a", now=0.0))
    r.handle(Tick(now=2.0))
    assert r.handle(Heartbeat(name="h2", incarnation="a", now=3.0)) == [
        AnnounceAgain(name="h2")]
    assert r.handle(Announce(info=info("h2"), incarnation="a", now=3.0)) == [
        HostJoined(name="h2", rejoined=True)]
    assert r.snapshot(3.0)[0]["joins"] == 2
    r.validate()


def test_a_master_that_restarted_tells_every_heartbeat_to_announce_again():
    r = HostRegistry(lost_after=1.0)  # a fresh registry: knows no one
    assert r.handle(Heartbeat(name="h3", incarnation="x", now=0.0)) == [
        AnnounceAgain(name="h3")]


def test_an_alive_host_announcing_a_new_incarnation_restarted():
    r = HostRegistry(lost_after=5.0)
    r.handle(Announce(info=info("h2"), incarnation="a", now=0.0))
    assert r.handle(Announce(info=info("h2"), incarnation="b", now=1.0)) == [
        HostRestarted(name="h2"), HostJoined(name="h2", rejoined=True)]
    # the old incarnation's heartbeats are not the host's any more
    assert r.handle(Heartbeat(name="h2", incarnation="a", now=1.5)) == [
        AnnounceAgain(name="h2")]
    # the same incarnation announcing twice (a retried request) changes nothing
    assert r.handle(Announce(info=info("h2", cores=8), incarnation="b", now=2.0)) == []
    assert r.snapshot(2.0)[0]["cores"] == 8


def test_a_host_that_leaves_is_left_at_once_never_lost_and_only_its_own_incarnation_may_say_so():
    r = HostRegistry(lost_after=5.0)
    r.handle(Announce(info=info("h2"), incarnation="a", now=0.0))
    assert r.handle(Leave(name="h2", incarnation="old", now=1.0)) == []
    assert r.handle(Leave(name="h2", incarnation="a", now=1.0)) == [HostLeft(name="h2")]
    assert r.snapshot(1.0)[0]["state"] == "left" and r.alive() == []
    assert r.handle(Tick(now=100.0)) == []  # its silence from now on is no loss
    assert r.handle(Leave(name="h2", incarnation="a", now=101.0)) == []  # said once
    r.validate()
    # started again, it joins again
    assert r.handle(Announce(info=info("h2"), incarnation="b", now=102.0)) == [
        HostJoined(name="h2", rejoined=True)]
    assert r.alive() == ["h2"]


def test_listed_hosts_are_shown_never_heard_until_they_announce():
    r = HostRegistry(lost_after=1.0, listed=[info("h4")])
    row = r.snapshot(0.0)[0]
    assert (row["state"], row["last_heard"], row["static"]) == ("listed", None, True)
    assert r.handle(Tick(now=100.0)) == []  # never heard: never lost
    assert r.handle(Announce(info=info("h4"), incarnation="a", now=100.0)) == [
        HostJoined(name="h4", rejoined=True)]
    r.validate()


def test_hosts_file_lines_are_parsed_and_errors_name_the_line():
    hosts = parse_hosts_file("# the cluster\nh2 proof://198.18.0.2:1093 cores=8 "
                             "labels=gpu,ssd data=/data/a\n\nh3 proof://198.18.0.3:1093\n",
                             source="proof.conf")
    assert [(h.name, h.cores, h.labels, h.data_paths) for h in hosts] == [
        ("h2", 8, ("gpu", "ssd"), ("/data/a",)), ("h3", 0, (), ())]
    with pytest.raises(HostListError, match=r"^proof.conf, line 2: unknown field 'gpus=1' "):
        parse_hosts_file("h2 proof://a:1\nh3 proof://b:1 gpus=1", source="proof.conf")
    with pytest.raises(HostListError, match=r"^proof.conf, line 1: host 'h2': address must be "
                                            r"proof://host:port, not 'h2.cern.ch'$"):
        parse_hosts_file("h2 h2.cern.ch", source="proof.conf")
    with pytest.raises(HostListError, match=r"line 2: host 'h2' is listed twice$"):
        parse_hosts_file("h2 proof://a:1\nh2 proof://b:1", source="f")
    with pytest.raises(HostListError, match=r"host name 'bad name!' is not valid"):
        parse_hosts_file("'bad name!' proof://a:1", source="f")


def test_an_announcement_is_checked_field_by_field():
    with pytest.raises(HostListError, match=r"^host 'h2': cores must be an integer"):
        HostInfo.from_wire({"name": "h2", "address": "proof://a:1", "cores": -1})
    with pytest.raises(HostListError, match=r"labels must be a list"):
        HostInfo.from_wire({"name": "h2", "address": "proof://a:1", "labels": "gpu"})
    with pytest.raises(HostListError, match=r"must be a map"):
        HostInfo.from_wire(["h2"])


NAMES = st.sampled_from(["h1", "h2", "h3"])
INCARNATIONS = st.sampled_from(["a", "b"])


class RegistryMachine(RuleBasedStateMachine):
    """The registry against a transcription of its rules: who is alive is exactly who was
    heard (announced, or heartbeat of the announced incarnation) within lost_after."""

    LOST_AFTER = 3.0

    def __init__(self) -> None:
        super().__init__()
        self.registry = HostRegistry(lost_after=self.LOST_AFTER, listed=[info("h3")])
        self.now = 0.0
        self.model: dict[str, tuple[str, float, bool]] = {}  # name -> (incarnation, heard, alive)

    @rule(dt=st.floats(min_value=0.0, max_value=2.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        changes = self.registry.handle(Tick(now=self.now))
        lost = {c.name for c in changes}
        expected = {n for n, (_, heard, alive) in self.model.items()
                    if alive and self.now - heard > self.LOST_AFTER}
        assert lost == expected
        for name in expected:
            inc, heard, _ = self.model[name]
            self.model[name] = (inc, heard, False)

    @rule(name=NAMES, incarnation=INCARNATIONS)
    def announce(self, name: str, incarnation: str) -> None:
        changes = self.registry.handle(Announce(info=info(name), incarnation=incarnation,
                                                now=self.now))
        before = self.model.get(name)
        if before is not None and before[2] and before[0] == incarnation:
            assert changes == []
        elif before is not None and before[2]:
            assert changes == [HostRestarted(name=name), HostJoined(name=name, rejoined=True)]
        else:
            rejoined = before is not None or name == "h3"
            assert changes == [HostJoined(name=name, rejoined=rejoined)]
        self.model[name] = (incarnation, self.now, True)

    @rule(name=NAMES, incarnation=INCARNATIONS)
    def heartbeat(self, name: str, incarnation: str) -> None:
        changes = self.registry.handle(Heartbeat(name=name, incarnation=incarnation,
                                                 now=self.now))
        before = self.model.get(name)
        if before is not None and before[2] and before[0] == incarnation:
            assert changes == []
            self.model[name] = (incarnation, self.now, True)
        else:
            assert changes == [AnnounceAgain(name=name)]

    @invariant()
    def states_match(self) -> None:
        self.registry.validate()
        rows = {r["name"]: r["state"] for r in self.registry.snapshot(self.now)}
        for name, (_, _, alive) in self.model.items():
            assert rows[name] == ("alive" if alive else "lost")
        if "h3" not in self.model:
            assert rows["h3"] == "listed"


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=150, stateful_step_count=40,
                                        deadline=None)
