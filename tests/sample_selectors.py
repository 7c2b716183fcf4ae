"""Selectors used by the integration tests (workers import them by name)."""

from __future__ import annotations

import collections

import awkward as ak
import hist
import numpy as np

import pyproof


def zmumu_mass(events) -> np.ndarray:
    e = events["E1"] + events["E2"]
    px = events["px1"] + events["px2"]
    py = events["py1"] + events["py2"]
    pz = events["pz1"] + events["pz2"]
    return np.sqrt(np.maximum(ak.to_numpy(e**2 - px**2 - py**2 - pz**2), 0.0))


class ZmumuMass(pyproof.Selector):
    """Flat branches: the dimuon mass, weighted and unweighted, plus counters."""

    branches = ["E1", "px1", "py1", "pz1", "E2", "px2", "py2", "pz2", "Q1", "Q2"]

    def begin(self, ctx):
        ctx.outputs["mass"] = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()
        ctx.outputs["wmass"] = hist.Hist.new.Reg(60, 0, 120, name="mass").Weight()
        ctx.outputs["n"] = 0
        ctx.outputs["charges"] = collections.Counter()
        ctx.outputs["sum_mass"] = np.zeros(1)

    def process(self, events, ctx):
        mass = zmumu_mass(events)
        cut = ctx.inputs.get("cut", 0.0)
        selected = mass[mass > cut]
        ctx.outputs["mass"].fill(selected)
        ctx.outputs["wmass"].fill(selected, weight=0.5 + selected / 100.0)
        ctx.outputs["n"] += len(events)
        q = ak.to_numpy(events["Q1"] + events["Q2"])
        ctx.outputs["charges"].update(int(x) for x in q)
        ctx.outputs["sum_mass"] += np.array([selected.sum()])


class HZZMuons(pyproof.Selector):
    """Jagged branches: muon pt, weighted by the event weight."""

    branches = ["Muon_Px", "Muon_Py", "EventWeight"]

    def begin(self, ctx):
        ctx.outputs["pt"] = hist.Hist.new.Reg(50, 0, 200, name="pt").Weight()
        ctx.outputs["nmuons"] = 0

    def process(self, events, ctx):
        pt = np.sqrt(events["Muon_Px"] ** 2 + events["Muon_Py"] ** 2)
        weights = ak.broadcast_arrays(events["EventWeight"], pt)[0]
        ctx.outputs["pt"].fill(ak.to_numpy(ak.flatten(pt)),
                               weight=ak.to_numpy(ak.flatten(weights)))
        ctx.outputs["nmuons"] += int(ak.sum(ak.num(pt)))


class EntryList(pyproof.Selector):
    """Collects the global ids of processed entries, to check exactly-once."""

    branches = ["x"]
    concatenate = ("x",)

    def begin(self, ctx):
        ctx.outputs["x"] = np.zeros(0, dtype=np.int64)
        ctx.outputs["count"] = 0

    def process(self, events, ctx):
        ctx.outputs["x"] = np.concatenate([ctx.outputs["x"], ak.to_numpy(events["x"])])
        ctx.outputs["count"] += len(events)


class Cycles(pyproof.Selector):
    """Pure CPU work: sums of cycle numbers."""

    def begin(self, ctx):
        ctx.outputs["sum"] = 0
        ctx.outputs["count"] = 0

    def process(self, cycles, ctx):
        ctx.outputs["sum"] += sum(cycles)
        ctx.outputs["count"] += len(cycles)


class SlowCycles(Cycles):
    """Cycles that take `inputs['per_entry']` seconds each (short packets, many of them)."""

    def process(self, cycles, ctx):
        import time

        time.sleep(ctx.inputs.get("per_entry", 0.0) * len(cycles))
        super().process(cycles, ctx)


class RaisesInProcess(ZmumuMass):
    def process(self, events, ctx):
        if ctx.entry_start <= ctx.inputs.get("bad_entry", 1000) < ctx.entry_stop:
            raise ZeroDivisionError("the selector divided by zero")
        super().process(events, ctx)


