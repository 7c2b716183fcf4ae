"""`proofctl packages ls|upload|enable|disable|rm|clear [--url U] [--session S]`."""

from __future__ import annotations

import argparse
from typing import Any

from pyproof.packages.client import call, upload
from pyproof.packages.errors import PackageError
from pyproof.packages.zips import build_package


def _run(args: argparse.Namespace, work) -> int:
    from pyproof.cli.admin import _control, _out

    control = _control(args)
    try:
        data, human = work(control)
    finally:
        control.close()
    return _out(args, data, human)


def _need_session(args: argparse.Namespace) -> str:
    if not args.session:
        raise PackageError(f"`proofctl packages {args.packages_command}` needs --session S "
                           "(`proofctl sessions` lists yours)")
    return args.session


def cmd_ls(args: argparse.Namespace) -> int:
    def work(control):
        listing = call(control, "package_list", {}, session=args.session)

        def human(data: dict[str, Any]) -> None:
            print(f"{'package':20s} {'version':12s} {'size':>10s} {'versions':>8s} "
                  f"{'enabled':8s} requires")
            for p in data["packages"]:
                enabled = ("pinned " + p["pinned"][:6]) if p["pinned"] else (
                    "yes" if p["enabled"] else "")
                print(f"{p['name']:20s} {p['version'][:12]:12s} {p['size']:>10,} "
                      f"{len(p['versions']):>8} {enabled:8s} {', '.join(p['requires'])}")
        return listing, human
    return _run(args, work)


def cmd_upload(args: argparse.Namespace) -> int:
    built = build_package(args.path, args.name)

    def work(control):
        sent = upload(control, built)
        data = {"name": built.name, "version": built.digest, "bytes_sent": sent}
        return data, lambda d: print(
            f"package {d['name']} version {d['version'][:12]}: "
            + (f"{d['bytes_sent']:,} bytes sent" if d["bytes_sent"] else
               "already on the host, nothing sent"))
    return _run(args, work)


def cmd_enable(args: argparse.Namespace) -> int:
    session = _need_session(args)

    def work(control):
        payload: dict[str, Any] = {"name": args.name}
        if args.version:
            payload["version"] = args.version
        enabled = call(control, "package_enable", payload, session=session)["enabled"]
        return {"enabled": enabled}, lambda d: print(
            f"enabled in session {session}: {', '.join(d['enabled'])}")
    return _run(args, work)


def cmd_disable(args: argparse.Namespace) -> int:
    session = _need_session(args)

    def work(control):
        call(control, "package_disable", {"name": args.name}, session=session)
        return {"disabled": args.name}, lambda d: print(
            f"package {args.name} disabled in session {session}")
    return _run(args, work)


def cmd_rm(args: argparse.Namespace) -> int:
    def work(control):
        call(control, "package_remove", {"name": args.name}, session=args.session)
        return {"removed": args.name}, lambda d: print(f"package {args.name} removed")
    return _run(args, work)


def cmd_clear(args: argparse.Namespace) -> int:
    def work(control):
        removed = call(control, "package_clear", {}, session=args.session)["removed"]
        return {"removed": removed}, lambda d: print(f"removed {removed} package(s)")
    return _run(args, work)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from pyproof.cli.admin import add_url_argument

    packages = sub.add_parser("packages", help="code and data shipped to the workers: "
                                               "ls, upload, enable, disable, rm, clear")
    psub = packages.add_subparsers(dest="packages_command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = psub.add_parser(name, help=help)
        add_url_argument(p)
        p.add_argument("--session", default=None, help="the session (proofctl sessions)")
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=60.0)
        p.set_defaults(func=func)
        return p

    command("ls", cmd_ls, "packages on the daemon's host (with --session: which it enables)")
    up = command("upload", cmd_upload, "upload a directory, .zip or .whl (nothing is sent "
                                       "if the host has it)")
    up.add_argument("path")
    up.add_argument("--name", default=None, help="the package name (default: from the path)")
    en = command("enable", cmd_enable, "enable a package (and what it requires) in a session")
    en.add_argument("name")
    en.add_argument("--version", default=None, help="pin this version (content hash)")
    command("disable", cmd_disable, "disable a package in a session").add_argument("name")
    command("rm", cmd_rm, "remove every version of a package from the host").add_argument(
        "name")
    command("clear", cmd_clear, "remove all your packages from the host's cache")
