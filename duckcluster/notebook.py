"""Jupyter helpers: a progress display for long calls, readable errors, and cluster and
drift pictures.

    %load_ext duckcluster.notebook      # progress (%, ETA) of cluster_execute & co. under
                                        # each cell; SQL errors as one line
    from duckcluster.notebook import plot_clusters, plot_drift

Query results need nothing extra: DuckDB relations render as HTML tables. For
jupysql's ``%sql``, pass ``jupysql_connection(con)``: jupysql runs every query on
a new ``cursor()``, and duckcluster's macros are per cursor. The pictures are
matplotlib figures, so they are saved with the notebook. Needs
``pip install 'duckcluster[notebook]'``.
"""

from __future__ import annotations

import html
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np

from . import functions as _sql
from . import install
from ._errors import DuckclusterError, user_message
from ._params import optional_import
from ._source import quote_literal
from .functions._registry import ProgressState

__all__ = ["Progress", "cluster_names", "jupysql_connection", "load_ipython_extension",
           "plot_clusters", "plot_drift", "progress", "unload_ipython_extension"]

#: Points drawn at most by :func:`plot_clusters` (a seeded sample above it).
MAX_POINTS = 20_000


class Progress:
    """The progress of the duckcluster calls of one cell, shown in place as it happens:
    the stages so far, and for countable work (epochs, rows, windows, clusters) a bar
    with % done and an ETA.

    Nothing is displayed until the first report arrives, so cells without
    duckcluster work stay clean. Reports come from DuckDB's threads; the display
    is updated at most every 0.2 s and once more at the end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._stages: list[tuple[float, str]] = []
        self._state = ProgressState()
        self._handle: Any = None
        self._shown_at = 0.0
        self._done = False

    def report(self, message: str, done: int | None = None, total: int | None = None) -> None:
        with self._lock:
            self._state.update(message, done, total)
            if done is None:
                self._stages.append((time.perf_counter() - self._t0, message))
            if time.perf_counter() - self._shown_at >= 0.2:
                self._show()

    def finish(self) -> None:
        with self._lock:
            self._done = True
            if self._stages or self._state.done is not None:
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

    def _count(self) -> str:
        """'UMAP layout epochs 120/200 · 60% · ETA 3 s' for the step under way, or ''."""
        st = self._state
        if st.fraction is None or self._done:
            return ""
        what = f"{st.what} {st.done:,}/{st.total:,} · " if st.what else ""
        eta = f" · ETA {_seconds(st.eta)}" if st.eta is not None else ""
        return f"{what}{st.fraction:.0%}{eta}"

    def __repr__(self) -> str:
        head = (f"duckcluster: done in {self._elapsed():.1f} s" if self._done
                else f"duckcluster: working ({self._elapsed():.1f} s)")
        lines = [head] + [f"  {t:6.1f} s  {m}" for t, m in self._stages[-8:]]
        if self._count():
            lines.append(f"  {self._count()}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        fraction = self._state.fraction
        if self._done:
            bar = '<progress value="1" max="1" style="width:14em"></progress>'
        elif fraction is not None:
            bar = f'<progress value="{fraction:.4f}" max="1" style="width:14em"></progress>'
        else:
            bar = '<progress style="width:14em"></progress>'
        head = (f"done in {self._elapsed():.1f} s" if self._done
                else f"working… {self._elapsed():.1f} s")
        count = f" <span>{html.escape(self._count())}</span>" if self._count() else ""
        rows = "".join(f"<tr><td style='text-align:right'>{t:.1f} s</td>"
                       f"<td style='text-align:left'>{html.escape(m)}</td></tr>"
                       for t, m in self._stages[-8:])
        return (f"<div><b>duckcluster</b> {bar} {head}{count}"
                f"<table style='font-size:smaller'>{rows}</table></div>")


def _seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s"


@contextmanager
def progress() -> Iterator[Progress]:
    """Show the progress of the duckcluster calls made inside the ``with`` block."""
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


def _one_line_error(shell: Any, etype: type, value: BaseException, tb: Any,
                    tb_offset: int | None = None) -> None:
    """A duckcluster error raised through SQL, shown as its one line (no traceback);
    other DuckDB errors as DuckDB words them. (IPython 9 ignores what a custom handler
    returns, so it shows the error itself.)"""
    text = user_message(value)
    stb = [f"\x1b[0;31m{line}\x1b[0m" for line in text.splitlines() or [type(value).__name__]]
    shell._showtraceback(etype, value, stb)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext duckcluster.notebook``: a progress display under every cell that works,
    and errors of duckcluster and DuckDB as one readable line instead of a traceback."""
    ipython.events.register("pre_run_cell", _pre_run_cell)
    ipython.events.register("post_run_cell", _post_run_cell)
    ipython.set_custom_exc((duckdb.Error, DuckclusterError), _one_line_error)


