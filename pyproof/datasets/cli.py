"""`proofctl ds ls|show|register|verify|rm|quota`: the dataset catalog from the shell.

Wiring (the whole contract): `add_commands(subparsers)` adds the `ds` command
to an argparse sub-parsers object and returns its parser. Every leaf command
sets two defaults on the parsed args:

- `args.func(args) -> int`: runs the command on the catalog named by
  `--catalog`, else `$PYPROOF_CATALOG`, else `default_catalog_path()`;
- `args.ds_handler(args, catalog_path) -> int`: the same on a catalog path
  the caller chooses (a daemon's catalog, say).

Output is a human table by default and JSON (one document on stdout) with
`--json`. Exit codes: 0 done; 1 a DatasetError (message on stderr, or
`{"error": {"type", "message"}}` with --json; also a cluster's error with
`ds verify --cluster`); 4 `ds verify` found bad files.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from pyproof.datasets.catalog import Catalog
from pyproof.datasets.errors import DatasetError, SourceError, format_bytes
from pyproof.datasets.records import DatasetInfo, FileRecord, QuotaInfo
from pyproof.errors import ProofError

# default_catalog_path lives in pyproof.sandbox; imported from here too
from pyproof.sandbox import default_catalog_path, make_private_dir

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_FILES = 4

Handler = Callable[[argparse.Namespace, str], int]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]?)(i?)B?\s*$")


def parse_bytes(text: str) -> int:
    """'1000', '500 MB', '1.5GB', '2 GiB' as a number of bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1000, 500MB or 2GiB")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    power = " kMGTP".index(unit.replace("K", "k")) if unit else 0
    return int(float(number) * base**power)


# ---- output --------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(human)


def _info_rows(infos: Sequence[DatasetInfo]) -> str:
    return _table(
        ("DATASET", "FILES", "ENTRIES", "SIZE", "TREE", "BAD", "UNVERIFIED", "MODIFIED"),
        [
            (i.path, i.n_files, i.total_entries, format_bytes(i.total_size),
             i.default_tree or "-", i.n_bad, i.n_unverified, _when(i.modified))
            for i in infos
        ],
    )


def _file_rows(files: Sequence[FileRecord], default_tree: str | None) -> str:
    return _table(
        ("#", "URL", "TREE", "ENTRIES", "SIZE", "HOST", "STATUS", "PROBLEM"),
        [
            (n, f.url, f.tree or default_tree or "-", "-" if f.entries is None else f.entries,
             "-" if f.size is None else format_bytes(f.size), f.host or "-", f.status(),
             f.problem or "")
            for n, f in enumerate(files)
        ],
    )


def _quota_rows(quotas: Sequence[QuotaInfo]) -> str:
    return _table(
        ("GROUP", "QUOTA", "USED", "LEFT"),
        [
            (q.group, "-" if q.limit is None else format_bytes(q.limit), format_bytes(q.used),
             "-" if q.left is None else format_bytes(q.left))
            for q in quotas
        ],
    )


# ---- handlers ------------------------------------------------------------------------


def _catalog(args: argparse.Namespace, path: str) -> Catalog:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        make_private_dir(directory)
    return Catalog(path, user=args.user, group=args.group, admin=args.admin)


@contextmanager
def _mapper(jobs: int) -> Iterator[Callable[..., Any]]:
    if jobs <= 1:
        yield builtins.map
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        yield pool.map


def cmd_ls(args: argparse.Namespace, catalog_path: str) -> int:
    with _catalog(args, catalog_path) as cat:
        infos = cat.list(args.pattern)
    _emit(args, [i.to_dict() for i in infos], _info_rows(infos) if infos else "no datasets")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, catalog_path: str) -> int:
    with _catalog(args, catalog_path) as cat:
        dataset = cat.show(args.name)
    info = dataset.info
    human = _info_rows([info])
    if not args.summary:
        human += "\n\n" + _file_rows(dataset.files, info.default_tree)
    _emit(args, dataset.to_dict(), human)
    return EXIT_OK


