"""The progress line of long statements on stderr: stage, counted step, bar, %, ETA.

    ⠹ topics: preprocessing · UMAP layout epochs 120/200 ━━━━━━━━━━━━━━╸━━━━━━━━━  60% ETA 3 s  7.2 s

Used by ``duckcluster sql``, the shell, ``duckcluster report`` and, in plain Python
scripts, by every long call while stderr is a terminal (or ``DUCKCLUSTER_PROGRESS=1``;
``0`` turns it off). On a terminal it is transient: the line is gone once the statement
ends, so results stay clean. Elsewhere (``DUCKCLUSTER_PROGRESS=1`` with stderr in a log)
it writes a line per stage and, for counted work, one every :data:`LOG_EVERY` seconds.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ..functions._registry import ProgressState

#: Seconds a statement runs before its progress line appears.
DELAY = 0.3
#: When stderr is not a terminal (``DUCKCLUSTER_PROGRESS=1`` in a log), counted steps are
#: written as lines at most this often; every new stage gets its line.
LOG_EVERY = 5.0


def format_seconds(s: float) -> str:
    """>>> format_seconds(3.2), format_seconds(75), format_seconds(4000)
    ('3 s', '1 min 15 s', '1 h 7 min')
    """
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class ProgressDisplay:
    """A context manager: ``with ProgressDisplay(console) as report: report(msg, done, total)``."""

    def __init__(self, console: Console | None = None, initial: str = "working…",
                 delay: float = DELAY) -> None:
        self.console = console or Console(stderr=True)
        self.state = ProgressState()
        self.state.stage = initial
        self.delay = delay
        self._lock = threading.Lock()
        self._spinner = Spinner("dots")
        self._live: Live | None = None
        self._timer: threading.Timer | None = None
        self._closed = False
        self._logged = -LOG_EVERY

    def report(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        with self._lock:
            before = self.state.text()
            self.state.update(msg, done, total)
            if not self.console.is_terminal:  # a log: a line per stage, counts every 5 s
                now = self.state.elapsed()
                if done is None and self.state.text() != before or \
                        done is not None and (now - self._logged >= LOG_EVERY or done == total):
                    self._logged = now
                    self.console.print(self._line(), markup=False, highlight=False,
                                       soft_wrap=True)

    def _line(self) -> str:
        st = self.state
        parts = [f"duckcluster: {st.text()}"]
        if st.fraction is not None:
            parts.append(f"{st.fraction:.0%}" + (f" ETA {format_seconds(st.eta)}"
                                                 if st.eta is not None else ""))
        parts.append(f"{st.elapsed():.1f} s")
        return " · ".join(parts)

    def _start(self) -> None:
        with self._lock:
            if self._closed or self._live is not None or not self.console.is_terminal:
                return
            self._live = Live(self, console=self.console, transient=True,
                              refresh_per_second=8, redirect_stdout=False,
                              redirect_stderr=False)
        self._live.start()

    def __enter__(self):
        if self.delay > 0:  # quick statements never draw a line
            self._timer = threading.Timer(self.delay, self._start)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._start()
        return self.report

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._closed = True
            live, self._live = self._live, None
        if self._timer is not None:
            self._timer.cancel()
        if live is not None:
            live.stop()

    def __rich__(self) -> Any:
        with self._lock:
            st = self.state
            text, fraction, eta, elapsed = st.text(), st.fraction, st.eta, st.elapsed()
        grid = Table.grid(padding=(0, 1))
        cells: list[Any] = [self._spinner, Text(text, overflow="ellipsis", no_wrap=True)]
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        if fraction is not None:
            grid.add_column(width=24, no_wrap=True)
            grid.add_column(no_wrap=True)
            cells += [ProgressBar(total=1.0, completed=fraction, width=24),
                      Text(f"{fraction:4.0%}" + (f" ETA {format_seconds(eta)}" if eta is not None
                                                 else ""), style="cyan")]
        grid.add_column(no_wrap=True)
        cells.append(Text(f"{elapsed:.1f} s", style="dim"))
        grid.add_row(*cells)
        return Group(grid)