class MissingBranch(pyproof.Selector):
    branches = ["E1", "nonexistent_branch"]

    def process(self, events, ctx):
        pass


class SlowCount(pyproof.Selector):
    """Sleeps `inputs['sleep']` seconds per packet: a query that lasts, for fault tests."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0
        ctx.outputs["mass"] = hist.Hist.new.Reg(100, 0, 200, name="M").Double()

    def process(self, events, ctx):
        import time

        time.sleep(ctx.inputs.get("sleep", 0.05))
        ctx.outputs["n"] += len(events)
        ctx.outputs["mass"].fill(ak.to_numpy(events["M"]))


class PerDataset(pyproof.Selector):
    """Counts entries and sums M per dataset (ctx.dataset), for `a,b` queries."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["entries"] = collections.Counter()
        ctx.outputs["order"] = []

    def process(self, events, ctx):
        ctx.outputs["entries"][ctx.dataset] += len(events)
        ctx.outputs["order"].append(ctx.dataset)


class WithFriend(pyproof.Selector):
    """Reads x from the main tree and y from the associated (friend) tree."""

    branches = ["x", "friend.y"]

    def begin(self, ctx):
        ctx.outputs["xy"] = hist.Hist.new.Reg(50, 0, 100, name="xy").Weight()
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        ctx.outputs["xy"].fill(ak.to_numpy(events["x"]), weight=ak.to_numpy(events["friend"]["y"]))
        ctx.outputs["n"] += len(events)


class DiesOnEntry(ZmumuMass):
    """Kills its own worker process when it meets entry `inputs['deadly']` (a poisoned packet)."""

    def process(self, events, ctx):
        import os

        if ctx.entry_start <= ctx.inputs["deadly"] < ctx.entry_stop:
            os._exit(9)
        super().process(events, ctx)


class SlowWorker(ZmumuMass):
    """Sleeps `inputs['per_entry']` seconds per entry on `inputs['slow']` (a slowed worker)."""

    def process(self, events, ctx):
        import time

        delay = ctx.inputs.get("per_entry", 0.0)
        if ctx.worker == ctx.inputs.get("slow"):
            delay *= ctx.inputs.get("factor", 3.0)
        time.sleep(delay * len(events))
        super().process(events, ctx)


class MarksPackets(SlowWorker):
    """SlowWorker that, as each packet's processing ends, appends its entry range to the file
    `inputs['marks']/<worker>-<pid>`: a test sees, while the query runs, which ranges a
    worker holds processed but not yet delivered (its outputs go at the query's end)."""

    def process(self, events, ctx):
        import os

        super().process(events, ctx)
        path = os.path.join(ctx.inputs["marks"], f"{ctx.worker}-{os.getpid()}")
        with open(path, "a") as f:  # one short write per line: a reader sees whole lines
            f.write(f"{ctx.entry_start} {ctx.entry_stop}\n")


class StuckOnEntry(ZmumuMass):
    """Hangs (for a long time) in the packet holding entry `inputs['stuck']`."""

    def process(self, events, ctx):
        import time

        if ctx.entry_start <= ctx.inputs["stuck"] < ctx.entry_stop:
            time.sleep(300)
        super().process(events, ctx)


class Skim(ZmumuMass):
    """Writes the events with a dimuon mass above `inputs['cut']` to one file per packet
    (ctx.output_file), and counts them; sleeps `inputs['per_entry']` s per entry."""

    def process(self, events, ctx):
        import time

        import uproot

        time.sleep(ctx.inputs.get("per_entry", 0.0) * len(events))
        keep = zmumu_mass(events) > ctx.inputs.get("cut", 60.0)
        with uproot.recreate(ctx.output_file("skim.root")) as f:
            f["events"] = {name: ak.to_numpy(events[name][keep]) for name in self.branches}
        super().process(events, ctx)
        ctx.outputs.setdefault("selected", 0)
        ctx.outputs["selected"] += int(np.sum(keep))


class SkimThenRaise(Skim):
    """Writes its skim file, then raises in the packet holding entry `inputs['bad_entry']`."""

    def process(self, events, ctx):
        super().process(events, ctx)
        if ctx.entry_start <= ctx.inputs["bad_entry"] < ctx.entry_stop:
            raise ZeroDivisionError("the skim divided by zero")


