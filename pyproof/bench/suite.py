"""The benchmark suite (PROOF's TProofBench): scan the number of workers, plot, compare peers.

    proofctl bench cpu|io [--workers 1,2,4 | --max-workers N] [--events N] [--files N]
                          [--url URL] [--data DIR] [--peers [pool,dask,coffea]] --out DIR

For each number of workers, a session (a lite cluster, or a daemon's with
`--url`) runs a CPU-bound or a read-bound selector (`pyproof.bench.lite`)
over generated NanoAOD-like data, written once with uproot and reused. Each
session is warmed with a small query over every file first (1,000 entries),
so the scan measures queries, not start-up (the session start is recorded
apart), and the timed query finds the files' entry counts in the session's
look-up cache, as the peers get their chunks from counts read before their
clock starts. Writes
`OUT/bench-<kind>.json` (events/s, MB/s, wall, each worker's share of the
entries, per number of workers) and two PNG plots, events/s and speedup
against the number of workers with the ideal line, as TProofBench draws its
scans.

`--peers` runs the same work in the same run the way users would without
us: a sequential uproot loop and a hand-written `multiprocessing.Pool` over
the same (file, start, stop) chunks (and Dask, and coffea, when they are
installed: the optional `bench` extra), checks every result agrees with
pyproof's, and prints the ratios (pyproof wall / peer wall). Speed is never
asserted: the ratios are for people.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyproof.errors import BenchError

KINDS = {"cpu": "pyproof.bench.lite:CpuBound", "io": "pyproof.bench.lite:ReadBound"}
"""Selector of each benchmark kind (importable by reference in every worker process)."""

DEFAULT_EVENTS = 2_000_000
DEFAULT_FILES = 8
DEFAULT_CHUNK = 100_000

# -- data ----------------------------------------------------------------------------------


def ensure_data(directory: str, *, files: int, events: int) -> list[str]:
    """The benchmark files (`file.root:tree` specs), written with uproot unless already there.

    A `done` marker is written last, so a run stopped half-way writes them again.
    """
    from pyproof.demo import write_demo_dataset

    where = os.path.join(directory, f"{files}x{events}")
    marker = os.path.join(where, "done")
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    specs = write_demo_dataset(where, files=files, events=events, seed=11)
    with open(marker + ".tmp", "w") as f:
        json.dump(specs, f)
    os.replace(marker + ".tmp", marker)
    return specs


def chunks(specs: Sequence[str], step: int) -> list[tuple[str, str, int, int]]:
    """(path, tree, start, stop) chunks of at most `step` entries: what the peers run."""
    import uproot

    out = []
    for spec in specs:
        path, _, tree = spec.rpartition(":")
        with uproot.open(path) as f:
            n = f[tree].num_entries
        out += [(path, tree, a, min(a + step, n)) for a in range(0, n, step)]
    return out


# -- the peers' chunk function (top level: a Pool or Dask pickles it by name) -----------------

_open: dict[str, Any] = {}


def run_chunk(task: tuple[str, str, str, int, int]) -> dict[str, Any]:
    """One chunk as a careful user writes it: files stay open in the process, the
    selector's `begin` and `process` on the chunk's entries, its outputs returned."""
    import uproot

    from pyproof.selector import Context, load_selector

    ref, path, tree, start, stop = task
    selector = load_selector(ref)()
    ctx = Context(inputs={})
    selector.begin(ctx)
    handle = _open.get(path)
    if handle is None:
        handle = _open[path] = uproot.open(path)
    events = handle[tree].arrays(selector.branches, entry_start=start, entry_stop=stop,
                                 library="ak")
    selector.process(events, ctx)
    return ctx.outputs


def _warm(ref: str) -> int:
    from pyproof.selector import load_selector

    load_selector(ref)
    return os.getpid()


def _merged(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from pyproof.merging.merge import merge_outputs

    acc: dict[str, Any] = {}
    for outputs in parts:
        merge_outputs(acc, outputs)
    return acc


def sequential(ref: str, tasks: Sequence[tuple[str, str, int, int]]) -> tuple[dict, float]:
    _warm(ref)
    t0 = time.perf_counter()
    outputs = _merged([run_chunk((ref, *t)) for t in tasks])
    return outputs, time.perf_counter() - t0


def pool(ref: str, tasks: Sequence[tuple[str, str, int, int]], workers: int
         ) -> tuple[dict, float]:
    """`multiprocessing.Pool(workers)`, warm (its processes started and the selector
    imported before the clock starts), `imap_unordered` over the chunks."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    tracked = getattr(tracker, "_pid", None) is not None
    p = None
    try:
        # spawn: no fork of a threaded process (a lite client has threads)
        p = multiprocessing.get_context("spawn").Pool(workers)
        try:
            p.map(_warm, [ref] * workers)
            t0 = time.perf_counter()
            outputs = _merged(list(p.imap_unordered(run_chunk, [(ref, *t) for t in tasks])))
            wall = time.perf_counter() - t0
            p.close()
        finally:
            p.terminate()
            p.join()
    finally:
        # a spawn Pool starts multiprocessing's resource tracker, a process that would
        # outlive the bench: stop it when we started it, once the pool's semaphores
        # (which it tracks) are gone
        del p
        gc.collect()
        if not tracked and hasattr(tracker, "_stop"):
            tracker._stop()
    return outputs, wall


