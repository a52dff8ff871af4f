"""The streaming drift monitor: batches in, per-window reservoirs and cluster counts out.

For data that never sits in one place. Each batch (a source read in Arrow
batches, or arrays from Python) is bucketed into time windows; per window the
monitor keeps in catalog tables (``sql/catalog_drift.sql``):

- a uniform reservoir sample of at most ``reservoir_size`` embeddings
  (Algorithm R: row t of a window replaces a random slot with probability
  R / (t + 1)); the decisions depend only on how many rows the window has seen
  and a seed derived from (monitor seed, window, rows seen), so replaying the
  same batches gives the same reservoir, and the current reservoir is never read
  back to update it;
- the count of rows assigned to each cluster of a reference run (cosine, -1
  below the assignment threshold), exact over the whole stream.

A window's drift is then computed from its reservoir and counts alone, without
re-reading history. Memory is one Arrow batch (:data:`BATCH_ROWS` rows) however
long the stream; storage is bounded per window. Each ``add`` call is one
transaction: a failed batch leaves the monitor as it was.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import DataError, SpecError, UnknownNameError, closest
from .._params import Param, validate_params
from .._source import describe, quote_ident, require_columns, source_sql
from ..catalog import runs as catalog
from ..core.assign import assign, normalize_rows
from ..core.vectors import to_dense
from . import get_method, share_test
from .sides import Side, adjust, baseline_window_start, compare, load_reference
from .spec import DriftSpec

BATCH_ROWS = 8_192

OPTIONS: dict[str, Param] = {
    "window_size": Param(str, "1 day", doc="window length, an INTERVAL such as '7 days'"),
    "reservoir_size": Param(int, 1000, low=10, high=1_000_000,
                            doc="embeddings kept per window (a uniform sample)"),
    "assignment_threshold": Param(float, 0.5, low=-1.0, high=1.0,
                                  doc="below this cosine similarity a row counts as -1 (new)"),
    "seed": Param(int, 42, low=0, high=2**32 - 1, doc="seed of the reservoir decisions"),
    "reference": Param(str, None, nullable=True,
                       doc="cluster definition whose latest full run's centroids rows are "
                           "counted against"),
    "reference_run": Param(str, None, nullable=True, doc="a run id to count against instead"),
}


def _get(cur, name: str) -> dict:
    rel = cur.execute("SELECT * FROM duckcluster.drift_monitors WHERE name = ?", [name])
    cols = [d[0] for d in rel.description]
    row = rel.fetchall()
    if not row:
        names = [r[0] for r in cur.execute(
            "SELECT name FROM duckcluster.drift_monitors ORDER BY name").fetchall()]
        raise UnknownNameError(
            f"No drift monitor named {name!r}.{closest(name, names)} Existing monitors: "
            f"{', '.join(repr(n) for n in names) or 'none yet'}. Create one with SELECT "
            f"drift_monitor_create({name!r}, reference := '<cluster>').")
    return dict(zip(cols, row[0]))


def create(cur, name: str, options: Mapping[str, Any], replace: bool = False) -> str:
    """Store a monitor definition (reference centroids fixed now); returns its name."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"A drift monitor needs a non-empty name. Got {name!r}.")
    opts = validate_params("drift_monitor_create", OPTIONS, options)
    try:
        ok = cur.execute("SELECT CAST(? AS INTERVAL) > INTERVAL 0 SECOND",
                         [opts["window_size"]]).fetchall()[0][0]
    except duckdb.Error:
        ok = False
    if not ok:
        raise SpecError(f"window_size must be a positive INTERVAL such as INTERVAL 1 DAY. "
                        f"Got {opts['window_size']!r}.")
    run_id = None
    if opts["reference"] is not None or opts["reference_run"] is not None:
        ref = load_reference(cur, opts["reference"], opts["reference_run"])
        run_id = ref.source.split(" ", 1)[1]
        if opts["reference"] is None:
            opts["reference"] = catalog.get_run(cur, run_id)["name"]
    exists = cur.execute("SELECT count(*) FROM duckcluster.drift_monitors WHERE name = ?",
                         [name]).fetchall()[0][0]
    if exists and not replace:
        raise SpecError(f"A drift monitor named {name!r} already exists. Pick another name, pass "
                        f"\"replace\" := true to start it over, or SELECT drift_monitor_delete"
                        f"({name!r}) first.")
    now = catalog.now()
    cur.execute("BEGIN")
    try:
        if exists:
            _delete_rows(cur, name)
        cur.execute("INSERT INTO duckcluster.drift_monitors VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    [name, opts["reference"], run_id, opts["window_size"], opts["reservoir_size"],
                     opts["assignment_threshold"], opts["seed"], now, now])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return name


