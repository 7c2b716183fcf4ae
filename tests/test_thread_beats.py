"""The shell of data-thread heartbeats (actors/thread_beats.py) with real threads: a
blocked thread is stuck, a spinning one is busy, an idle or forgotten one is not watched."""

from __future__ import annotations

import threading
import time

from pyproof.actors.thread_beats import STUCK_AFTER, ThreadBeats, _thread_cpu

LATER = STUCK_AFTER + 1.0


def run(name: str, body) -> threading.Thread:
    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


def test_a_blocked_thread_is_stuck_and_a_spinning_one_busy():
    beats, release, stamped = ThreadBeats(), threading.Event(), threading.Barrier(3, timeout=10)

    def blocked():
        beats.stamp()
        stamped.wait()
        release.wait(30)

    def spinning():
        beats.stamp()
        stamped.wait()
        while not release.is_set():
            pass

    threads = [run("blocked", blocked), run("spinning", spinning)]
    try:
        stamped.wait()
        now = time.monotonic()
        beats.stuck(now)  # the first check samples CPU times
        first = _thread_cpu(threads[1].native_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _thread_cpu(threads[1].native_id) == first:
            time.sleep(0.02)  # the spinning thread's CPU time moves on (10 ms ticks)
        assert [s.name for s in beats.stuck(now + LATER)] == ["blocked"]
    finally:
        release.set()
        for t in threads:
            t.join(10)


def test_idle_and_forgotten_threads_are_not_watched():
    beats, done = ThreadBeats(), threading.Event()

    def idle():
        beats.idle()
        done.wait(30)

    def ends():
        beats.stamp()
        beats.forget()

    threads = [run("idle", idle), run("ends", ends)]
    threads[1].join(10)
    try:
        assert beats.stuck(time.monotonic() + LATER) == []
    finally:
        done.set()
        threads[0].join(10)
