"""Connect storm: N clients open a session at once; the gateway must not wedge.

    python -m stress.connect_storm --clients N [--limit L] [--hold S] [--json]

Starts its own proofd (sandboxed) with a per-user session limit L, releases
N client threads together (a barrier), and has each open a session with one
worker, hold it `--hold` seconds and close it, or be refused with a clear
message (over the limit). Every wait is bounded. Afterwards a fresh client
must connect and run an exact query within a bound at once, while the
storm's sessions are still closing (no open waits for closes), and again
once they are all gone from the live tree; and, once the daemon is
stopped, no process of it may survive and no socket file may be left. Exit status 1 on a wedge (a
client that never returned, or a failed health check), an unclear refusal,
or a leak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

import pyproof
from pyproof.errors import ConnectError, QueryError
from stress import SandboxDaemon, become_subreaper, run_audited

CLIENT_BOUND = 120.0     # every client has returned by then, or the gateway is wedged
HEALTH_TIMEOUT = 20.0    # a fresh client connects and runs a query within this
SESSIONS_GONE_TIMEOUT = 60.0  # the storm's sessions are all stopped by then
# a connect while the storm's sessions close is as quick as one after, give or take load
# (one close at a time, it waited for them all: 5 to 10 s for 4 to 17 closes, vs 0.2 s)
AT_ONCE_SLACK, AT_ONCE_FACTOR = 3.0, 4.0
REFUSAL_WORDS = ("refused", "limit")


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        self.barrier = threading.Barrier(args.clients + 1)

    def client(self, index: int, url: str) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(30.0)
        t0 = time.monotonic()
        record: dict[str, Any] = {"client": index}
        try:
            session = pyproof.connect(f"{url}?workers=1")
        except QueryError as exc:  # the daemon answered no
            message = str(exc)
            clear = any(w in message for w in REFUSAL_WORDS)
            record.update(outcome="refused" if clear else "refused_unclear", detail=message)
        except ConnectError as exc:
            record.update(outcome="failed", detail=str(exc))
        except Exception as exc:
            record.update(outcome="failed", detail=f"{type(exc).__name__}: {exc}")
        else:
            record.update(outcome="ok", session=session.id)
            record["latency"] = time.monotonic() - t0
            time.sleep(self.args.hold)
            t1 = time.monotonic()
            session.close()
            record["close_seconds"] = time.monotonic() - t1
        record.setdefault("latency", time.monotonic() - t0)
        record["done"] = time.monotonic() - t0
        record["detail"] = str(record.get("detail", ""))[:300]
        with self.lock:
            self.results.append(record)

    def execute(self) -> dict[str, Any]:
        become_subreaper()
        daemon = SandboxDaemon(max_sessions_per_user=self.args.limit)
        return run_audited(daemon, self._drive, self._failures)

    def _drive(self, daemon: SandboxDaemon) -> dict[str, Any]:
        args = self.args
        threads = [threading.Thread(target=self.client, args=(i, daemon.url), daemon=True,
                                    name=f"storm-{i}") for i in range(args.clients)]
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(30.0)
        t0 = time.monotonic()
        deadline = t0 + CLIENT_BOUND
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        served = time.monotonic() - t0
        wedged = [t.name for t in threads if t.is_alive()]
        # a fresh client at once, while the storm's sessions are still closing: the sessions
        # supervisor carries out opens and closes side by side (independent children), so
        # it must not wait for them (one at a time, as OTP orders them, it waited for every
        # close: about 10 s quiet, over 20 s beside a parallel test run)
        health_at_once = self._health(daemon)
        # then the storm's sessions must all be gone (timed), and a fresh client once more
        t_closed = time.monotonic()
        sessions_left = self._sessions_left(daemon)
        closed_seconds = round(time.monotonic() - t_closed, 2)
        health = self._health(daemon)
        stale = daemon.stale_socket_files()
        with self.lock:
            results = list(self.results)
        by = Counter(r["outcome"] for r in results)
        ok_latency = [r["latency"] for r in results if r["outcome"] == "ok"]
        all_latency = [r["latency"] for r in results]
        return {
            "clients": args.clients, "limit": args.limit, "hold": args.hold,
            "connects_ok": by["ok"], "refused": by["refused"],
            "refused_unclear": by["refused_unclear"], "failed": by["failed"],
            "not_returned": len(wedged),
            "seconds_to_serve_all": round(served, 2),
            "latency_all": {"p50": _quantile(all_latency, 0.5),
                            "p99": _quantile(all_latency, 0.99),
                            "max": _quantile(all_latency, 1.0)},
            "latency_ok": {"p50": _quantile(ok_latency, 0.5),
                           "p99": _quantile(ok_latency, 0.99)},
            "refusal_example": next((r["detail"] for r in results
                                     if r["outcome"] == "refused"), None),
            "other_errors": sorted({r["detail"] for r in results
                                    if r["outcome"] in ("failed", "refused_unclear")})[:10],
            "health_at_once": health_at_once, "health": health,
            "sessions_left": sessions_left,
            "seconds_until_sessions_gone": closed_seconds,
            "stale_socket_files_before_stop": stale,
        }

    def _health(self, daemon: SandboxDaemon) -> dict[str, Any]:
        """A fresh client connects and gets an exact answer: the gateway did not wedge."""
        holder: dict[str, Any] = {}

        def run() -> None:
            t = time.monotonic()
            try:
                with pyproof.connect(f"{daemon.url}?workers=1") as session:
                    holder["connect_seconds"] = round(time.monotonic() - t, 3)
                    n = 10_000
                    r = session.process("stress.selectors:CycleSum", cycles=n, progress=False,
                                        timeout=HEALTH_TIMEOUT)
                    holder["exact"] = (r.outputs["n"] == n and
                                       r.outputs["sum"] == n * (n - 1) // 2)
            except Exception as exc:
                holder["error"] = f"{type(exc).__name__}: {exc}"[:300]
            holder["seconds"] = round(time.monotonic() - t, 3)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(HEALTH_TIMEOUT + 10)
        if thread.is_alive():
            return {"ok": False, "error": "the fresh client hung"}
        ok = holder.get("exact") is True and holder["seconds"] <= HEALTH_TIMEOUT
        return dict(holder, ok=ok)

    def _sessions_left(self, daemon: SandboxDaemon) -> int | None:
        deadline = time.monotonic() + SESSIONS_GONE_TIMEOUT
        left: int | None = None
        while time.monotonic() < deadline:
            try:
                left = sum(1 for k in daemon.pids() if k.startswith("session-"))
            except Exception:
                left = None
            if left == 0:
                return 0
            time.sleep(0.1)
        return left

    def _failures(self, r: dict[str, Any]) -> list[str]:
        failures = []
        if r.get("not_returned"):
            failures.append(f"{r['not_returned']} client(s) never returned: gateway wedged")
        if not (r.get("health_at_once") or {}).get("ok"):
            failures.append(f"a fresh client waited for the storm's closes, or failed: "
                            f"{r.get('health_at_once')}")
        if not (r.get("health") or {}).get("ok"):
            failures.append(f"unhealthy afterwards: {r.get('health')}")
        at_once = (r.get("health_at_once") or {}).get("connect_seconds")
        after = (r.get("health") or {}).get("connect_seconds")
        if at_once is not None and after is not None and at_once > max(
                AT_ONCE_SLACK, AT_ONCE_FACTOR * after):
            failures.append(f"a fresh client waited for the storm's closes: it connected in "
                            f"{at_once} s while they went on, {after} s once they were gone")
        if r.get("refused_unclear"):
            failures.append(f"{r['refused_unclear']} refusal(s) without a clear reason")
        if r.get("sessions_left"):
            failures.append(f"{r['sessions_left']} session(s) still in the tree after closing")
        if self.args.strict:
            if r.get("failed"):
                failures.append(f"{r['failed']} connect(s) failed")
            if r.get("stale_socket_files_before_stop"):
                failures.append("socket files of closed sessions left while the daemon ran")
        return failures


def render(r: dict[str, Any]) -> str:
    lines = [
        f"connect storm: {r.get('clients')} clients, session limit {r.get('limit')} per user, "
        f"hold {r.get('hold')} s, wall {r.get('wall_seconds')} s",
        f"connects ok: {r.get('connects_ok')}  refused (over limit): {r.get('refused')}  "
        f"refused unclearly: {r.get('refused_unclear')}  failed: {r.get('failed')}  "
        f"never returned: {r.get('not_returned')}",
        f"time to serve all: {r.get('seconds_to_serve_all')} s",
        f"connect latency (all answers): p50 {r['latency_all']['p50']} s, "
        f"p99 {r['latency_all']['p99']} s, max {r['latency_all']['max']} s; "
        f"(sessions opened): p50 {r['latency_ok']['p50']} s, p99 {r['latency_ok']['p99']} s",
        f"refusal message: {r.get('refusal_example')}",
    ]
    lines += [f"  error: {e}" for e in r.get("other_errors", [])]
    for label, key in (("at once, while the storm's sessions close", "health_at_once"),
                       ("once they are gone", "health")):
        h = r.get(key) or {}
        lines.append(f"healthy {label}: {'yes' if h.get('ok') else 'NO'} (fresh client "
                     f"connected in {h.get('connect_seconds')} s, query done in "
                     f"{h.get('seconds')} s" + (f", {h['error']}" if h.get("error") else "")
                     + ")")
    lines.append(f"sessions left in the tree: {r.get('sessions_left')} (all gone "
                 f"{r.get('seconds_until_sessions_gone')} s after the first check)")
    lines.append(f"processes leaked: {r.get('processes_leaked')}")
    lines += [f"  {x}" for x in r.get("leaked", [])]
    lines.append(f"socket files left after stop: {len(r.get('socket_files_left', []))}; "
                 f"of closed sessions while the daemon ran: "
                 f"{len(r.get('stale_socket_files_before_stop', []))}")
    lines.append("RESULT: " + ("ok" if r.get("ok") else "FAILED: " + "; ".join(r["failures"])))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.connect_storm",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--limit", type=int, default=4,
                        help="max sessions per user (the daemon's admission limit; 0: none)")
    parser.add_argument("--hold", type=float, default=0.5,
                        help="seconds a client keeps its session open before closing it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="also fail on failed connects and stale socket files")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.limit < 0 or args.hold < 0:
        parser.error("--clients must be >= 1, --limit and --hold >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Storm(args).execute()
    print(json.dumps(report, indent=1, default=str) if args.json else render(report),
          flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
