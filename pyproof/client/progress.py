"""The live progress display: entries, events/s, MB/s, ETA and each worker's share.

In a terminal, with rich installed (it comes with several of our dependencies),
it is a rich live bar (`RichProgress`) that fits the terminal's width at every
refresh; `PYPROOF_PROGRESS=line` (or no rich) gives the plain line instead.
The plain line is one line redrawn in place, cut to the terminal's width
so it never wraps (a wrapped line cannot be redrawn and fills the screen). In
Jupyter it is a notebook display updated in place: an ipywidgets bar when
ipywidgets is installed, else an HTML line. `progress=` of `Session.process`
picks one (see `make_progress`). The last state is always drawn when the
query ends, so a finished query shows 100%.
"""

from __future__ import annotations

import html
import io
import os
import sys
import time
from typing import Any, TextIO

REDRAW_EVERY = 0.1  # seconds: a terminal redraw at most this often
MIN_COLUMNS = 20


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} "


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_parts(progress: dict[str, Any]) -> dict[str, Any]:
    """The numbers a display shows, computed once from a progress message."""
    entries, total = int(progress.get("entries", 0)), int(progress.get("total", 0))
    elapsed = max(float(progress.get("elapsed", 0.0)), 1e-9)
    rate = entries / elapsed
    frac = min(entries / total, 1.0) if total else 1.0
    if progress.get("stopped"):
        eta = "stopped"
    elif entries >= total:
        eta = "done"
    elif rate > 0:
        eta = f"ETA {_duration((total - entries) / rate)}"
    else:
        eta = "ETA ?"
    workers = progress.get("workers") or {}
    done = sum(workers.values()) or 1
    shares = " ".join(f"{w.replace('worker-', 'w')}:{100 * n / done:.0f}%"
                      for w, n in sorted(workers.items()))
    return {"entries": entries, "total": total, "frac": frac, "rate": rate, "eta": eta,
            "mbs": float(progress.get("bytes", 0)) / elapsed / 1e6, "shares": shares}