def cmd_register(args: argparse.Namespace, catalog_path: str) -> int:
    if args.fileset is not None:
        return _register_fileset(args, catalog_path)
    if args.name is None:
        raise SourceError("proofctl ds register needs a dataset name (or --fileset FILE)")
    with _catalog(args, catalog_path) as cat, _mapper(args.jobs) as mapper:
        info = cat.register(
            args.name, args.paths, tree=args.tree, list_file=args.list_file,
            from_dataset=args.from_dataset, overwrite=args.overwrite, update=args.update,
            trust=args.trust, verify=args.verify, map=mapper,
        )
    _emit(args, info.to_dict(), f"registered {info.path}\n\n{_info_rows([info])}")
    return EXIT_OK


def _register_fileset(args: argparse.Namespace, catalog_path: str) -> int:
    from pyproof.filesets import read_fileset

    if args.name is not None or args.paths or args.list_file or args.from_dataset or args.tree:
        raise SourceError("--fileset registers the fileset's datasets under their own names: "
                          "give no name, paths, --list, --from or --tree with it")
    fileset = read_fileset(args.fileset)
    with _catalog(args, catalog_path) as cat, _mapper(args.jobs) as mapper:
        infos = cat.register_fileset(fileset, overwrite=args.overwrite, update=args.update,
                                     trust=args.trust, verify=args.verify, map=mapper)
    _emit(args, [i.to_dict() for i in infos],
          f"registered {', '.join(i.path for i in infos)}\n\n{_info_rows(infos)}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, catalog_path: str) -> int:
    from pyproof.datasets.verify import verify_dataset

    if args.cluster:
        summary = _verify_on_cluster(args, catalog_path)
    else:
        with _catalog(args, catalog_path) as cat, _mapper(args.jobs) as mapper:
            summary = verify_dataset(
                cat, args.name, map=mapper, checksum=not args.no_checksum, deep=args.deep
            )
    human = (
        f"verified {summary.dataset}: {summary.files} files, {summary.ok} ok, "
        f"{summary.missing} missing, {summary.corrupt} corrupt, {summary.wrong_tree} wrong tree, "
        f"{summary.friend_mismatch} friend mismatch; {summary.entries} entries, "
        f"{format_bytes(summary.size)}"
    )
    if summary.problems:
        human += "\n\n" + _table(("URL", "STATUS", "PROBLEM"), summary.problems)
    _emit(args, summary.to_dict(), human)
    return EXIT_BAD_FILES if summary.problems else EXIT_OK


def _verify_on_cluster(args: argparse.Namespace, catalog_path: str) -> Any:
    """`ds verify --cluster`: on a lite cluster of --workers N, or the daemon at --url."""
    import pyproof
    from pyproof.client.verify import verify_on_cluster

    url = args.url or os.environ.get("PYPROOF_URL") or "lite://"
    with _catalog(args, catalog_path) as cat:
        cat.show(args.name)  # an unknown dataset is an error before a cluster starts
        with pyproof.connect(url, workers=args.workers) as session:
            return verify_on_cluster(session, cat, args.name, checksum=not args.no_checksum,
                                     deep=args.deep)


def cmd_rm(args: argparse.Namespace, catalog_path: str) -> int:
    with _catalog(args, catalog_path) as cat:
        info = cat.remove(args.name)
    _emit(args, info.to_dict(), f"removed {info.path} ({info.n_files} files; files not touched)")
    return EXIT_OK


def cmd_quota(args: argparse.Namespace, catalog_path: str) -> int:
    with _catalog(args, catalog_path) as cat:
        if args.set is not None or args.clear:
            quotas = [cat.set_quota(args.group_name or cat.group, args.set)]
        elif args.group_name:
            quotas = [cat.quota(args.group_name)]
        else:
            quotas = cat.quotas()
    _emit(args, [q.to_dict() for q in quotas], _quota_rows(quotas) if quotas else "no groups")
    return EXIT_OK


def _run(handler: Handler) -> Handler:
    """Wrap a handler: a DatasetError (or a cluster's error) becomes a message and exit 1."""

    def run(args: argparse.Namespace, catalog_path: str) -> int:
        try:
            return handler(args, catalog_path)
        except (DatasetError, ProofError) as err:
            if getattr(args, "json", False):
                print(json.dumps({"error": {"type": type(err).__name__, "message": str(err)}}))
            else:
                print(f"proofctl ds {args.ds_command}: error: {err}", file=sys.stderr)
            return EXIT_ERROR

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# ---- parsers -------------------------------------------------------------------------


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `ds` and its subcommands to `subparsers` (from `parser.add_subparsers()`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument("--catalog", metavar="PATH",
                        help="catalog file (default: $PYPROOF_CATALOG or the sandbox's)")
    common.add_argument("--user", help="act as this user (default: the login name)")
    common.add_argument("--group", default="default", help="act in this group (default: default)")
    common.add_argument("--admin", action="store_true",
                        help="allow changing COMMON and quotas")

    ds = subparsers.add_parser("ds", help="datasets: list, show, register, verify, remove, quota")
    leaves = ds.add_subparsers(dest="ds_command", metavar="COMMAND", required=True)

    def leaf(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = leaves.add_parser(name, parents=[common], help=help_text, description=help_text)
        wrapped = _run(handler)
        parser.set_defaults(
            ds_handler=wrapped,
            func=lambda args: wrapped(args, args.catalog or default_catalog_path()),
        )
        return parser

    ls = leaf("ls", cmd_ls, "list datasets matching a pattern ('*' wildcards; '/' for all)")
    ls.add_argument("pattern", nargs="?", default="", help="e.g. 'z*', 'bob/*', '/cms/*/*'")

    show = leaf("show", cmd_show, "show a dataset and its files")
    show.add_argument("name")
    show.add_argument("--summary", action="store_true", help="the summary only, no file list")

    register = leaf("register", cmd_register, "register a dataset from files, a list or a dataset")
    register.add_argument("name", nargs="?", default=None,
                          help="name, user/name or /group/user/name; '#tree' sets the tree")
    register.add_argument("paths", nargs="*",
                          help="paths, URLs or quoted globs; 'file.root:tree' names a tree")
    register.add_argument("--tree", help="the default tree, e.g. events or dir/events")
    register.add_argument("--list", dest="list_file", metavar="FILE",
                          help="a text file of paths, one per line (optional key=value metadata)")
    register.add_argument("--from", dest="from_dataset", metavar="DATASET",
                          help="copy the files of another dataset")
    register.add_argument("--fileset", metavar="FILE", default=None,
                          help="a coffea fileset (JSON): one dataset per name, metadata kept")
    mode = register.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    mode.add_argument("--update", action="store_true", help="add files to an existing dataset")
    register.add_argument("--trust", action="store_true", help="keep the metadata given")
    register.add_argument("--verify", action="store_true", help="verify the new files now")
    register.add_argument("--jobs", type=int, default=1, help="processes verifying (default 1)")

    verify = leaf("verify", cmd_verify, "open every file: entries, checksum, bad files")
    verify.add_argument("name")
    verify.add_argument("--jobs", type=int, default=1, help="processes verifying (default 1)")
    verify.add_argument("--deep", action="store_true", help="also read every basket")
    verify.add_argument("--no-checksum", action="store_true", help="skip the checksums")
    verify.add_argument("--cluster", action="store_true",
                        help="verify on a cluster's workers, one file per packet")
    verify.add_argument("--workers", type=int, default=None,
                        help="workers of the cluster (default: $PYPROOF_WORKERS or the cores)")
    verify.add_argument("--url", help="with --cluster: proof://host:port of a daemon "
                                      "(default: $PYPROOF_URL, else a private lite:// cluster)")

    rm = leaf("rm", cmd_rm, "remove a dataset from the catalog (its files are not touched)")
    rm.add_argument("name")

    quota = leaf("quota", cmd_quota, "show quotas, or set one (--admin)")
    quota.add_argument("group_name", nargs="?", metavar="GROUP")
    change = quota.add_mutually_exclusive_group()
    change.add_argument("--set", type=parse_bytes, metavar="BYTES", help="e.g. 500GB or 2TiB")
    change.add_argument("--clear", action="store_true", help="remove the group's quota")
    return ds
