"""`proofctl`: run queries, the demo and read logs from the shell.

Human-readable output by default, `--json` for scripts (then the JSON document
is all that goes to stdout). Exit codes: 0 done, 1 an error (one line on
stderr, `proofctl: ...`; `--debug` adds the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from pyproof.errors import InputError, ProofError

FOLLOW_POLL = 0.25  # seconds between two reads of the log files with --follow


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "values") and hasattr(value, "axes"):  # histograms
        return {"edges": [list(map(float, ax.edges)) for ax in value.axes],
                "values": value.values().tolist()}
    return repr(value)


def _stats_dict(result) -> dict[str, Any]:
    s = result.stats
    return {"entries": s.entries, "bytes_read": s.bytes_read, "wall_time": s.wall_time,
            "events_per_second": s.events_per_second, "packets": s.packets,
            "workers": {w: vars(ws) if hasattr(ws, "__dict__") else
                        {k: getattr(ws, k) for k in ws.__slots__}
                        for w, ws in s.workers.items()}}


def _print_stats(result) -> None:
    s = result.stats
    print(f"entries {s.entries:,}  read {s.bytes_read / 1e6:.1f} MB  "
          f"wall {s.wall_time:.2f} s  {s.events_per_second:,.0f} ev/s  packets {s.packets}")
    for worker, ws in sorted(s.workers.items()):
        print(f"  {worker:10s} entries {ws.entries:>10,}  packets {ws.packets:>5}  "
              f"busy {ws.busy_seconds:6.2f} s")


def parse_inputs(text: str | None) -> dict[str, Any]:
    """--inputs: a JSON object (a ProofError says where the JSON breaks)."""
    if not text:
        return {}
    try:
        inputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--inputs is not valid JSON: {exc.msg} at column {exc.colno} "
                         f"of {text!r}") from None
    if not isinstance(inputs, dict):
        raise InputError(f"--inputs must be a JSON object ({{\"name\": value, ...}}), "
                         f"not {type(inputs).__name__}: {text!r}")
    return inputs


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With --json, whatever else would reach stdout (a selector's print in terminate(),
    the cluster's processes started meanwhile) goes to stderr, at the descriptor level,
    so the JSON document printed afterwards is alone on stdout."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _size(text: str) -> int:
    from pyproof.datasets.cli import parse_bytes

    return parse_bytes(text)


def cmd_run(args: argparse.Namespace) -> int:
    import pyproof
    from pyproof.cli.admin import daemon_url

    inputs = parse_inputs(args.inputs)
    # one --dataset is a string, read as session.process reads one (a catalog name, or
    # files: see datasets.sources.names_catalog); several are a list of files
    dataset = args.dataset[0] if len(args.dataset) == 1 else args.dataset or None
    if args.fileset is not None:
        from pyproof.filesets import read_fileset

        if dataset is not None:
            raise InputError("give --dataset or --fileset, not both")
        dataset = read_fileset(args.fileset)  # ctx.dataset: the fileset's names
    url = daemon_url(args, default="lite://")
    # --workers, else the URL's ?workers=, else 2
    workers = args.workers or (None if "workers=" in url else 2)
    with stdout_to_stderr(args.json), pyproof.connect(url, workers=workers) as session:
        result = session.process(
            args.selector,
            dataset=dataset,
            cycles=args.cycles,
            entries=args.entries,
            first=args.first,
            inputs=inputs,
            progress=None if not args.json else False,
            **({} if args.max_output_bytes is None else
               {"max_output_bytes": args.max_output_bytes or None}),
        )
    if args.json:
        json.dump({"query": result.query, "stats": _stats_dict(result),
                   "lineage": result.lineage, "outputs": result.outputs},
                  sys.stdout, default=_json_default, indent=2)
        print()
    else:
        _print_stats(result)
        for name, value in result.outputs.items():
            text = repr(value)
            print(f"{name}: {text if len(text) < 200 else text[:200] + '...'}")
        for host, path in result.output_file_hosts:  # each on the host that wrote it
            print(f"output file: {host + ':' if host else ''}{path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import pyproof
    from pyproof.demo import DimuonMass, render_histogram, save_plot, write_demo_dataset
    from pyproof.sandbox import make_private_dir, sandbox_dir

    directory = args.data or make_private_dir(os.path.join(sandbox_dir(), "demo-data"))
    specs = sorted(glob.glob(os.path.join(directory, "zmumu-*.root")))
    if len(specs) != args.files or args.regenerate:
        for old in specs:
            os.remove(old)
        print(f"writing {args.events:,} toy Z->mumu events in {args.files} files to {directory}",
              file=sys.stderr if args.json else sys.stdout)
        specs = write_demo_dataset(directory, files=args.files, events=args.events)
    else:
        specs = [f"{path}:events" for path in specs]
    print(f"processing {len(specs)} files on a lite cluster of {args.workers} workers",
          file=sys.stderr if args.json else sys.stdout)
    with stdout_to_stderr(args.json), \
            pyproof.connect(f"lite://?workers={args.workers}") as session:
        result = session.process(DimuonMass, dataset=specs, progress=args.progress)
    h = result.outputs["mass"]
    if args.json:
        json.dump({"stats": _stats_dict(result), "mass": _json_default(h)}, sys.stdout)
        print()
    else:
        print(render_histogram(h))
        _print_stats(result)
    plot = save_plot(h, args.plot)
    if not args.json:
        print(f"plot written to {plot}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from pyproof.cli.admin import daemon_url, local_daemon_port
    from pyproof.cli.daemon import daemon_home
    from pyproof.client.lite import lite_sessions_dir

    port = args.port
    url = daemon_url(args, default=None)
    if port is None and url is not None and not url.startswith("lite:"):
        port = local_daemon_port(
            url, "proofctl logs reads the log files of a daemon on this host")
    if port is not None:  # a daemon's logs: every session's, filtered below
        log_dir = os.path.join(daemon_home(port), "logs")
        if not os.path.isdir(log_dir):
            raise ProofError(f"no proofd logs in {log_dir}: no daemon started by proofctl "
                             f"ran on port {port} of this host")
    else:
        base = lite_sessions_dir()
        dirs = sorted(glob.glob(os.path.join(base, "*")), key=os.path.getmtime)
        if args.session:
            dirs = [d for d in dirs if args.session in os.path.basename(d)] or [
                d for d in dirs if _mentions_session(d, args.session)]
        if not dirs:
            raise ProofError(f"no lite session logs under {base}"
                             + (f" for session {args.session!r}" if args.session else ""))
        log_dir = os.path.join(dirs[-1], "logs")
    from pyproof.logs import format_record, keep_record, read_records

    session = args.session if port is not None else None  # a lite dir is one session
    offsets: dict[str, int] = {}
    # --follow alone: until Ctrl-C (exit 130); --follow SECONDS: for that long
    deadline = None if args.follow is None or args.follow < 0 else \
        time.monotonic() + args.follow
    while True:
        for record in read_records(log_dir, offsets):
            if keep_record(record, session=session, worker=args.worker, level=args.level):
                print(json.dumps(record) if args.json else format_record(record), flush=True)
        if args.follow is None or (deadline is not None and time.monotonic() >= deadline):
            return 0
        time.sleep(FOLLOW_POLL)


def _mentions_session(directory: str, session: str) -> bool:
    for path in glob.glob(os.path.join(directory, "logs", "*.jsonl")):
        with open(path) as f:
            if session in f.read(4096):
                return True
    return False


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("pyproof")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from pyproof.cli.admin import add_url_argument

    parser = argparse.ArgumentParser(prog="proofctl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"proofctl {version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print its traceback too")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a selector over a dataset on a lite cluster "
                                     "(or the daemon at --url)")
    run.add_argument("selector", help="'path/to/file.py:Class' or 'module:Class'")
    run.add_argument("--dataset", action="append", default=[],
                     help="'file.root:tree' (repeat for several files), or one catalog "
                          "dataset spec: 'name', 'a|b', 'a,b', 'name?entries=0-99' (an "
                          "existing file of that name wins)")
    run.add_argument("--fileset", default=None, metavar="FILE",
                     help="a coffea fileset (JSON: {name: [files]} or {name: {\"files\": "
                          "{path: tree}, \"metadata\": {...}}}): ctx.dataset is the name")
    run.add_argument("--cycles", type=int, default=None, help="pure CPU task of N cycles")
    run.add_argument("--workers", type=int, default=None,
                     help="workers of the session (default: the URL's ?workers=, else 2)")
    run.add_argument("--entries", type=int, default=None)
    run.add_argument("--first", type=int, default=0)
    run.add_argument("--inputs", default=None, help="inputs as a JSON object")
    run.add_argument("--max-output-bytes", type=_size, default=None, metavar="SIZE",
                     help="cap on each output's size, e.g. 4GiB (default 1GiB; 0: no cap)")
    run.add_argument("--json", action="store_true")
    add_url_argument(run, default="a private lite:// cluster")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="toy Z->mumu analysis on a local 2-worker cluster")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--files", type=int, default=4)
    demo.add_argument("--events", type=int, default=300_000)
    demo.add_argument("--data", default=None, help="directory of the demo files")
    demo.add_argument("--regenerate", action="store_true")
    demo.add_argument("--plot", default="pyproof-demo-mass.png")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    logs = sub.add_parser("logs", help="show the logs of the last (or a given) lite session, "
                                       "or of a daemon on this host (--url or --port)")
    logs.add_argument("session", nargs="?", default=None)
    logs.add_argument("--port", type=int, default=None, help="a proofd's port (same host)")
    logs.add_argument("--worker", default=None,
                      help="only this worker's lines (worker-1, or 1): its prints and logging")
    logs.add_argument("--level", default=None, choices=["debug", "info", "warning", "error",
                                                        "critical"],
                      help="only records at this level or above")
    logs.add_argument("--follow", "-f", nargs="?", type=float, const=-1.0, default=None,
                      metavar="SECONDS",
                      help="keep printing new lines (until Ctrl-C, or for SECONDS)")
    logs.add_argument("--json", action="store_true")
    add_url_argument(logs, default="the last lite session")
    logs.set_defaults(func=cmd_logs)

    from pyproof.bench.suite import add_command as add_bench_command
    from pyproof.cli.admin import add_commands as add_admin_commands
    from pyproof.datasets.cli import add_commands as add_dataset_commands
    from pyproof.packages.cli import add_commands as add_package_commands

    add_admin_commands(sub)
    from pyproof.cli.hosts import add_commands as add_hosts_commands

    add_hosts_commands(sub)
    add_dataset_commands(sub)
    add_package_commands(sub)
    add_bench_command(sub)
    return parser


def one_line(error: BaseException) -> str:
    """An error's message on one line: a remote traceback is left to --debug."""
    text, cut, _ = str(error).partition("\n\nRemote traceback:")
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return line + (" (--debug shows the remote traceback)" if cut else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except ProofError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"proofctl: {one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`proofctl logs | head`): that is its choice, not an error;
        # stdout goes to /dev/null so the flush at exit does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
