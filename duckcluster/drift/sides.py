"""Drift at the DuckDB edge: read two sides, run the pure methods of :mod:`duckcluster.drift`.

A side is anything a cluster source can be (a table or view name, a Parquet
path or glob, a query in parentheses) or ``'run:<run_id>'``: the rows of the
definition's source whose ids were members of that run (so two runs of one
definition compare the data each run saw). Sides are read by streaming Arrow
batches; a side with more non-NULL rows than the methods use is sampled while
streaming (a seeded choice of row positions), so memory stays bounded by the
sample. For a reproducible sample a query side should have a stable order
(tables and Parquet files keep theirs).

:class:`~duckcluster.drift.spec.DriftSpec` is the one validated form of the arguments
that SQL, the CLI report and Python calls share. Drift over time windows
(:func:`drift_windows`) reads a source once, bucketing rows with DuckDB's
``time_bucket`` and sampling each window while streaming.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import DataError, RunNotFoundError, SpecError
from .._params import validate_params
from .._source import describe, name_bad_file, quote_ident, require_columns, source_sql
from ..catalog import runs as catalog
from ..core import progress as _steps
from ..core.assign import normalize_rows
from ..core.backend import Executor, LocalExecutor
from ..core.vectors import check_nonzero, to_dense
from . import DriftResult, Reference, get_method, run_method
from .spec import EXPLAIN_OPTIONS, DriftSpec

RUN_PREFIX = "run:"
Progress = Callable[[str], None]
_BATCH_ROWS = 65_536

# -- reading one side ------------------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """A side as read: a sample of its non-NULL rows and how many rows it has."""

    label: str  # what the user passed
    X: np.ndarray  # (n_sample, d) float32
    n_rows: int  # non-NULL embeddings
    n_null: int  # rows skipped for a NULL embedding
    run_id: str | None = None
    #: extra per-row values read along (name -> VARCHAR Arrow array, rows as in X)
    extra: Mapping[str, pa.Array] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return self.X.shape[0] < self.n_rows


@dataclass(frozen=True)
class _Query:
    """The FROM expression and columns of a side."""

    from_sql: str
    columns: tuple[str, ...]
    types: tuple[str, ...] = ()
    run_id: str | None = None
    definition: str | None = None
    all_columns: tuple[str, ...] = ()


def _resolve(cur, source: str, embedding: tuple[str, ...] | None, role: str) -> _Query:
    if not isinstance(source, str) or not source.strip():
        raise SpecError(f"The {role} must be a table or view name, a Parquet path, a query in "
                        f"parentheses or 'run:<run_id>'. Got {source!r}.")
    s = source.strip()
    if s.startswith(RUN_PREFIX):
        return _resolve_run(cur, s[len(RUN_PREFIX):].strip(), embedding, role)
    try:
        src = source_sql(cur, s)
    except SpecError as exc:
        hint = ""
        try:
            is_run = cur.execute("SELECT count(*) FROM duckcluster.runs WHERE run_id = ?",
                                 [s]).fetchall()[0][0]
        except duckdb.Error:  # a database without the duckcluster catalog
            is_run = 0
        if is_run:
            hint = f" {s!r} is a run id: pass 'run:{s}' to compare the rows of that run."
        raise SpecError(f"The {role} side: {exc}{hint}") from None
    if embedding is None:
        raise SpecError(f"Name the embedding column of the {role} side, e.g. "
                        "embedding_drift('q1', 'q3', 'embedding').")
    cols = describe(cur, src)
    require_columns(cols, list(embedding), "embedding", s)
    return _Query(src, embedding, tuple(cols[c] for c in embedding), all_columns=tuple(cols))


def _resolve_run(cur, run_id: str, embedding, role: str) -> _Query:
    run = catalog.get_run(cur, run_id)
    if run["status"] != "succeeded":
        raise RunNotFoundError(f"Run {run_id!r} of {run['name']!r} has status "
                               f"{run['status']!r}; the {role} side needs a succeeded run. List "
                               f"runs with SELECT * FROM cluster_runs({run['name']!r}).")
    spec = json.loads(run["spec"])
    cols = embedding or tuple(spec["embedding"])
    src = source_sql(cur, spec["source"])
    types = describe(cur, src)
    require_columns(types, list(cols), "embedding", spec["source"])
    id_col = spec.get("id") or "id"
    members = (f"(SELECT m.id AS __dc_id FROM duckcluster.members m WHERE m.run_id = "
               f"{_literal(run_id)})")
    from_sql = (f"(SELECT s.* FROM {src} AS s JOIN {members} AS __dc_m "
                f"ON CAST(s.{quote_ident(id_col)} AS VARCHAR) = __dc_m.__dc_id "
                f"ORDER BY __dc_m.__dc_id) AS __dc_run")
    return _Query(from_sql, cols, tuple(types[c] for c in cols), run_id=run_id,
                  definition=run["name"], all_columns=tuple(types))


def _literal(value: str) -> str:
    from .._source import quote_literal

    return quote_literal(value)


def _not_null(columns: Sequence[str]) -> str:
    return " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in columns)


def read_side(cur, source: str, embedding: tuple[str, ...] | None, cap: int | None, *,
              seed: int, normalize: bool = True, pooling: str = "mean",
              role: str = "baseline", extras: Mapping[str, str] | None = None) -> Side:
    """Read (a seeded sample of at most ``cap`` of) the non-NULL embeddings of a side.

    ``extras`` maps a name to a column name or one SQL expression over the side's
    columns (``id``, ``text``, ``group_by``); each is read along as VARCHAR.
    """
    try:
        return _read_side(cur, source, embedding, cap, seed=seed, normalize=normalize,
                          pooling=pooling, role=role, extras=extras)
    except (duckdb.Error, OSError, pa.ArrowException) as exc:  # a damaged file: say which
        raise name_bad_file(cur, source, "*", exc) from None


def _read_side(cur, source: str, embedding: tuple[str, ...] | None, cap: int | None, *,
               seed: int, normalize: bool, pooling: str, role: str,
               extras: Mapping[str, str] | None) -> Side:
    q = _resolve(cur, source, embedding, role)
    # variable-length LIST columns: check every row's length here, not only the sampled ones
    lists = [c for c, t in zip(q.columns, q.types) if t.endswith("[]") and t.count("[") == 1]
    lens = "".join(f", min(len({quote_ident(c)})), max(len({quote_ident(c)}))" for c in lists)
    counts = cur.execute(f"SELECT count(*), count(*) FILTER (WHERE {_not_null(q.columns)}){lens} "
                         f"FROM {q.from_sql}").fetchall()[0]
    n_all, n_valid = int(counts[0]), int(counts[1])
    for i, c in enumerate(lists):
        lo, hi = counts[2 + 2 * i], counts[3 + 2 * i]
        if lo is not None and lo != hi:
            raise DataError(f"Column {c!r} of the {role} side {source!r} mixes dimensions: its "
                            f"embeddings have between {lo} and {hi} values. Every embedding must "
                            f"have the same length; filter the odd rows (WHERE len({c}) = {hi}).")
    if n_valid == 0:
        what = "has no rows" if n_all == 0 else \
            f"has {n_all} rows but every {'/'.join(q.columns)} is NULL"
        raise DataError(f"The {role} side {source!r} {what}; there is nothing to compare. "
                        "Check its WHERE clause, time range or run.")
    rng = np.random.default_rng([seed, 0 if role == "baseline" else 1])
    keep = None if cap is None or n_valid <= cap else \
        np.sort(rng.choice(n_valid, size=cap, replace=False))
    cols = ", ".join(quote_ident(c) for c in q.columns)
    extra_sql = "".join(f", CAST(({_extra_expr(cur, q, name, expr, role, source)}) AS VARCHAR) "
                        f"AS {quote_ident('__dc_x_' + name)}"
                        for name, expr in (extras or {}).items())
    try:
        rel = cur.sql(f"SELECT {cols}{extra_sql} FROM {q.from_sql} WHERE {_not_null(q.columns)}")
        tbl = _take_rows(rel, keep)
    except duckdb.Error as exc:
        if not extras:
            raise
        raise SpecError(f"Could not read {', '.join(extras)} on the {role} side {source!r}: "
                        f"{str(exc).splitlines()[0]}") from None
    X = _dense(tbl, q.columns, role, normalize, pooling, keep)
    extra = {name: tbl.column("__dc_x_" + name).combine_chunks() for name in (extras or {})}
    return Side(label=source, X=X, n_rows=n_valid, n_null=n_all - n_valid, run_id=q.run_id,
                extra=extra)


def _extra_expr(cur, q: _Query, name: str, expr: str, role: str, source: str) -> str:
    """A column name (quoted) or a validated single SQL expression."""
    if not isinstance(expr, str) or not expr.strip():
        raise SpecError(f"{name} must be a column name or one SQL expression. Got {expr!r}.")
    if expr in q.all_columns:
        return quote_ident(expr)
    from .._source import validate_text_expression

    try:
        validate_text_expression(cur, expr)
    except SpecError:
        raise SpecError(f"{name} must be a column of the {role} side {source!r} or one SQL "
                        f"expression over its columns ({', '.join(q.all_columns)}). Got "
                        f"{expr!r}.") from None
    return expr


def _take_rows(rel: duckdb.DuckDBPyRelation, keep: np.ndarray | None) -> pa.Table:
    """All rows of ``rel``, or the rows at sorted positions ``keep``, streamed in batches."""
    if keep is None:
        return rel.to_arrow_table()
    reader = rel.to_arrow_reader(_BATCH_ROWS)
    parts, pos = [], 0
    for batch in reader:
        lo, hi = np.searchsorted(keep, [pos, pos + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(keep[lo:hi] - pos)))
        pos += batch.num_rows
    return pa.Table.from_batches(parts, schema=reader.schema)


def _dense(tbl: pa.Table, columns: Sequence[str], role: str, normalize: bool, pooling: str,
           positions: np.ndarray | None) -> np.ndarray:
    pos = np.arange(tbl.num_rows) if positions is None else positions
    names = [f"{role} row {int(i)}" for i in pos]
    parts = []
    for c in columns:
        v = to_dense(tbl.column(c), names, c, pooling)
        X = v.X
        if normalize:
            check_nonzero(X, names, c)
            X = normalize_rows(X)
        parts.append(X)
    X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return normalize_rows(X) if normalize and len(parts) > 1 else X.astype(np.float32, copy=False)


# -- references and running -------------------------------------------------------------

def load_reference(cur, name: str | None, run_id: str | None) -> Reference | None:
    """Centroids of a run: ``run_id``, else the latest full run of definition ``name``."""
    if name is None and run_id is None:
        return None
    if run_id is None:
        run_id = catalog.latest_run(cur, name, mode="full")
    else:
        run = catalog.get_run(cur, run_id)
        if name is not None and run["name"] != name:
            raise SpecError(f"reference_run {run_id!r} belongs to {run['name']!r}, not to "
                            f"reference {name!r}. Pass one of them, or matching ones.")
    ref = catalog.centroid_matrix(cur, run_id)
    if not len(ref.cluster_ids):
        raise DataError(f"Run {run_id!r} has no clusters to assign to; pick a reference run "
                        "with at least one cluster.")
    from ..catalog.runs import own_threshold

    return Reference(cluster_ids=ref.cluster_ids.astype(np.int64), centroids=normalize_rows(ref.C),
                     source=f"run {run_id}", threshold=own_threshold(cur, run_id))


def _check_pair(B: Side, C: Side) -> None:
    if B.X.shape[1] != C.X.shape[1]:
        raise DataError(f"The baseline {B.label!r} has {B.X.shape[1]}-dimensional embeddings but "
                        f"the current {C.label!r} has {C.X.shape[1]}. Compare embeddings of the "
                        "same model and column.")


def _quiet(msg: str) -> None:
    pass


def compare(spec: DriftSpec, B: Side, C: Side, reference: Reference | None,
            progress: Progress = _quiet) -> list[dict]:
    """Run every method of ``spec`` on two sides read already; one row per method.

    With ``group_by`` the sides carry their group values (``extra['group_by']``)
    and the permutations relabel whole groups. Several methods get
    ``p_value_adjusted`` (Benjamini-Hochberg over the methods run) and decide on it.
    """
    _check_pair(B, C)
    groups = _groups(spec, B, C)
    rows = []
    for name in spec.methods:
        _steps.step("drift methods", len(rows), len(spec.methods))
        progress(f"drift: {name} on {B.X.shape[0]:,} + {C.X.shape[0]:,} rows")
        ref = reference if name == "cluster" else None
        r: DriftResult = run_method(name, B.X, C.X, spec.params[name], alpha=spec.alpha,
                                    seed=spec.seed, reference=ref, groups=groups)
        details = {**r.details, "normalize": spec.normalize,
                   "n_null_baseline": B.n_null, "n_null_current": C.n_null}
        if B.sampled or C.sampled:
            details["sampled"] = True
            details["read_sample_rows"] = {"baseline": int(B.X.shape[0]),
                                           "current": int(C.X.shape[0])}
        if groups is not None:
            details["group_by"] = spec.group_by
            details["n_groups"] = int(groups.max()) + 1
        rows.append({**r.as_row(), "n_baseline": B.n_rows, "n_current": C.n_rows,
                     "details": details})
    _steps.step("drift methods", len(rows), len(spec.methods))
    return adjust(rows, spec.alpha)


def adjust(rows: list[dict], alpha: float) -> list[dict]:
    """Add ``p_value_adjusted`` (Benjamini-Hochberg over ``rows``) and decide on it."""
    from .explain import benjamini_hochberg

    have = [i for i, r in enumerate(rows) if r.get("p_value") is not None]
    adj = benjamini_hochberg(np.array([rows[i]["p_value"] for i in have]))
    for r in rows:
        r["p_value_adjusted"] = None
    for i, a in zip(have, adj):
        rows[i]["p_value_adjusted"] = float(a)
        rows[i]["drift_detected"] = bool(a < alpha)
    return rows


def _groups(spec: DriftSpec, B: Side, C: Side) -> np.ndarray | None:
    if spec.group_by is None:
        return None
    from ._base import blocks

    gb, gc = B.extra["group_by"], C.extra["group_by"]
    if gb.null_count or gc.null_count:
        side = "baseline" if gb.null_count else "current"
        raise DataError(f"group_by {spec.group_by!r} is NULL on {max(gb.null_count, gc.null_count)} "
                        f"rows of the {side} side; every row needs a group (coalesce it, or "
                        "filter those rows).")
    return blocks(np.asarray(gb.to_pylist(), dtype=object), np.asarray(gc.to_pylist(), dtype=object))


def _extras(spec: DriftSpec) -> dict[str, str]:
    return {"group_by": spec.group_by} if spec.group_by else {}


def embedding_drift(cur, baseline: str, current: str, spec: DriftSpec,
                    progress: Progress = _quiet) -> list[dict]:
    """The rows of ``embedding_drift(baseline, current, ...)``."""
    cap_b, cap_c = spec.rows_wanted()
    read = {"seed": spec.seed, "normalize": spec.normalize, "pooling": spec.pooling,
            "extras": _extras(spec)}
    progress("drift: reading the baseline")
    B = read_side(cur, baseline, spec.embedding, cap_b, role="baseline", **read)
    progress("drift: reading the current side")
    C = read_side(cur, current, spec.embedding, cap_c, role="current", **read)
    reference = None
    if "cluster" in spec.methods:
        reference = load_reference(cur, spec.reference, spec.reference_run)
        if reference is None and B.run_id is not None:
            reference = load_reference(cur, None, B.run_id)  # two runs: the baseline run's
    return compare(spec, B, C, reference, progress)


def explain_drift(cur, baseline: str, current: str, spec: DriftSpec, options: Mapping[str, Any],
                  progress: Progress = _quiet, centres: bool = False) -> list[dict]:
    """The rows of ``embedding_drift_explain``: regions and what changed in each."""
    from . import explain as _explain

    opts = validate_params("embedding_drift_explain", EXPLAIN_OPTIONS, options)
    read = {"seed": spec.seed, "normalize": spec.normalize, "pooling": spec.pooling}
    sides = []
    for role, source in (("baseline", baseline), ("current", current)):
        q = _resolve(cur, source, spec.embedding, role)
        extras = {}
        id_col = opts["id"] or ("id" if "id" in q.all_columns else None)
        if id_col:
            extras["id"] = id_col
        if opts["text"]:
            extras["text"] = opts["text"]
        progress(f"drift: reading the {role} side")
        sides.append(read_side(cur, source, spec.embedding, None, role=role, extras=extras,
                               **read))
    B, C = sides
    _check_pair(B, C)
    n = B.X.shape[0]
    X = np.concatenate([B.X, C.X])
    progress(f"drift: regions of {X.shape[0]:,} rows")
    regs = _explain.regions(X, n, n_regions=opts["n_regions"], alpha=spec.alpha, seed=spec.seed)
    ids = _side_ids(B, "baseline") + _side_ids(C, "current")
    texts = None
    if opts["text"]:
        texts = B.extra["text"].to_pylist() + C.extra["text"].to_pylist()
    _explain.describe(regs, X, n, ids, texts, opts["n_examples"], spec.seed)
    return _explain.as_rows(regs, X if centres else None, n)


def _side_ids(side: Side, role: str) -> list[str]:
    if "id" in side.extra:
        return [str(v) for v in side.extra["id"].to_pylist()]
    return [f"{role} row {i}" for i in range(side.X.shape[0])]


# -- time windows ------------------------------------------------------------------------

def _interval(cur, window: str) -> str:
    try:
        ok = cur.execute("SELECT CAST(? AS INTERVAL) > INTERVAL 0 SECOND", [window]).fetchall()
    except duckdb.Error:
        ok = [(False,)]
    if not ok[0][0]:
        raise SpecError(f"window_size must be a positive INTERVAL such as INTERVAL 7 DAY or "
                        f"'1 hour'. Got {window!r}.")
    return window


def _bucket_sql(time_col: str) -> str:
    return (f"epoch_us(CAST(time_bucket(CAST($window AS INTERVAL), "
            f"CAST({quote_ident(time_col)} AS TIMESTAMP)) AS TIMESTAMP))")


def baseline_window_start(cur, window: str, baseline: Any) -> int:
    """The start (epoch microseconds) of the ``window``-long bucket holding ``baseline``."""
    try:
        return cur.execute("SELECT epoch_us(CAST(time_bucket(CAST(? AS INTERVAL), CAST(? AS "
                           "TIMESTAMP)) AS TIMESTAMP))", [window, baseline]).fetchall()[0][0]
    except duckdb.Error:
        raise SpecError("baseline must be a time inside the baseline window, like '2026-01-05' "
                        "or TIMESTAMP '2026-01-05 12:00', or NULL for the first window. Got "
                        f"{baseline!r}.") from None


def drift_windows(cur, source: str, time_column: str, window: str, baseline: str | None,
                  spec: DriftSpec, progress: Progress = _quiet,
                  executor: Executor | None = None) -> list[dict]:
    """One row per (window, method): each window against the baseline window.

    Windows are ``time_bucket(window, time_column)``; the baseline is the first
    window, or the one containing the ``baseline`` timestamp. The baseline window
    itself is the first row, with NULL statistics. ``p_value_adjusted`` is the
    Benjamini-Hochberg adjustment over every window and method of the series and
    ``drift_detected`` decides on it. The source is read once, here;
    ``executor`` compares the windows, one task per window (default: in this
    process; see :mod:`duckcluster.core.backend`), with identical results.
    """
    _interval(cur, window)
    if not isinstance(time_column, str) or not time_column:
        raise SpecError("time_column must name a TIMESTAMP or DATE column of the source.")
    src = source_sql(cur, source)
    cols = describe(cur, src)
    require_columns(cols, [time_column], "time", source)
    if spec.embedding is None:
        raise SpecError("Name the embedding column, e.g. embedding_drift_windows('docs', "
                        "'embedding', time_column := 'created_at').")
    require_columns(cols, list(spec.embedding), "embedding", source)
    bucket = _bucket_sql(time_column)
    valid = _not_null(spec.embedding)
    where = f"{quote_ident(time_column)} IS NOT NULL"
    try:
        stats = cur.execute(
            f"SELECT w, n, n_null, epoch_us(make_timestamp(w) + CAST($window AS INTERVAL)) "
            f"FROM (SELECT {bucket} AS w, count(*) FILTER (WHERE {valid}) AS n, "
            f"count(*) FILTER (WHERE NOT ({valid})) AS n_null FROM {src} WHERE {where} "
            f"GROUP BY ALL) ORDER BY w",
            {"window": window}).fetchall()
    except duckdb.Error as exc:
        raise SpecError(f"Cannot bucket {time_column!r} by {window!r}: {exc}. time_column must "
                        "be a TIMESTAMP or DATE column.") from None
    stats = [s for s in stats if s[1] > 0]
    if not stats:
        raise DataError(f"Source {source!r} has no rows with both a {time_column!r} and an "
                        "embedding; there are no windows to compare.")
    starts = np.array([s[0] for s in stats], dtype=np.int64)
    base_idx = 0
    if baseline is not None:
        b = baseline_window_start(cur, window, baseline)
        hits = np.flatnonzero(starts == b)
        if not hits.size:
            raise DataError(f"No rows fall in the baseline window containing {baseline!r}; "
                            "pass a timestamp inside a window that has rows, or NULL for the "
                            "first window.")
        base_idx = int(hits[0])
    progress(f"drift: sampling {len(stats)} windows")
    samples = _window_samples(cur, src, spec, bucket, where, window, starts,
                              np.array([s[1] for s in stats]), base_idx)
    # many windows (and methods) at once: Benjamini-Hochberg over the whole series
    return adjust(_window_rows(cur, spec, stats, samples, base_idx, progress, executor),
                  spec.alpha)


def _window_samples(cur, src, spec, bucket, where, window, starts, counts, base_idx
                    ) -> list[np.ndarray]:
    """One streaming pass: a seeded sample of each window's rows (bigger for the baseline)."""
    cap_b, cap_c = spec.rows_wanted()
    keep = []
    for i, n in enumerate(counts):
        cap = cap_b if i == base_idx else cap_c
        small = cap is None or n <= cap
        mask = np.ones(n, dtype=bool) if small else np.zeros(n, dtype=bool)
        if not small:
            mask[np.random.default_rng([spec.seed, 2, i]).choice(n, size=cap, replace=False)] = True
        keep.append(mask)
    flat = np.concatenate(keep)  # one byte per row with an embedding: O(n) but tiny
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    cols = ", ".join(quote_ident(c) for c in spec.embedding)
    if spec.group_by:
        q = _Query(src, spec.embedding, all_columns=tuple(describe(cur, src)))
        cols += (f", CAST(({_extra_expr(cur, q, 'group_by', spec.group_by, 'source', src)}) "
                 "AS VARCHAR) AS __dc_x_group_by")
    rel = cur.sql(f"SELECT {bucket} AS __dc_w, {cols} FROM {src} WHERE {where} AND "
                  f"{_not_null(spec.embedding)}", params={"window": window})
    seen = np.zeros(len(starts), dtype=np.int64)
    parts: list[list[pa.RecordBatch]] = [[] for _ in starts]
    for batch in rel.to_arrow_reader(_BATCH_ROWS):
        w = np.asarray(batch.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        code = np.searchsorted(starts, w)
        order = np.argsort(code, kind="stable")
        sc = code[order]
        first = np.searchsorted(sc, sc, side="left")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size) - first  # position among this batch's rows of a window
        pos = seen[code] + rank
        take = flat[offsets[code] + pos]
        np.add.at(seen, code, 1)
        for c in np.unique(code[take]):
            idx = np.flatnonzero(take & (code == c))
            parts[c].append(batch.take(pa.array(idx)))
    out = []
    for i, batches in enumerate(parts):
        tbl = pa.Table.from_batches(batches) if batches else None
        X = _dense(tbl, spec.embedding, f"window {i}", spec.normalize, spec.pooling,
                   None) if tbl is not None and tbl.num_rows else \
            np.zeros((0, 0), dtype=np.float32)
        extra = {"group_by": tbl.column("__dc_x_group_by").combine_chunks()} \
            if spec.group_by and tbl is not None else {}
        out.append((X, extra))
    return out