class BadOutputName(ZmumuMass):
    def process(self, events, ctx):
        ctx.output_file("../escape.root")


class UnsendableOutput(pyproof.Selector):
    """Puts an object the wire cannot carry into its outputs."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["thing"] = object()

    def process(self, events, ctx):
        pass


class BigOutput(pyproof.Selector):
    """A 24 MB array output (larger than a data chunk) plus a count."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["big"] = np.zeros(3_000_000)
        ctx.outputs["n"] = 0

    def process(self, events, ctx):
        ctx.outputs["big"][: len(events)] += 1.0
        ctx.outputs["n"] += len(events)


class BigCycles(pyproof.Selector):
    """A CPU task with a 16 MB output: its outputs go to the master in chunks."""

    def begin(self, ctx):
        ctx.outputs["big"] = np.zeros(2_000_000)

    def process(self, cycles, ctx):
        ctx.outputs["big"][: len(cycles)] += 1.0


class ReturnsOutputs(ZmumuMass):
    """The coffea habit: returns its outputs from process instead of filling ctx.outputs."""

    def process(self, events, ctx):
        return {"n": len(events)}


class NoneOutput(pyproof.Selector):
    """An output left at None (a placeholder): it cannot be merged across workers."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["best"] = None

    def process(self, events, ctx):
        import time

        time.sleep(ctx.inputs.get("sleep", 0.02))


class NanoMuons(pyproof.Selector):
    """NanoAOD-style jagged branches with a counter (`nMuon`, `Muon_pt`, `Muon_eta`)."""

    branches = ["nMuon", "Muon_pt", "Muon_eta"]

    def begin(self, ctx):
        ctx.outputs["muons"] = 0

    def process(self, events, ctx):
        ctx.outputs["muons"] += int(ak.sum(events["nMuon"]))


class ExitsBelow(ZmumuMass):
    """Ends its own worker with os._exit(1) in every packet that starts below
    `inputs['below']` (a selector that kills its worker, again and again)."""

    def process(self, events, ctx):
        import os

        if ctx.entry_start < ctx.inputs["below"]:
            os._exit(1)
        super().process(events, ctx)


class Segfaults(ZmumuMass):
    """Crashes its worker with a segmentation fault in the packet holding entry
    `inputs['deadly']`."""

    def process(self, events, ctx):
        import ctypes

        if ctx.entry_start <= ctx.inputs["deadly"] < ctx.entry_stop:
            ctypes.string_at(0)
        super().process(events, ctx)


class HangsInBegin(ZmumuMass):
    """Hangs (for a long time) in begin()."""

    def begin(self, ctx):
        import time

        time.sleep(300)
        super().begin(ctx)


class LeavesDaemons(ZmumuMass):
    """Starts, in begin(), a `sleep` that outlives the shell that started it (re-parented,
    as a double-forked daemon is): in a session of its own with `inputs['setsid']`. Its
    pid goes to the file `inputs['pidfile']`."""

    def begin(self, ctx):
        import subprocess

        subprocess.run(["sh", "-c", f"sleep 300 & echo $! > {ctx.inputs['pidfile']}"],
                       start_new_session=bool(ctx.inputs.get("setsid")), check=True,
                       timeout=10)
        super().begin(ctx)


class SizedOutput(pyproof.Selector):
    """A CPU task whose output is an array of `inputs['mb']` MB (a huge merge)."""

    def begin(self, ctx):
        ctx.outputs["big"] = np.zeros(int(ctx.inputs["mb"] * 2**20 // 8))

    def process(self, cycles, ctx):
        ctx.outputs["big"][: len(cycles)] += 1.0


class PacketLog(pyproof.Selector):
    """Counts and fills like SlowCount, sleeping `inputs['sleep_per_entry']` seconds per entry
    (so a worker's measured rate does not depend on its packets' sizes), and records, per
    packet, [worker, file, entry_start, entry_stop, when it ended (time.time(): one clock for
    every namespace of a test machine)]: which worker read what, in which order."""

    branches = ["M"]

    def begin(self, ctx):
        ctx.outputs["n"] = 0
        ctx.outputs["mass"] = hist.Hist.new.Reg(100, 0, 200, name="M").Double()
        ctx.outputs["packets"] = []

    def process(self, events, ctx):
        import time

        time.sleep(ctx.inputs.get("sleep_per_entry", 0.0) * len(events))
        ctx.outputs["n"] += len(events)
        ctx.outputs["mass"].fill(ak.to_numpy(events["M"]))
        ctx.outputs["packets"].append([ctx.worker, ctx.file, ctx.entry_start, ctx.entry_stop,
                                       time.time()])


class CollectorState(pyproof.Selector):
    """Counts the packets processed where the garbage collector was off, or where nothing
    loaded before the daemon forked was frozen (gc.freeze: see actors/daemon.py)."""

    def begin(self, ctx):
        ctx.outputs["collector_off"] = 0
        ctx.outputs["nothing_frozen"] = 0

    def process(self, cycles, ctx):
        import gc

        ctx.outputs["collector_off"] += not gc.isenabled()
        ctx.outputs["nothing_frozen"] += gc.get_freeze_count() == 0


class WarmupState(pyproof.Selector):
    """Counts its `process` calls, and those in a worker whose warm-up was started
    (actors/warmup.py: its supervisor's m.WarmUp starts it)."""

    def begin(self, ctx):
        ctx.outputs["calls"] = 0
        ctx.outputs["warming"] = 0

    def process(self, cycles, ctx):
        from pyproof.actors import warmup

        ctx.outputs["calls"] += 1
        ctx.outputs["warming"] += warmup._warmup is not None


class StepCounts(pyproof.Selector):
    """Counts its `process` calls and each call's entries by range (a large packet is read
    in steps, datasets/steps.py); exact sums of the flat branches."""

    branches = ["a", "b", "c", "d"]

    def begin(self, ctx):
        ctx.outputs["calls"] = 0
        ctx.outputs["n"] = 0
        ctx.outputs["sum_a"] = 0
        ctx.outputs["sum_d"] = 0.0
        ctx.outputs["ranges"] = collections.Counter()

    def process(self, events, ctx):
        if len(events) != ctx.entry_stop - ctx.entry_start:
            raise AssertionError(f"{len(events)} events for entries "
                                 f"[{ctx.entry_start}, {ctx.entry_stop})")
        ctx.outputs["calls"] += 1
        ctx.outputs["n"] += len(events)
        ctx.outputs["sum_a"] += int(ak.sum(events["a"]))
        ctx.outputs["sum_d"] += float(ak.sum(events["d"]))
        ctx.outputs["ranges"][f"{ctx.entry_start}-{ctx.entry_stop}"] += 1


class InflaterSeen(pyproof.Selector):
    """The Z->mumu mass, and the entries each ZLIB library uproot inflated with (in the
    worker, at process time) was used for (datasets/inflate.py)."""

    branches = ["E1", "px1", "py1", "pz1", "E2", "px2", "py2", "pz2"]

    def begin(self, ctx):
        ctx.outputs["mass"] = hist.Hist.new.Reg(120, 0, 120, name="mass").Double()
        ctx.outputs["inflater"] = collections.Counter()

    def process(self, events, ctx):
        import uproot.compression

        ctx.outputs["mass"].fill(zmumu_mass(events))
        ctx.outputs["inflater"][uproot.compression._DecompressZLIB.library] += len(events)


class VariedOutput(pyproof.Selector):
    """A CPU task whose output is an array of `inputs['floats']` float64 (8 bytes each):
    a histogram-sized result of tens of MB; values vary, so a damaged copy shows."""

    def begin(self, ctx):
        ctx.outputs["big"] = np.zeros(ctx.inputs["floats"])
        ctx.outputs["count"] = 0

    def process(self, cycles, ctx):
        big = ctx.outputs["big"]
        big += np.arange(len(big), dtype=np.float64) % 997.0 + cycles.start
        ctx.outputs["count"] += len(cycles)