def unload_ipython_extension(ipython: Any) -> None:
    for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        try:
            ipython.events.unregister(event, fn)
        except ValueError:
            pass
    ipython.set_custom_exc((), None)


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


def _palette(plt) -> list[tuple[float, float, float]]:
    """Qualitative colours for clusters: matplotlib's tab20 with its dark and light halves
    apart, so the first ten are the most distinct."""
    tab20 = plt.get_cmap("tab20").colors
    return [tuple(c) for c in tab20[0::2] + tab20[1::2]]


#: Neighbouring clusters (by the distance of their centres on the map) that must not
#: share a colour.
COLOUR_NEIGHBOURS = 6
#: Longest line of a cluster name on the map, in characters (names are wrapped, 2 lines).
LABEL_WIDTH = 18


def cluster_names(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None
                  ) -> dict[int, str]:
    """``{cluster_id: name}`` for a run's top-level clusters: the label, else the first
    three keywords, else nothing (the cluster is drawn with its number)."""
    run = "NULL" if run_id is None else quote_literal(run_id)
    rows = con.sql(f"SELECT cluster_id, label, keywords FROM "
                   f"cluster_centroids({quote_literal(name)}, run_id := {run}) "
                   f"WHERE hierarchy_level = 0").fetchall()
    names = {}
    for cid, label, keywords in rows:
        if isinstance(keywords, str):  # a JSON array in older catalogs
            try:
                keywords = json.loads(keywords)
            except ValueError:
                keywords = [keywords]
        text = (label or "").strip() or ", ".join(str(k) for k in (keywords or [])[:3])
        if text:
            names[int(cid)] = text
    return names


def _colours(centres: np.ndarray, sizes: np.ndarray, palette: list) -> list:
    """One palette colour per cluster, different from its nearest neighbours' on the map
    (greedy, biggest cluster first; among the allowed colours, the least used)."""
    k = len(centres)
    out: list = [None] * k
    if k == 0:
        return out
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :COLOUR_NEIGHBOURS]
    used = np.zeros(len(palette), dtype=int)
    for i in np.argsort(-sizes, kind="stable"):
        taken = {out[j] for j in near[i] if out[j] is not None} | \
            {out[j] for j in range(k) if out[j] is not None and i in near[j]}
        free = [c for c in range(len(palette)) if c not in taken] or list(range(len(palette)))
        pick = min(free, key=lambda c: (used[c], c))
        out[i] = pick
        used[pick] += 1
    return [palette[c] for c in out]


