"""Progress: ETA, a line that fits the terminal, the last state drawn, notebooks, Ctrl-C."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyproof.client.progress import NotebookProgress, ProgressBar, make_progress
from pyproof.errors import InputError
from tests.conftest import data_file

HALF = {"entries": 500_000, "total": 1_000_000, "bytes": 20_000_000, "elapsed": 2.0,
        "workers": {"worker-0": 300_000, "worker-1": 200_000}}


def test_the_line_has_an_eta_and_fits_any_terminal_width():
    bar = ProgressBar(stream=io.StringIO(), enabled=True, width=10)
    assert bar.render(HALF, 160) == ("[#####-----]  50.0% 500,000/1,000,000 ev 250.00 kev/s "
                                     "10.0 MB/s ETA 2s w0:60% w1:40%")
    assert bar.render(HALF, 80) == ("[#####-----]  50.0% 500,000/1,000,000 ev 250.00 kev/s "
                                    "10.0 MB/s ETA 2s")
    assert bar.render(HALF, 62) == "[#####-----]  50.0% 500,000/1,000,000 ev 250.00 kev/s ETA 2s"
    assert bar.render(HALF, 60) == " 50.0% 500,000/1,000,000 ev 250.00 kev/s ETA 2s"
    assert bar.render(HALF, 40) == "50% 500.00k/1.00M ev ETA 2s"
    for columns in range(1, 200):
        assert len(bar.render(HALF, columns)) < max(columns, 20)
    assert "ETA 1m40s" in bar.render(HALF | {"elapsed": 100.0}, 200)
    assert "done" in bar.render(HALF | {"entries": 1_000_000}, 200)
    # a query stopped by Ctrl-C ends where it stopped, not at a false 100%
    assert bar.render(HALF | {"stopped": True}, 200).startswith(
        "[#####-----]  50.0% 500,000/1,000,000 ev 250.00 kev/s 10.0 MB/s stopped")


def test_every_redraw_stays_on_one_line_and_the_last_state_is_drawn_at_close():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True, columns=40)
    for n in range(0, 1_000_001, 100_000):  # faster than the redraw interval: most skipped
        bar.update(HALF | {"entries": n})
    bar.close()
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    frames = [f.rstrip("\b ") for f in out[:-1].split("\r") if f]
    assert all(len(f) < 40 for f in frames)
    assert frames[-1] == "100% 1.00M/1.00M ev done"  # finishes at 100%
    bar.close()
    assert stream.getvalue() == out  # a second close adds nothing


def test_progress_argument_is_checked():
    with pytest.raises(InputError, match=r"^progress='yes': use True, False, None "
                                         r"\(automatic\), 'terminal' or 'notebook'$"):
        make_progress("yes")
    assert make_progress(False).enabled is False
    assert make_progress(True, stream=io.StringIO()).enabled is True
    assert make_progress(None, stream=io.StringIO()).enabled is False  # not a terminal


def test_the_notebook_display_renders_html_with_eta():
    html = NotebookProgress.render_html(HALF)
    assert html.startswith("<div><progress value='0.5000' max='1'")
    assert "50.0% 500,000/1,000,000 events, 250.00 kev/s, 10.0 MB/s, ETA 2s, w0:60% w1:40%" \
        in html


SCRIPT = textwrap.dedent("""
    import pyproof
    from tests.sample_selectors import SlowCount
    if __name__ == "__main__":
        with pyproof.connect("lite://?workers=1") as s:
            r = s.process(SlowCount, dataset={path!r}, inputs={{"sleep": {sleep}}},
                          progress=True, packetizer="basic",
                          packetizer_params={{"packet_entries": 20}})
            print("STOPPED", r.stopped, r.stats.entries, flush=True)
""")


def _interrupt(tmp_path, *, presses: int, sleep: float) -> tuple[int, str, str]:
    """Run SCRIPT, press Ctrl-C `presses` times once its bar shows; (code, stdout, stderr)."""
    script = tmp_path / "interrupt.py"
    script.write_text(SCRIPT.format(path=data_file("uproot-Zmumu.root") + ":events",
                                    sleep=sleep))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    # Ctrl-C as at a terminal: a pytest-xdist worker ignores SIGINT (its controller handles
    # it) and a child would inherit that, so Python would install no KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    fd = proc.stderr.fileno()
    seen = b""
    try:
        # the bar's first frame says the query runs
        deadline = time.monotonic() + 60
        while b"% " not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                break  # the script ended
            seen += chunk
        assert b"% " in seen, seen
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            # two presses during one blocking wait arrive as one interrupt (Python's
            # signal flag): give the first time to be handled (stop() sent)
            time.sleep(1.0)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), (seen + rest).decode()


def test_ctrl_c_stops_the_query_and_returns_what_was_done(tmp_path):
    code, out, err = _interrupt(tmp_path, presses=1, sleep=0.5)
    assert code == 0, err
    stopped, entries = out.split()[1:3]
    assert stopped == "True" and 0 < int(entries) < 2304, out
    assert "Traceback" not in err, err


def test_ctrl_c_twice_aborts_with_no_socket_traceback(tmp_path):
    code, _, err = _interrupt(tmp_path, presses=2, sleep=5.0)
    assert code != 0
    assert "KeyboardInterrupt: query " in err and "aborted (Ctrl-C twice)" in err, err
    assert "pynng" not in err and "nng" not in err.replace("pyproof", ""), err


def test_the_rich_bar_fits_the_width_and_ends_at_100_percent():
    from pyproof.client.progress import RichProgress

    wide = RichProgress(stream=io.StringIO(), columns=160)
    try:
        bar, line = wide.fit(HALF, 160)
        assert bar == RichProgress.BAR
        assert line == " 50.0% 500,000/1,000,000 ev 250.00 kev/s 10.0 MB/s ETA 2s w0:60% w1:40%"
        assert wide.fit(HALF, 60) == (10, " 50.0% 500,000/1,000,000 ev 250.00 kev/s ETA 2s")
        assert wide.fit(HALF, 40) == (0, "50% 500.00k/1.00M ev ETA 2s")
        for columns in range(1, 200):
            bar, line = wide.fit(HALF, columns)
            assert (bar + 1 if bar else 0) + len(line) < max(columns, 20)
    finally:
        wide.close()
    for columns in (60, 160):
        stream = io.StringIO()
        rich_bar = RichProgress(stream=stream, columns=columns)
        rich_bar.update(HALF)
        rich_bar.close(HALF | {"entries": 1_000_000})
        rich_bar.close()  # a second close adds nothing
        lines = stream.getvalue().splitlines()
        assert lines and all(len(line) < columns for line in lines)
        assert "100.0% 1,000,000/1,000,000 ev" in lines[-1] and "done" in lines[-1]


def test_a_terminal_gets_the_rich_bar_unless_told_otherwise(monkeypatch):
    from pyproof.client.progress import RichProgress

    leader, follower = os.openpty()
    with open(follower, "w") as tty:
        display = make_progress(None, stream=tty)
        try:
            assert isinstance(display, RichProgress)
        finally:
            display.close()
        monkeypatch.setenv("PYPROOF_PROGRESS", "line")
        line = make_progress(None, stream=tty)
        assert isinstance(line, ProgressBar) and line.enabled
    os.close(leader)