def dask(ref: str, tasks: Sequence[tuple[str, str, int, int]], workers: int
         ) -> tuple[dict, float]:
    """Dask distributed, a LocalCluster of `workers` single-threaded processes, warm."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_warm, ref)
        t0 = time.perf_counter()
        futures = client.map(run_chunk, [(ref, *t) for t in tasks], pure=False)
        outputs = _merged(client.gather(futures))
        return outputs, time.perf_counter() - t0


def coffea(ref: str, tasks: Sequence[tuple[str, str, int, int]], workers: int
           ) -> tuple[dict, float]:
    """coffea's processor with a futures executor of `workers` processes (BaseSchema:
    events with the branches as fields, as the selector reads them)."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    from pyproof.selector import Context, load_selector

    selector_cls = load_selector(ref)

    class Processor(processor.ProcessorABC):  # type: ignore[misc]
        def process(self, events: Any) -> dict[str, Any]:
            ctx = Context(inputs={})
            selector = selector_cls()
            selector.begin(ctx)
            selector.process(events, ctx)
            return ctx.outputs

        def postprocess(self, accumulator: Any) -> Any:
            return accumulator

    steps = max(stop - start for _, _, start, stop in tasks)
    fileset = {"bench": {"files": {path: tree for path, tree, _, _ in tasks}}}
    runner = processor.Runner(executor=processor.FuturesExecutor(workers=workers, status=False),
                              schema=BaseSchema, chunksize=steps, savemetrics=False)
    t0 = time.perf_counter()
    outputs = runner(fileset, treename=tasks[0][1], processor_instance=Processor())
    return dict(outputs), time.perf_counter() - t0


PEERS: dict[str, tuple[str | None, Callable[..., tuple[dict, float]]]] = {
    "pool": (None, pool),
    "dask": ("distributed", dask),
    "coffea": ("coffea", coffea),
}
"""Peers run per number of workers: (module that must be importable, runner)."""