def _place_labels(ax: Any, texts: list, sizes: np.ndarray) -> int:
    """Move labels off each other (8 nudges, then a smaller font); hide what still
    overlaps, smallest cluster first. Returns how many were hidden."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed: list = []
    hidden = 0
    for i in np.argsort(-sizes, kind="stable"):
        t = texts[i]
        x0, y0 = t.get_position()
        ok = False
        for shrink in (1.0, 0.8):
            if shrink < 1:
                t.set_fontsize(t.get_fontsize() * shrink)
            bb = t.get_window_extent(renderer).expanded(1.05, 1.15)
            step = bb.height * 0.9
            for dx, dy in ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1),
                           (-1, -1)):
                inv = ax.transData.inverted()
                px, py = ax.transData.transform((x0, y0))
                t.set_position(inv.transform((px + dx * step * 1.6, py + dy * step)))
                bb = t.get_window_extent(renderer).expanded(1.05, 1.15)
                if not any(bb.overlaps(other) for other in placed):
                    ok = True
                    break
            if ok:
                break
        if ok:
            placed.append(bb)
        else:
            t.set_visible(False)
            hidden += 1
    return hidden


def _dark(colour) -> tuple:
    return tuple(0.55 * c for c in colour[:3])


def _labels_in_place(ax: Any, centres: np.ndarray, strings: list[str], colours: list,
                     counts: np.ndarray, patheffects: Any) -> list:
    """Names at the clusters' centres, the font growing with the cluster, on a halo."""
    big = counts.max() if len(counts) else 1
    return [ax.text(cx, cy, text, ha="center", va="center", zorder=3,
                    fontsize=7 + 5 * np.sqrt(size / big), color=_dark(colour),
                    fontweight="bold",
                    path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
            for (cx, cy), text, size, colour in zip(centres, strings, counts, colours)]


def _spread(want: np.ndarray, gap: float, lo: float, hi: float) -> np.ndarray:
    """Positions as near ``want`` (sorted) as possible, ``gap`` apart, within [lo, hi]
    when they fit."""
    y = np.clip(np.asarray(want, dtype=float), lo, hi)
    for i in range(1, len(y)):
        y[i] = max(y[i], y[i - 1] + gap)
    if len(y) and y[-1] > hi:
        y[-1] = hi
        for i in range(len(y) - 2, -1, -1):
            y[i] = min(y[i], y[i + 1] - gap)
    return y


def _labels_beside(ax: Any, centres: np.ndarray, strings: list[str], colours: list,
                   x: np.ndarray, y: np.ndarray) -> None:
    """DataMapPlot's layout for crowded maps: names in a column on each side of the
    points, each joined to its cluster's centre by a thin line of its colour."""
    finite = np.isfinite(x) & np.isfinite(y)
    xlo, xhi = np.percentile(x[finite], [0.5, 99.5])
    ylo, yhi = np.percentile(y[finite], [0.5, 99.5])
    w, h = (xhi - xlo) or 1.0, (yhi - ylo) or 1.0
    order = np.argsort(centres[:, 0])
    right = set(order[len(order) // 2:].tolist()) if len(order) > 1 else set(order.tolist())
    ax.set_xlim(xlo - 0.55 * w, xhi + 0.55 * w)
    ax.set_ylim(ylo - 0.08 * h, yhi + 0.08 * h)
    lines = max((s.count("\n") + 1 for s in strings), default=1)
    per_side = max(1, (len(strings) + 1) // 2)
    fig_h = ax.get_window_extent().height / ax.figure.dpi * 72  # axes height in points
    fontsize = float(np.clip(fig_h / (per_side * lines * 1.45), 5.5, 9.0))
    gap = fontsize * lines * 1.4 / fig_h * (1.16 * h)  # in data units of y
    for side in (True, False):
        idx = [i for i in range(len(strings)) if (i in right) == side]
        idx.sort(key=lambda i: centres[i, 1])
        ys = _spread(centres[idx, 1], gap, ylo - 0.05 * h, yhi + 0.05 * h)
        col_x = xhi + 0.08 * w if side else xlo - 0.08 * w
        for i, ty in zip(idx, ys):
            ax.text(col_x, ty, strings[i], ha="left" if side else "right", va="center",
                    fontsize=fontsize, color=_dark(colours[i]), fontweight="bold", zorder=3)
            end = col_x - 0.01 * w if side else col_x + 0.01 * w
            ax.plot([centres[i, 0], end], [centres[i, 1], ty], color=colours[i], lw=0.7,
                    alpha=0.8, zorder=2.5)


def map_kind(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None) -> str:
    """'graph' or 'pca': where a run's x, y come from (an assign run: its base run's map),
    from ``cluster_runs(...).choices``."""
    rows = con.sql(f"SELECT run_id, mode, base_run_id, choices FROM "
                   f"cluster_runs({quote_literal(name)}) WHERE status = 'succeeded'").fetchall()
    by_id = {r[0]: r for r in rows}
    row = by_id.get(run_id) if run_id is not None else (rows[-1] if rows else None)
    if row is not None and row[1] == "assign":
        row = by_id.get(row[2])
    if row is None or not row[3]:
        return "pca"
    return (json.loads(row[3]).get("map") or {}).get("kind", "pca")


def plot_clusters(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None, *,
                  ax: Any = None, max_points: int = MAX_POINTS, seed: int = 0,
                  names: bool = True) -> Any:
    """A run's members on their map (x, y), each cluster named where it is.

    The map is the layout of the run's neighbour graph when its pipeline built one (the
    default ``auto`` on wide input, a ``umap`` step), else the PCA plane; the title says
    which.

    Clusters are named by their label, else their first keywords (``cluster_label``
    makes both), else their number, in a font that grows with the cluster, on a halo;
    labels that would overlap are nudged, shrunk, or (smallest clusters first) left
    out. There is no legend, so 50 clusters stay readable. Neighbouring clusters get
    different colours (greedy colouring of the map's nearest-centre graph). Noise
    (cluster -1) is light grey. With ``dimensions := 3`` the z coordinate sets the
    point size (larger = nearer). Draws at most ``max_points`` members (a seeded
    sample). Returns the matplotlib Axes.
    """
    plt = _pyplot()
    from matplotlib import patheffects

    run = "NULL" if run_id is None else quote_literal(run_id)
    tbl = con.sql(f"SELECT cluster_id, x, y, z FROM cluster_members({quote_literal(name)}, "
                  f"run_id := {run})").to_arrow_table()
    cols = {c: np.asarray(tbl.column(c).to_numpy(zero_copy_only=False), dtype=float)
            for c in ("cluster_id", "x", "y", "z")}
    n = len(cols["x"])
    labels = cols["cluster_id"].astype(int)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    centres = np.array([[np.median(cols["x"][labels == c]), np.median(cols["y"][labels == c])]
                        for c in ids]).reshape(-1, 2)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        cols = {c: v[keep] for c, v in cols.items()}
        labels = labels[keep]
    z = cols["z"]
    if np.isfinite(z).any():
        lo, hi = np.nanmin(z), np.nanmax(z)
        sizes = 2 + 30 * (np.nan_to_num(z, nan=lo) - lo) / ((hi - lo) or 1.0)
    else:
        sizes = np.full(len(z), 6.0 if len(z) < 5000 else 3.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 7))
    noise = labels == -1
    if noise.any():
        ax.scatter(cols["x"][noise], cols["y"][noise], s=sizes[noise] * 0.6, c="#d9d9d9",
                   linewidths=0, zorder=1)
    colours = _colours(centres, counts.astype(float), _palette(plt))
    for cid, colour in zip(ids, colours):
        m = labels == cid
        ax.scatter(cols["x"][m], cols["y"][m], s=sizes[m], color=colour, alpha=0.8,
                   linewidths=0, zorder=2)
    titles = cluster_names(con, name, run_id) if names else {}
    strings = ["\n".join(textwrap.wrap(titles.get(int(cid), str(cid)), LABEL_WIDTH,
                                       max_lines=2, placeholder="…")) for cid in ids]
    texts = _labels_in_place(ax, centres, strings, colours, counts, patheffects)
    hidden = _place_labels(ax, texts, counts.astype(float)) if texts else 0
    if hidden:  # crowded map: every name in a column beside it, a line to its cluster
        for t in texts:
            t.remove()
        _labels_beside(ax, centres, strings, colours, cols["x"], cols["y"])
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    notes = [f"{len(ids)} clusters", f"{n:,} members",
             "graph map" if map_kind(con, name, run_id) == "graph" else "PCA map"]
    if noise.any():
        notes.append(f"{(cols['cluster_id'] == -1).mean():.0%} noise (grey)")
    if np.isfinite(z).any():
        notes.append("point size = z")
    ax.set_title(f"{name}: " + ", ".join(notes), fontsize="medium")
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