def _delete_rows(cur, name: str) -> None:
    for table in ("drift_reservoirs", "drift_counts", "drift_windows", "drift_monitors"):
        col = "name" if table == "drift_monitors" else "monitor"
        cur.execute(f"DELETE FROM duckcluster.{table} WHERE {col} = ?", [name])


def delete(cur, name: str) -> str:
    _get(cur, name)
    cur.execute("BEGIN")
    try:
        _delete_rows(cur, name)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return f"deleted drift monitor {name!r}"


# -- ingestion -------------------------------------------------------------------------

def reservoir_slots(n_seen: int, reservoir_size: int, n_new: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Algorithm R for ``n_new`` arriving rows: the slot each one takes, or -1.

    Row t (0-based over the window) fills slot t while t < R, else replaces a
    uniform slot j in [0, t] if j < R. When several rows of one batch pick the
    same slot, the last one wins, as if they had arrived one by one.
    """
    t = n_seen + np.arange(n_new, dtype=np.int64)
    slots = np.where(t < reservoir_size, t, rng.integers(0, t + 1))
    slots[slots >= reservoir_size] = -1
    # keep only the last row per slot
    rev = slots[::-1]
    _, first_rev = np.unique(rev, return_index=True)
    last = np.zeros(n_new, dtype=bool)
    last[n_new - 1 - first_rev] = True
    return np.where(last & (slots >= 0), slots, -1)


def _rng(seed: int, window_us: int, n_seen: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(window_us) % 2**63, int(n_seen)])


class _Ingest:
    """State of one ``add`` call: the monitor, its reference, and windows seen so far."""

    def __init__(self, cur, monitor: dict):
        self.cur = cur
        self.m = monitor
        self.n_seen: dict[int, int] = {}
        self.ref = load_reference(cur, None, monitor["reference_run_id"]) \
            if monitor["reference_run_id"] else None
        self.dim = monitor["dim"]

    def seen(self, w: int) -> int:
        if w not in self.n_seen:
            row = self.cur.execute(
                "SELECT n_seen FROM duckcluster.drift_windows WHERE monitor = ? AND "
                "epoch_us(window_start) = ?", [self.m["name"], w]).fetchall()
            self.n_seen[w] = int(row[0][0]) if row else 0
        return self.n_seen[w]

    def batch(self, windows: np.ndarray, X: np.ndarray, valid: np.ndarray) -> None:
        """Rows of one batch: window starts (epoch us), embeddings of the valid rows."""
        name = self.m["name"]
        if X.shape[0]:
            if self.dim is None:
                self.dim = int(X.shape[1])
                self.cur.execute("UPDATE duckcluster.drift_monitors SET dim = ? WHERE name = ?",
                                 [self.dim, name])
            elif X.shape[1] != self.dim:
                raise DataError(f"Drift monitor {name!r} holds {self.dim}-dimensional embeddings; "
                                f"this batch has {X.shape[1]}. Feed it the same embedding column.")
            if self.ref is not None and X.shape[1] != self.ref.centroids.shape[1]:
                raise DataError(f"The batch has {X.shape[1]}-dimensional embeddings but the "
                                f"reference {self.ref.source} has {self.ref.centroids.shape[1]}.")
        wv = windows[valid]
        res_w, res_slot, res_rows = [], [], []
        count_rows = []
        window_rows = []
        for w in np.unique(windows):
            rows = np.flatnonzero(wv == w)
            n_null = int(((windows == w) & ~valid).sum())
            n0 = self.seen(int(w))
            if rows.size:
                slots = reservoir_slots(n0, self.m["reservoir_size"], rows.size,
                                        _rng(self.m["seed"], int(w), n0))
                took = slots >= 0
                res_w.append(np.full(int(took.sum()), w, dtype=np.int64))
                res_slot.append(slots[took])
                res_rows.append(rows[took])
                if self.ref is not None:
                    idx, _ = assign(normalize_rows(X[rows]), self.ref.centroids,
                                    self.m["assignment_threshold"])
                    ids = np.where(idx >= 0, self.ref.cluster_ids[np.maximum(idx, 0)], -1)
                    cid, n = np.unique(ids, return_counts=True)
                    count_rows += [(int(w), int(c), int(k)) for c, k in zip(cid, n)]
            self.n_seen[int(w)] = n0 + int(rows.size)
            window_rows.append((int(w), int(rows.size), n_null))
        self._write(window_rows, count_rows, res_w, res_slot, res_rows, X)

    def _write(self, window_rows, count_rows, res_w, res_slot, res_rows, X) -> None:
        cur, name, now = self.cur, self.m["name"], catalog.now()
        for w, n, n_null in window_rows:
            cur.execute(
                "INSERT INTO duckcluster.drift_windows VALUES (?, make_timestamp(?), ?, ?, ?) "
                "ON CONFLICT (monitor, window_start) DO UPDATE SET n_seen = n_seen + "
                "EXCLUDED.n_seen, n_null = n_null + EXCLUDED.n_null, updated_at = EXCLUDED.updated_at",
                [name, w, n, n_null, now])
        if count_rows:
            ws, cs, ns = zip(*count_rows)
            cur.execute(
                "INSERT INTO duckcluster.drift_counts SELECT ?, make_timestamp(w), c, n FROM "
                "(SELECT unnest(?::BIGINT[]) AS w, unnest(?::INTEGER[]) AS c, unnest(?::BIGINT[]) "
                "AS n) ON CONFLICT (monitor, window_start, cluster_id) DO UPDATE SET n = n + "
                "EXCLUDED.n", [name, list(ws), list(cs), list(ns)])
        if res_w and sum(a.size for a in res_w):
            w = np.concatenate(res_w)
            slot = np.concatenate(res_slot)
            rows = np.concatenate(res_rows)
            cur.execute("DELETE FROM duckcluster.drift_reservoirs AS r USING (SELECT "
                        "unnest(?::BIGINT[]) AS w, unnest(?::INTEGER[]) AS s) AS d WHERE "
                        "r.monitor = ? AND epoch_us(r.window_start) = d.w AND r.slot = d.s",
                        [w.tolist(), slot.tolist(), name])
            Xr = np.ascontiguousarray(X[rows], dtype=np.float32)
            emb = pa.ListArray.from_arrays(
                pa.array(np.arange(0, Xr.size + 1, Xr.shape[1], dtype=np.int32)),
                pa.array(Xr.ravel()))
            tbl = pa.table({"w": pa.array(w), "slot": pa.array(slot.astype(np.int32)),
                            "embedding": emb})
            view = "__dc_drift_reservoir_batch"
            cur.register(view, tbl)
            try:
                cur.execute(f"INSERT INTO duckcluster.drift_reservoirs SELECT ?, make_timestamp(w), "
                            f"slot, embedding FROM {view}", [name])
            finally:
                cur.unregister(view)
        cur.execute("UPDATE duckcluster.drift_monitors SET updated_at = ? WHERE name = ?",
                    [now, name])


def add(cur, name: str, source: str, embedding: str, time_column: str | None = None) -> dict:
    """Feed the rows of a source (table, view, Parquet, query) to a monitor.

    Windows come from ``time_column`` (``time_bucket(window_size, time_column)``),
    or from the current time when it is NULL. Returns what happened to the rows
    (:data:`ADD_RESULT`): every row read, the rows added to a window, and the rows
    skipped for a NULL embedding (also counted per window, ``n_null``) or a NULL time
    (they belong to no window).
    """
    reader = cur.cursor()  # the stream stays open while ``cur`` writes
    try:
        return _add(cur, reader, name, source, embedding, time_column)
    finally:
        reader.close()


def _add(cur, reader_cur, name: str, source: str, embedding: str,
         time_column: str | None) -> int:
    m = _get(cur, name)
    if not isinstance(embedding, str) or not embedding:
        raise SpecError(f"drift_monitor_add needs the embedding column name. Got {embedding!r}.")
    src = source_sql(reader_cur, source)
    cols = describe(reader_cur, src)
    require_columns(cols, [embedding], "embedding", source)
    if time_column is not None:
        require_columns(cols, [time_column], "time", source)
        bucket = (f"epoch_us(CAST(time_bucket(CAST($window AS INTERVAL), CAST("
                  f"{quote_ident(time_column)} AS TIMESTAMP)) AS TIMESTAMP))")
    else:
        bucket = ("epoch_us(CAST(time_bucket(CAST($window AS INTERVAL), "
                  "CAST(current_timestamp AT TIME ZONE 'UTC' AS TIMESTAMP)) AS TIMESTAMP))")
    rel = reader_cur.sql(f"SELECT {bucket} AS __dc_w, {quote_ident(embedding)} AS __dc_e "
                         f"FROM {src}", params={"window": m["window_size"]})
    out = dict.fromkeys(ADD_RESULT, 0)
    cur.execute("BEGIN")
    try:
        ing = _Ingest(cur, m)
        for batch in rel.to_arrow_reader(BATCH_ROWS):
            first = out["rows_read"]
            out["rows_read"] += batch.num_rows
            if batch.column(0).null_count:  # a NULL time: no window; counted, not added
                out["skipped_null_time"] += batch.column(0).null_count
                batch = batch.filter(batch.column(0).is_valid())
            windows = np.asarray(batch.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
            v = to_dense(batch.column(1),
                         [f"batch row {first + i}" for i in range(batch.num_rows)], embedding)
            ing.batch(windows, v.X, v.valid)
            out["skipped_null_embedding"] += int((~v.valid).sum())
            out["rows_added"] += int(v.valid.sum())
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return out


#: What :func:`add` returns (the STRUCT fields of ``drift_monitor_add``).
ADD_RESULT = ("rows_read", "rows_added", "skipped_null_embedding", "skipped_null_time")


# -- drift per window --------------------------------------------------------------------

def windows(cur, name: str, spec: DriftSpec, baseline: str | None = None) -> list[dict]:
    """One row per (window, method): the window's reservoir and counts against the baseline's."""
    m = _get(cur, name)
    wins = cur.execute(
        "SELECT epoch_us(window_start), epoch_us(window_start + CAST(? AS INTERVAL)), n_seen, "
        "n_null FROM duckcluster.drift_windows WHERE monitor = ? ORDER BY window_start",
        [m["window_size"], name]).fetchall()
    if not wins:
        raise DataError(f"Drift monitor {name!r} has no data yet; feed it with SELECT "
                        f"drift_monitor_add({name!r}, '<source>', 'embedding').")
    starts = [w[0] for w in wins]
    base_idx = 0
    if baseline is not None:
        b = baseline_window_start(cur, m["window_size"], baseline)
        if b not in starts:
            raise DataError(f"Drift monitor {name!r} has no window containing {baseline!r}; "
                            "pass a time inside a window it has seen, or NULL for the first.")
        base_idx = starts.index(b)
    counts = _counts(cur, name)
    base_X = _reservoir(cur, name, starts[base_idx], spec.normalize)
    B = Side("baseline window", base_X, int(wins[base_idx][2]), int(wins[base_idx][3]))
    rows = []
    for i, (start, end, n_seen, n_null) in enumerate(wins):
        cl = _cluster_columns(counts, starts[base_idx], start, spec.seed, m)
        common = {"window_start": _ts(start), "window_end": _ts(end), "is_baseline": i == base_idx,
                  "n_seen": int(n_seen), **cl}
        X = base_X if i == base_idx else _reservoir(cur, name, start, spec.normalize)
        common["n_reservoir"] = int(X.shape[0])
        C = Side(f"window {_ts(start)}", X, int(n_seen), int(n_null))
        for meth in spec.methods:
            if i == base_idx or min(B.X.shape[0], C.X.shape[0]) < get_method(meth).min_rows:
                note = {"baseline_window": True} if i == base_idx else \
                    {"skipped": f"{meth} needs at least {get_method(meth).min_rows} rows per "
                                f"reservoir; this window has {C.X.shape[0]}"}
                rows.append({**common, "method": meth, "statistic": None, "p_value": None,
                             "threshold": spec.alpha, "drift_detected": None, "details": note})
                continue
            one = DriftSpec(methods=(meth,), params={meth: spec.params[meth]}, alpha=spec.alpha,
                            seed=spec.seed, normalize=spec.normalize)
            for r in compare(one, B, C, None):
                r.pop("n_baseline")
                r.pop("n_current")
                rows.append({**common, **r})
    return adjust(rows, spec.alpha)  # Benjamini-Hochberg over every window and method


def _ts(us: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=int(us))


def _reservoir(cur, name: str, w: int, normalize: bool) -> np.ndarray:
    tbl = cur.sql("SELECT embedding FROM duckcluster.drift_reservoirs WHERE monitor = ? AND "
                  "epoch_us(window_start) = ? ORDER BY slot", params=[name, w]).to_arrow_table()
    if tbl.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    v = to_dense(tbl.column(0), [f"slot {i}" for i in range(tbl.num_rows)], "embedding")
    return normalize_rows(v.X) if normalize else v.X


def _counts(cur, name: str) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for w, c, n in cur.execute("SELECT epoch_us(window_start), cluster_id, n FROM "
                               "duckcluster.drift_counts WHERE monitor = ?", [name]).fetchall():
        out.setdefault(int(w), {})[int(c)] = int(n)
    return out


def _cluster_columns(counts, base_w: int, w: int, seed: int, m: dict) -> dict:
    """Exact share test of a window's cluster counts against the baseline window's."""
    empty = {"cluster_js_divergence": None, "cluster_p_value": None, "new_content_share": None}
    if m["reference_run_id"] is None or w not in counts:
        return empty
    cur_c = counts[w]
    total = sum(cur_c.values())
    out = {**empty, "new_content_share": cur_c.get(-1, 0) / total if total else None}
    if w == base_w or base_w not in counts:
        return out
    cats = sorted(set(counts[base_w]) | set(cur_c))
    t = share_test(np.array([counts[base_w].get(c, 0) for c in cats]),
                   np.array([cur_c.get(c, 0) for c in cats]), 2000,
                   np.random.default_rng([seed, 3, w % 2**63]))
    out.update(cluster_js_divergence=t.js_divergence, cluster_p_value=t.p_value)
    return out
