"""Jupyter helpers: a progress display for long calls, and cluster and drift pictures.

    %load_ext duckcluster.notebook      # progress of cluster_execute & co. under each cell
    from duckcluster.notebook import plot_clusters, plot_drift

Query results need nothing extra: DuckDB relations render as HTML tables. For
jupysql's ``%sql``, pass ``jupysql_connection(con)``: jupysql runs every query on
a new ``cursor()``, and duckcluster's macros are per cursor. The pictures are
matplotlib figures, so they are saved with the notebook. Needs
``pip install 'duckcluster[notebook]'``.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np

from . import functions as _sql
from . import install
from ._params import optional_import
from ._source import quote_literal

__all__ = ["Progress", "jupysql_connection", "load_ipython_extension", "plot_clusters",
           "plot_drift", "progress", "unload_ipython_extension"]

#: Points drawn at most by :func:`plot_clusters` (a seeded sample above it).
MAX_POINTS = 20_000


class Progress:
    """The stages of the duckcluster calls of one cell, shown in place as they happen.

    Nothing is displayed until the first stage arrives, so cells without
    duckcluster work stay clean. Stages come from DuckDB's threads; the display
    is updated at most every 0.2 s and once more at the end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._stages: list[tuple[float, str]] = []
        self._handle: Any = None
        self._shown_at = 0.0
        self._done = False

    def report(self, message: str) -> None:
        with self._lock:
            self._stages.append((time.perf_counter() - self._t0, message))
            if time.perf_counter() - self._shown_at >= 0.2:
                self._show()

    def finish(self) -> None:
        with self._lock:
            self._done = True
            if self._stages:
                self._show()

    def _show(self) -> None:
        from IPython.display import display

        self._shown_at = time.perf_counter()
        if self._handle is None:
            self._handle = display(self, display_id=True)
        else:
            self._handle.update(self)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def __repr__(self) -> str:
        head = (f"duckcluster: done in {self._elapsed():.1f} s" if self._done
                else f"duckcluster: working ({self._elapsed():.1f} s)")
        return "\n".join([head] + [f"  {t:6.1f} s  {m}" for t, m in self._stages[-8:]])

    def _repr_html_(self) -> str:
        bar = ('<progress value="1" max="1" style="width:14em"></progress>' if self._done
               else '<progress style="width:14em"></progress>')
        head = (f"done in {self._elapsed():.1f} s" if self._done
                else f"working… {self._elapsed():.1f} s")
        rows = "".join(f"<tr><td style='text-align:right'>{t:.1f} s</td>"
                       f"<td style='text-align:left'>{html.escape(m)}</td></tr>"
                       for t, m in self._stages[-8:])
        return (f"<div><b>duckcluster</b> {bar} {head}"
                f"<table style='font-size:smaller'>{rows}</table></div>")


@contextmanager
def progress() -> Iterator[Progress]:
    """Show the stages of the duckcluster calls made inside the ``with`` block."""
    p = Progress()
    _sql.set_progress(p.report)
    try:
        yield p
    finally:
        _sql.set_progress(None)
        p.finish()


_cell: dict[str, Any] = {}


def _pre_run_cell(*_: Any) -> None:
    p = Progress()
    _cell["progress"] = p
    _sql.set_progress(p.report)


def _post_run_cell(*_: Any) -> None:
    _sql.set_progress(None)
    p = _cell.pop("progress", None)
    if p is not None:
        p.finish()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext duckcluster.notebook``: a progress display under every cell that works."""
    ipython.events.register("pre_run_cell", _pre_run_cell)
    ipython.events.register("post_run_cell", _post_run_cell)


def unload_ipython_extension(ipython: Any) -> None:
    for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        try:
            ipython.events.unregister(event, fn)
        except ValueError:
            pass


class _CursorInstalling:
    """A DuckDB connection whose ``cursor()`` comes with duckcluster installed."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return install(self._con.cursor())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def jupysql_connection(con: duckdb.DuckDBPyConnection) -> Any:
    """``con`` for jupysql: ``dc = jupysql_connection(con)``, then ``%sql dc``.

    jupysql runs each query on a fresh ``con.cursor()``; this one installs
    duckcluster's per-cursor macros on it (about 0.1 s per query).
    """
    return _CursorInstalling(con)


def _pyplot():
    return optional_import("matplotlib.pyplot", "notebook", "The notebook pictures",
                           what="matplotlib")


def plot_clusters(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None, *,
                  ax: Any = None, max_points: int = MAX_POINTS, seed: int = 0) -> Any:
    """Scatter a run's members on their plotting coordinates (x, y), coloured by cluster.

    With ``dimensions := 3`` the z coordinate sets the point size (larger = nearer).
    Noise (cluster -1) is grey. Draws at most ``max_points`` members (a seeded
    sample). Returns the matplotlib Axes.
    """
    plt = _pyplot()
    run = "NULL" if run_id is None else quote_literal(run_id)
    tbl = con.sql(f"SELECT cluster_id, x, y, z FROM cluster_members({quote_literal(name)}, "
                  f"run_id := {run})").to_arrow_table()
    cols = {c: np.asarray(tbl.column(c).to_numpy(zero_copy_only=False), dtype=float)
            for c in ("cluster_id", "x", "y", "z")}
    n = len(cols["x"])
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        cols = {c: v[keep] for c, v in cols.items()}
    z = cols["z"]
    if np.isfinite(z).any():
        lo, hi = np.nanmin(z), np.nanmax(z)
        sizes = 4 + 40 * (np.nan_to_num(z, nan=lo) - lo) / ((hi - lo) or 1.0)
    else:
        sizes = np.full(len(z), 8.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 5.5))
    labels = cols["cluster_id"].astype(int)
    noise = labels == -1
    if noise.any():
        ax.scatter(cols["x"][noise], cols["y"][noise], s=sizes[noise], c="lightgrey",
                   label="noise (-1)", linewidths=0)
    ids = np.unique(labels[~noise])
    cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    for i, cid in enumerate(ids):
        m = labels == cid
        ax.scatter(cols["x"][m], cols["y"][m], s=sizes[m], color=cmap(i % cmap.N), alpha=0.75,
                   label=str(cid), linewidths=0)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    size_note = ", point size = z" if np.isfinite(z).any() else ""
    ax.set_title(f"{name}: {len(ids)} clusters, {n:,} members{size_note}")
    ax.legend(title="cluster_id", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
              markerscale=1.5, fontsize="small")
    return ax


def plot_drift(con: duckdb.DuckDBPyConnection, baseline: str, current: str, *,
               embedding: str = "embedding", seed: int = 42) -> Any:
    """The drift report's pictures: baseline vs current on the baseline's first two
    principal components, and PC1 histograms. Sides are what ``embedding_drift``
    takes (a table, a query in parentheses, a Parquet path, ``'run:<run_id>'``).
    Returns the matplotlib Figure.
    """
    from .drift import report as _report
    from .drift import sides as _drift

    plt = _pyplot()
    with con.cursor() as cur:
        B = _drift.read_side(cur, baseline, (embedding,), _report.PLOT_ROWS, seed=seed,
                             role="baseline")
        C = _drift.read_side(cur, current, (embedding,), _report.PLOT_ROWS, seed=seed,
                             role="current")
    fig = plt.figure(figsize=(12, 4.4))
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.15])
    _report._pca_scatter(left, B.X, C.X)
    _report._pc1_histograms(right, B.X, C.X)
    return fig