def _ts(us: int):
    import datetime as dt

    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def _window_rows(cur, spec, stats, samples, base_idx, progress: Progress,
                 executor: Executor | None = None) -> list[dict]:
    base, base_extra = samples[base_idx]
    B = Side(label="baseline window", X=base, n_rows=int(stats[base_idx][1]),
             n_null=int(stats[base_idx][2]), extra=base_extra)
    reference = load_reference(cur, spec.reference, spec.reference_run) \
        if "cluster" in spec.methods else None
    jobs = []
    for i, (start, n_valid, n_null, end) in enumerate(stats):
        common = {"window_start": _ts(start), "window_end": _ts(end),
                  "is_baseline": i == base_idx, "n_rows": int(n_valid)}
        if i == base_idx:
            jobs.append((common, None))
            continue
        C = Side(label=f"window {_ts(start)}", X=samples[i][0], n_rows=int(n_valid),
                 n_null=int(n_null), extra=samples[i][1])
        jobs.append((common, C))
    run = executor or LocalExecutor()
    todo = [job for job in jobs if job[1] is not None]
    progress(f"drift: {len(todo)} windows against the baseline"
             + (f" on {run.name}" if run.name != "local" else ""))
    done = iter(run.map(_window_job, todo, shared=(spec, B, reference)))
    rows, n_done = [], 0
    for common, C in jobs:
        if C is not None:
            rows.extend(next(done))
            n_done += 1
            _steps.step("drift windows", n_done, len(todo))
            continue
        for m in spec.methods:
            rows.append({**common, "method": m, "statistic": None, "p_value": None,
                         "threshold": spec.alpha, "drift_detected": None,
                         "n_baseline": int(common["n_rows"]), "n_current": int(common["n_rows"]),
                         "details": {"baseline_window": True}})
    return rows


def _window_job(job: tuple[dict, Side], spec: DriftSpec, B: Side,
                reference: Reference | None) -> list[dict]:
    """The rows of one window against the baseline (a task of its own)."""
    common, C = job
    rows = []
    for m in spec.methods:
        need = get_method(m).min_rows
        if min(B.X.shape[0], C.X.shape[0]) < need:
            rows.append({**common, "method": m, "statistic": None, "p_value": None,
                         "threshold": spec.alpha, "drift_detected": None,
                         "n_baseline": B.n_rows, "n_current": C.n_rows,
                         "details": {"skipped": f"{m} needs at least {need} rows per "
                                     f"window; this window has {C.n_rows} and the "
                                     f"baseline {B.n_rows}"}})
            continue
        one = replace(spec, methods=(m,))
        rows.extend({**common, **r} for r in compare(one, B, C, reference))
    return rows