class ProgressBar:
    """One terminal line, redrawn in place; `enabled=None`: only if the stream is a terminal."""

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 24, columns: int | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.width = width
        self.columns = columns  # None: the terminal's width at each redraw
        self._last_line = 0
        self._last_draw = 0.0
        self._latest: dict[str, Any] | None = None
        self._drawn: dict[str, Any] | None = None

    def update(self, progress: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._latest = progress
        now = time.monotonic()
        if now - self._last_draw < REDRAW_EVERY:
            return
        self._last_draw = now
        self._drawn = progress
        self._draw(self.render(progress, self._columns()))

    def render(self, progress: dict[str, Any], columns: int | None = None) -> str:
        """The line; with `columns`, shortened to fit in `columns - 1` characters.

        What goes first when space is short: the worker shares, then MB/s,
        then the bar narrows; the percentage, counts and ETA stay longest.
        """
        q = progress_parts(progress)

        def line(width: int, mbs: bool, shares: bool) -> str:
            filled = int(round(q["frac"] * width))
            bar = f"[{'#' * filled}{'-' * (width - filled)}] " if width else ""
            text = (f"{bar}{100 * q['frac']:5.1f}% {q['entries']:,}/{q['total']:,} ev "
                    f"{_si(q['rate'])}ev/s")
            if mbs:
                text += f" {q['mbs']:.1f} MB/s"
            text += f" {q['eta']}"
            if shares and q["shares"]:
                text += f" {q['shares']}"
            return text

        if columns is None:
            return line(self.width, True, True)
        room = max(columns, MIN_COLUMNS) - 1  # the last column would wrap on some terminals
        for width, mbs, shares in ((self.width, True, True), (self.width, True, False),
                                   (self.width, False, False), (10, False, False),
                                   (0, False, False)):
            text = line(width, mbs, shares)
            if len(text) <= room:
                return text
        compact = (f"{100 * q['frac']:.0f}% {_si(q['entries']).replace(' ', '')}/"
                   f"{_si(q['total']).replace(' ', '')} ev {q['eta']}")
        return compact[:room]

    def _columns(self) -> int | None:
        if self.columns is not None:
            return self.columns
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return int(os.environ.get("COLUMNS", "80") or 80)

    def _draw(self, line: str) -> None:
        pad = max(0, self._last_line - len(line))
        self.stream.write("\r" + line + " " * pad + "\b" * pad)
        self.stream.flush()
        self._last_line = len(line)

    def close(self, final: dict[str, Any] | None = None) -> None:
        """Draw the last state (or `final`) and end the line."""
        if not self.enabled:
            return
        self.enabled = False  # closing twice (Ctrl-C, then finally) ends the line once
        last = final if final is not None else self._latest
        if last is not None and last is not self._drawn:
            self._draw(self.render(last, self._columns()))
        if last is not None:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RichProgress:
    """A rich live bar on a terminal: one line that fits the width at every refresh.

    What goes first when space is short is the plain line's order (worker shares,
    MB/s, then the bar narrows). `close` draws the last state, so a finished query
    ends at 100% and Ctrl-C leaves one clean line.
    """

    BAR = 30  # the bar's widest

    def __init__(self, *, stream: TextIO | None = None, columns: int | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.enabled = True
        self._latest: dict[str, Any] = {"entries": 0, "total": 0}
        self.console = Console(file=stream or sys.stderr, width=columns, highlight=False)
        self._live = Live(self, console=self.console, refresh_per_second=1 / REDRAW_EVERY,
                          transient=False, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def fit(self, progress: dict[str, Any], columns: int) -> tuple[int, str]:
        """(bar width, text) of the richest line that fits `columns - 1` characters."""
        q = progress_parts(progress)
        room = max(columns, MIN_COLUMNS) - 1

        def text(mbs: bool, shares: bool) -> str:
            out = (f"{100 * q['frac']:5.1f}% {q['entries']:,}/{q['total']:,} ev "
                   f"{_si(q['rate'])}ev/s")
            if mbs:
                out += f" {q['mbs']:.1f} MB/s"
            out += f" {q['eta']}"
            if shares and q["shares"]:
                out += f" {q['shares']}"
            return out

        for bar, mbs, shares in ((self.BAR, True, True), (self.BAR, True, False),
                                 (10, True, False), (10, False, False), (0, False, False)):
            line = text(mbs, shares)
            if (bar + 1 if bar else 0) + len(line) <= room:
                return bar, line
        compact = (f"{100 * q['frac']:.0f}% {_si(q['entries']).replace(' ', '')}/"
                   f"{_si(q['total']).replace(' ', '')} ev {q['eta']}")
        return 0, compact[:room]

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.progress_bar import ProgressBar as Bar
        from rich.table import Table
        from rich.text import Text

        progress = self._latest
        bar, line = self.fit(progress, options.max_width)
        if not bar:
            yield Text(line, no_wrap=True, overflow="crop")
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=bar, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="crop")
        frac = progress_parts(progress)["frac"]
        grid.add_row(Bar(total=1.0, completed=frac, width=bar), Text(line))
        yield grid

    def update(self, progress: dict[str, Any]) -> None:
        self._latest = progress  # the live thread redraws it

    def close(self, final: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        self.enabled = False  # closing twice (Ctrl-C, then finally) ends the line once
        if final is not None:
            self._latest = final
        self._live.stop()  # draws the last state and ends the line


def _rich_wanted() -> bool:
    if os.environ.get("PYPROOF_PROGRESS", "").lower() == "line":
        return False
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


class NotebookProgress:
    """A display in a Jupyter notebook, updated in place; ipywidgets if installed, else HTML."""

    def __init__(self) -> None:
        from IPython.display import HTML, display

        self._html = HTML
        self._latest: dict[str, Any] | None = None
        self._last_draw = 0.0
        try:
            import ipywidgets

            self._bar = ipywidgets.FloatProgress(min=0.0, max=1.0, value=0.0,
                                                 layout={"width": "40%"})
            self._label = ipywidgets.HTML("starting")
            self._handle = None
            display(ipywidgets.HBox([self._bar, self._label]))
        except ImportError:
            self._bar = None
            self._handle = display(HTML(self.render_html({"entries": 0, "total": 0})),
                                   display_id=True)

    @staticmethod
    def render_html(progress: dict[str, Any]) -> str:
        q = progress_parts(progress)
        text = (f"{100 * q['frac']:.1f}% {q['entries']:,}/{q['total']:,} events, "
                f"{_si(q['rate'])}ev/s, {q['mbs']:.1f} MB/s, {q['eta']}")
        if q["shares"]:
            text += f", {q['shares']}"
        bar = (f"<progress value='{q['frac']:.4f}' max='1' style='width:40%'></progress> ")
        return f"<div>{bar}<code>{html.escape(text)}</code></div>"

    def update(self, progress: dict[str, Any]) -> None:
        self._latest = progress
        now = time.monotonic()
        if now - self._last_draw < 4 * REDRAW_EVERY:
            return
        self._last_draw = now
        self._show(progress)

    def _show(self, progress: dict[str, Any]) -> None:
        if self._bar is not None:
            q = progress_parts(progress)
            self._bar.value = q["frac"]
            self._label.value = self.render_html(progress).split("</progress> ", 1)[1]
        elif self._handle is not None:
            self._handle.update(self._html(self.render_html(progress)))

    def close(self, final: dict[str, Any] | None = None) -> None:
        last = final if final is not None else self._latest
        if last is not None:
            self._show(last)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def make_progress(progress: bool | str | None, *, stream: TextIO | None = None) -> Any:
    """The display `Session.process(progress=...)` asks for.

    None (default): a notebook display in Jupyter, a terminal line when stderr is a
    terminal (rich's live bar when rich is installed), else nothing. True: the notebook
    display in Jupyter, else the line even when stderr is not a terminal. False: nothing.
    "terminal" or "notebook": that one.
    """
    if progress not in (None, True, False, "terminal", "notebook"):
        from pyproof.errors import InputError

        raise InputError(f"progress={progress!r}: use True, False, None (automatic), "
                         "'terminal' or 'notebook'")
    if progress is False:
        return ProgressBar(stream=stream, enabled=False)
    if progress == "notebook" or progress in (None, True) and in_notebook():
        return NotebookProgress()
    if _isatty(stream or sys.stderr) and _rich_wanted():
        return RichProgress(stream=stream)
    return ProgressBar(stream=stream, enabled=None if progress is None else True)