def _installed(module: str | None) -> bool:
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def same_outputs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the outputs that differ between two results (histogram counts exactly)."""
    import numpy as np

    differ = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if hasattr(x, "values") and hasattr(y, "values") and hasattr(x, "axes"):
            x, y = x.values(), y.values()
        if x is None or y is None or not np.array_equal(np.asarray(x), np.asarray(y)):
            differ.append(key)
    return differ


def _check(name: str, ref: dict[str, Any], got: dict[str, Any], workers: int) -> None:
    differ = same_outputs(ref, got)
    if differ:
        raise BenchError(
            f"bench: {name} with {workers} worker(s) gave outputs {', '.join(differ)} that "
            "differ from pyproof's over the same entries; the selector or a peer is not "
            "deterministic, or entries were lost: report it with the JSON of this run")


# -- the scan ---------------------------------------------------------------------------------


def scan(kind: str, *, workers: Sequence[int], events: int, files: int, out: str,
         url: str | None = None, data: str | None = None, peers: Sequence[str] = (),
         chunk: int = DEFAULT_CHUNK, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; write `out/bench-<kind>.json` and its plots; return the report.

    `peers`: names in PEERS to run beside pyproof (with the sequential loop), or
    ("all",) for every one installed.
    """
    import pyproof

    if kind not in KINDS:
        raise BenchError(f"bench: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    unknown = [p for p in peers if p != "all" and p not in PEERS]
    if unknown:
        raise BenchError(f"bench: unknown peer {unknown[0]!r}; valid peers: "
                         f"{', '.join(PEERS)} (or all)")
    chosen = [name for name in PEERS if name in peers or "all" in peers]
    missing = [name for name in chosen if "all" not in peers and not _installed(PEERS[name][0])]
    if missing:
        raise BenchError(f"bench: peer {missing[0]!r} is not installed; "
                         "pip install 'pyproof[bench]' (Dask and coffea)")
    ref = KINDS[kind]
    os.makedirs(out, exist_ok=True)
    specs = ensure_data(data or os.path.join(out, "data"), files=files, events=events)
    nbytes = sum(os.path.getsize(s.rpartition(":")[0]) for s in specs)
    report: dict[str, Any] = {
        "kind": kind, "selector": ref, "events": events, "files": files,
        "file_bytes": nbytes, "url": url or "lite://", "cores": os.cpu_count(),
        "python": platform.python_version(), "rows": [], "peers": [], "ratios": [],
    }
    tasks = chunks(specs, chunk) if peers else []
    baseline: dict[str, Any] | None = None
    if peers:
        outputs, wall = sequential(ref, tasks)
        baseline = outputs
        report["peers"].append(_row("sequential", 1, events, wall, nbytes))
        say(f"sequential uproot   1 worker   {wall:7.2f} s  {events / wall:12,.0f} ev/s")
    for n in workers:
        t0 = time.perf_counter()
        session = pyproof.connect(url or f"lite://?workers={n}", workers=n if url else None)
        with session:
            started = time.perf_counter() - t0
            # warm: imports in every process, and every file's count looked up (the peers'
            # chunks are counted before their clock starts too)
            session.process(ref, dataset=specs, entries=1000, progress=False)
            t0 = time.perf_counter()
            result = session.process(ref, dataset=specs, progress=False)
            wall = time.perf_counter() - t0
        stats = result.stats
        if stats.entries != events:
            raise BenchError(f"bench: {stats.entries:,} entries processed with {n} worker(s), "
                             f"expected {events:,}; see `proofctl logs` for the session")
        row = _row("pyproof", n, events, wall, stats.bytes_read or nbytes)
        row.update(session_start=started, master_wall=stats.wall_time, packets=stats.packets,
                   lookups_opened=stats.lookups_opened,
                   share={w: s.entries / events for w, s in sorted(stats.workers.items())},
                   busy={w: s.busy_seconds for w, s in sorted(stats.workers.items())})
        report["rows"].append(row)
        say(f"pyproof            {n:2d} worker(s) {wall:7.2f} s  {row['events_per_s']:12,.0f} "
            f"ev/s  {row['mb_per_s']:8.1f} MB/s  session start {started:.2f} s")
        if baseline is None:
            baseline = result.outputs
        _check("pyproof", baseline, result.outputs, n)
        if not peers:
            continue
        for name in chosen:
            module, runner = PEERS[name]
            if not _installed(module):
                continue
            outputs, peer_wall = runner(ref, tasks, n)
            _check(name, result.outputs, outputs, n)
            report["peers"].append(_row(name, n, events, peer_wall, nbytes))
            ratio = {"peer": name, "workers": n, "pyproof_over_peer": wall / peer_wall}
            report["ratios"].append(ratio)
            say(f"{name:18s} {n:2d} worker(s) {peer_wall:7.2f} s  "
                f"{events / peer_wall:12,.0f} ev/s  pyproof / {name} = {wall / peer_wall:.2f}")
    _speedups(report["rows"])
    path = os.path.join(out, f"bench-{kind}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    report["plots"] = plot(report, out)
    return report


def _row(mode: str, workers: int, events: int, wall: float, nbytes: int) -> dict[str, Any]:
    return {"mode": mode, "workers": workers, "wall": wall, "events_per_s": events / wall,
            "mb_per_s": nbytes / wall / 1e6}


def _speedups(rows: list[dict[str, Any]]) -> None:
    """Speedup against the fewest workers scanned, scaled as if it were one (TProofBench)."""
    if not rows:
        return
    first = min(rows, key=lambda r: r["workers"])
    per_worker = first["events_per_s"] / first["workers"]
    for r in rows:
        r["speedup"] = r["events_per_s"] / per_worker


def bench_figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """events/s and speedup against the number of workers, with the ideal line, as
    `(name, Figure)` pairs in mplhep's style (plain matplotlib without mplhep).

    Built on bare `Figure`s (no pyplot), as the demo's plot: the user's matplotlib
    backend is never switched, and nothing is left open in pyplot's registry.
    """
    import matplotlib
    from matplotlib.figure import Figure

    try:
        import mplhep
    except ImportError:
        mplhep = None
    style = mplhep.style.CMS if mplhep is not None else {}
    rows = sorted(report["rows"], key=lambda r: r["workers"])
    n = [r["workers"] for r in rows]
    first = rows[0]
    per_worker = first["events_per_s"] / first["workers"]
    figures = []
    for what, ylabel, ideal in (
        ("events_per_s", "Events / s", [per_worker * k for k in n]),
        ("speedup", r"Speedup ($\times$ one worker)", list(map(float, n))),
    ):
        with matplotlib.rc_context(style):
            fig = Figure(figsize=(8, 6))
            ax = fig.add_subplot()
            ax.plot(n, [r[what] for r in rows], "o-", color="black", label="pyproof")
            ax.plot(n, ideal, "--", color="grey", label="ideal (linear)")
            if what == "events_per_s":
                for name in sorted({p["mode"] for p in report["peers"]}):
                    pts = sorted((p["workers"], p["events_per_s"]) for p in report["peers"]
                                 if p["mode"] == name)
                    ax.plot([x for x, _ in pts], [y for _, y in pts], "s:", label=name)
            ax.set_xlabel("Workers")
            ax.set_ylabel(ylabel)
            ax.set_xticks(n)
            ax.set_ylim(0, None)
            ax.set_title("pyproof bench", loc="left", fontweight="bold")
            ax.set_title(f"{report['kind']}: {report['events']:,} events, "
                         f"{report['files']} files", loc="right", fontsize="small")
            ax.legend()
            fig.tight_layout()
        figures.append((f"bench-{report['kind']}-{what.replace('_per_s', '')}.png", fig))
    return figures


def plot(report: dict[str, Any], out: str) -> list[str]:
    """Write `bench_figures(report)` as PNGs in `out`; the paths."""
    import logging

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fonts = logging.getLogger("matplotlib.font_manager")
    level = fonts.level
    fonts.setLevel(logging.ERROR)  # mplhep's styles name fonts most machines lack: noise
    paths = []
    try:
        for name, fig in bench_figures(report):
            FigureCanvasAgg(fig)
            path = os.path.join(out, name)
            fig.savefig(path, dpi=100)
            paths.append(path)
    finally:
        fonts.setLevel(level)
    return paths


# -- the command --------------------------------------------------------------------------


def _worker_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"--workers wants numbers of workers >= 1 separated by commas, e.g. 1,2,4; "
            f"got {text!r}")
    return sorted(set(values))


def add_command(sub: Any) -> None:
    """Add `proofctl bench` to the subcommands `sub`."""
    bench = sub.add_parser("bench", help="scan the number of workers for a CPU- or read-bound "
                                         "selector; JSON and plots (TProofBench)")
    bench.add_argument("kind", choices=sorted(KINDS))
    scale = bench.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=_worker_list, default=None,
                       help="numbers of workers to scan, e.g. 1,2,4 (default 1..cores)")
    scale.add_argument("--max-workers", type=int, default=None, help="scan 1..N workers")
    bench.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in all")
    bench.add_argument("--files", type=int, default=DEFAULT_FILES)
    bench.add_argument("--url", default=None, help="a daemon (proof://host:port); "
                                                   "default: a lite cluster per count")
    bench.add_argument("--data", default=None,
                       help="where the generated files are kept and reused (default OUT/data)")
    bench.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                       help="entries per chunk of the peers")
    bench.add_argument("--peers", nargs="?", const="all", default="",
                       help="also run a sequential loop and a multiprocessing.Pool (and Dask, "
                            "coffea if installed) over the same chunks, and print the ratios; "
                            "or name some: --peers pool,dask")
    bench.add_argument("--out", required=True, help="directory for bench-<kind>.json and plots")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.max_workers is not None and args.max_workers < 1:
        raise BenchError(f"bench: --max-workers must be >= 1, got {args.max_workers}")
    workers = args.workers or list(range(1, (args.max_workers or os.cpu_count() or 1) + 1))
    if args.events < args.files or args.files < 1:
        raise BenchError(f"bench: need --files >= 1 and --events >= --files, got "
                         f"{args.files} files and {args.events} events")
    report = scan(args.kind, workers=workers, events=args.events, files=args.files,
                  out=args.out, url=args.url, data=args.data,
                  peers=[p for p in args.peers.split(",") if p],
                  chunk=args.chunk, say=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {os.path.join(args.out, f'bench-{args.kind}.json')} and "
              f"{', '.join(report['plots'])}")
    return 0
