"""The core SQL functions: create, execute, delete, the one-shot fit and assignment.

DuckDB 2.0 Python UDFs are scalar and positional-only, so every public function
is a TEMP macro (named ``:=`` arguments with defaults) over a private ``_dc_*``
UDF. The read side comes from ``sql/duckcluster.sql`` unchanged; Python then
replaces ``assign_cluster`` with a vectorized Arrow UDF under the same name.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._errors import DataError, DuckclusterError, SpecError
from .._source import quote_ident, source_sql_unchecked
from ..catalog import runs as catalog
from ..core.assign import assign_raw, check_threshold, check_vectors
from ..core.fit import fit
from ..core.spec import OPTIONS as SPEC_OPTIONS
from ..core.spec import ClusterSpec, check_rows
from ..core.threads import machine_sized
from ..core.vectors import combine_columns, to_dense
from ..engine import execute as _execute
from ..labels.config import LabelConfig
from ._declare import Function, P, decode_options, macros_sql, options, register
from ._registry import _report, _State, _wrap

_ASSIGN_CACHE_SECONDS = 1.0
# -- UDF bodies ----------------------------------------------------------------------

def _create(state: _State, args_json: str, replace: bool) -> str:
    args = decode_options(args_json)
    with state.cursor() as cur:
        spec = _execute.create(cur, args, replace=bool(replace),
                               check_labeling=LabelConfig.from_dict)
    return spec.name


def _execute_udf(state: _State, name: str, mode: str | None, threshold: float | None) -> str:
    if name is None:
        raise SpecError("cluster_execute needs a definition name; got NULL.")
    with state.cursor() as cur:
        if (mode or "full") == "full":  # not while a background full run of it goes on
            from ..ops.background import refuse_second_full_run

            refuse_second_full_run(cur, name)
        run_id = _execute.execute(cur, name, state.settings, mode=mode or "full",
                                  threshold=threshold, progress=_report)
        if (mode or "full") == "full":
            _auto_label(cur, name, run_id)
    state.generation += 1
    return run_id


def _auto_label(cur, name: str, run_id: str) -> None:
    """Label the clusters of a full run that carried no label from the previous run,
    when the definition is labeled (``labeling`` settings, the seed's ``llm_labeling``,
    or labels on an earlier run); see :func:`duckcluster.labels.labeling.label_after_run`."""
    from ..labels import labeling as _labeling

    _labeling.label_after_run(cur, name, run_id, progress=_report)


def _delete(state: _State, name: str, drop_artifacts: bool) -> str:
    with state.cursor() as cur:
        n = catalog.delete_definition(cur, name, bool(drop_artifacts), state.settings)
    state.cache.pop(name, None)
    return (f"deleted {name!r}" + (f" and the artifacts of {n} run(s)" if drop_artifacts
                                   else "; runs and artifacts kept"))


def _oneshot_sql(source: str, embedding_json: str, id_col: str | None,
                 partition_by: str | None = None) -> str:
    """SQL for the rows of cluster_embeddings: row number, all columns, packed embeddings,
    the partition (``partition_by``'s value, NULL without one) and the row's position in
    it (each partition is one clustering)."""
    embedding = json.loads(embedding_json) if embedding_json else None
    cols = (embedding,) if isinstance(embedding, str) else embedding
    if not cols or not all(isinstance(c, str) and c for c in cols):
        raise SpecError("cluster_embeddings: 'embedding' must name an embedding column or a "
                        f"list of columns. Got {embedding!r}.")
    src = source_sql_unchecked(source)
    # the columns are selected first, so a misspelled one is "not found" (as an argument of
    # the overloaded _dc_vector it would be a string); _dc_vector packs any embedding form
    picked = ", ".join(f"{quote_ident(c)} AS __dc_e{j}" for j, c in enumerate(cols))
    packed = ", ".join(f"_dc_vector(__dc_e{j})" for j in range(len(cols)))
    temps = ", ".join(f"__dc_e{j}" for j in range(len(cols)))
    ident = "__dc_rn" if not id_col else quote_ident(id_col)
    if partition_by is not None and not (isinstance(partition_by, str) and partition_by):
        raise SpecError("cluster_embeddings: partition_by must name a column of the source. "
                        f"Got {partition_by!r}.")
    part = "NULL" if partition_by is None else quote_ident(partition_by)
    # one partition: the position in it is the row number (no second window, whose sort
    # carried every column of every row)
    pos = "__dc_rn" if partition_by is None else \
        f"row_number() OVER (PARTITION BY {part} ORDER BY __dc_rn)"
    return (f"SELECT * EXCLUDE ({temps}), [{packed}] AS __dc_emb, "
            f"CAST({ident} AS VARCHAR) AS __dc_id, {part} AS __dc_part, "
            f"{pos} AS __dc_pos "
            f"FROM (SELECT row_number() OVER () AS __dc_rn, *, {picked} FROM {src}) "
            "AS __dc_numbered")


#: The STRUCT every embedding value becomes in the one-shot (_dc_vector): its kind, a dense
#: vector as it is (``dense``: not wrapped in a list of one, which cost a third of packing
#: 100k x 384 rows, 1.6-2.5 s of CPU against 1.1-1.4 s), the vectors of the other kinds
#: (``parts``: one for a sparse value, several for a multi-vector one) and, for a sparse
#: value, the indices of its weights.
VECTOR_TYPE = "STRUCT(kind VARCHAR, dense FLOAT[], parts FLOAT[][], indices INTEGER[])"


def _column_of(rows: pa.Array, j: int, ids: np.ndarray, name: str, pooling: str):
    """Column ``j`` of the packed rows (lists of _dc_vector STRUCTs) as dense vectors,
    converted as a definition's reader converts the original column."""
    col = _only_element(rows) if j == 0 else None
    col = pc.list_element(rows, j) if col is None else col
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    kind, dense, parts, indices = col.flatten()  # (flatten, not field(): applies the offset)
    kinds = set(pc.unique(kind.filter(pa.array(valid))).to_pylist())
    mask = pa.array(~valid)
    if not kinds or kinds == {"dense"}:
        arr = dense  # NULL where the row's value is (flatten carries the struct's validity)
    elif kinds == {"multi"}:
        arr = pa.ListArray.from_arrays(parts.offsets, parts.values, mask=mask)
    elif kinds == {"sparse"}:
        vals = pc.list_element(parts, 0).to_pylist()
        idx = indices.to_pylist()
        arr = pa.array([list(zip(i or [], v or [])) if ok else None
                        for i, v, ok in zip(idx, vals, valid)],
                       type=pa.map_(pa.int32(), pa.float32()))
    else:  # a UNION or a query whose rows differ in kind cannot happen per column
        raise DataError(f"cluster_embeddings: column {name!r} mixes embedding kinds {kinds}.")
    return to_dense(arr, ids, name, pooling)


def _only_element(lists: pa.Array) -> pa.Array | None:
    """The elements of a list array whose every entry holds exactly one (no copy), or
    None: the common one-shot case, a single embedding column (``pc.list_element`` copies
    every packed vector)."""
    if lists.null_count or not len(lists):
        return None
    off = lists.offsets.to_numpy(zero_copy_only=False)
    if off[-1] - off[0] != len(lists) or not (np.diff(off) == 1).all():
        return None
    return lists.flatten()


@machine_sized  # BLAS threads from the cores other processes leave free, as cluster_execute
def _fit_lists(embs: pa.ChunkedArray, ids: pa.ChunkedArray, spec_json: pa.ChunkedArray):
    """Arrow UDF: one call per aggregate group; returns labels + similarities per row.

    The result is built from the fitted arrays as Arrow lists (NULL where a row had no
    embedding, or no similarity), not from Python lists of every row."""
    labels, sims, offsets = [], [], [0]
    for i in range(len(embs)):
        rows = embs[i].values  # one entry per source row: a list of column vectors
        spec_d = json.loads(spec_json[i].as_py())
        lab, sim = _fit_one(rows, ids[i].values, spec_d)
        labels.append(lab)
        sims.append(sim)
        offsets.append(offsets[-1] + len(lab))
    off = pa.array(offsets, type=pa.int32())
    lab = pa.concat_arrays(labels) if labels else pa.array([], type=pa.int32())
    sim = pa.concat_arrays(sims) if sims else pa.array([], type=pa.float32())
    return pa.StructArray.from_arrays([pa.ListArray.from_arrays(off, lab),
                                       pa.ListArray.from_arrays(off, sim)],
                                      names=["cluster_id", "similarity"])


def _fit_one(rows: pa.Array, ids_arr: pa.Array, spec_d: dict) -> tuple[pa.Array, pa.Array]:
    column, value = spec_d.pop("partition_by", None), spec_d.pop("partition", None)
    try:
        return _fit_rows(rows, ids_arr, spec_d)
    except DuckclusterError as exc:
        if column is None:
            raise
        raise type(exc)(f"partition {column} = {value!r}: {exc}") from None


def _fit_rows(rows: pa.Array, ids_arr: pa.Array, spec_d: dict) -> tuple[pa.Array, pa.Array]:
    emb = spec_d.pop("embedding")
    cols = [emb] if isinstance(emb, str) else list(emb)
    spec = ClusterSpec.from_dict({"name": "cluster_embeddings", "source": "(query)",
                                  "embedding": cols, **spec_d})
    ids = np.asarray(ids_arr.to_pylist(), dtype=object)
    n = len(ids)
    valid = np.asarray(rows.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    parts = []
    for j, c in enumerate(cols):
        v = _column_of(rows, j, ids, c, spec.pooling)
        valid &= v.valid
        parts.append((v, c))
    if not valid.any():
        raise DataError("cluster_embeddings: the source is empty or every embedding is NULL; "
                        "there is nothing to cluster.")
    X = combine_columns(parts, valid, ids)
    check_rows(spec, X.shape[0])
    r = fit(X, spec, progress=lambda s: _report(f"cluster_embeddings: {s}"), with_coords=False)
    labels = np.zeros(n, dtype=np.int32)
    sims = np.full(n, np.nan, dtype=np.float32)
    labels[valid] = r.labels
    sims[valid] = r.similarity
    return (pa.array(labels, type=pa.int32(), mask=~valid),
            pa.array(sims, type=pa.float32(), mask=np.isnan(sims)))


class _SingleThreadBLAS:
    """Pin BLAS to one thread while any assign UDF batch runs.

    DuckDB already runs the UDF on several threads; BLAS threads on top of them
    oversubscribe the cores (measured 1.5-2x slower). A counter keeps the pin
    while batches overlap and restores the user's setting after the last one.
    The pin talks to the BLAS libraries of the process's cached controller
    directly (a get and a set per library): threadpoolctl's ``limit`` gathers every
    library's full info at each call, ~0.1 ms per 2,048-row batch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._restore: list[tuple[Any, int]] = []

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                from ..core.threads import controller, set_threads

                pools = [lc for lc in controller().lib_controllers if lc.user_api == "blas"]
                self._restore = [(lc, lc.get_num_threads()) for lc in pools]
                for lc, n in self._restore:
                    if n is not None and n > 1:
                        set_threads(lc, 1)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                from ..core.threads import set_threads

                for lc, n in self._restore:
                    if n is not None and n > 1:
                        set_threads(lc, n)
                self._restore = []


_BLAS_PIN = _SingleThreadBLAS()


def _fast_matrix(emb: pa.Array) -> np.ndarray | None:
    """Zero-copy (n, d) float32 view of a NULL-free list column of equal lengths, or None."""
    if emb.null_count or not (pa.types.is_list(emb.type) or pa.types.is_fixed_size_list(emb.type)):
        return None
    if not pa.types.is_float32(emb.type.value_type):
        return None
    n = len(emb)
    if pa.types.is_fixed_size_list(emb.type):
        # .values and a slice: flatten() goes through a compute kernel (~0.1 ms per call);
        # .values alone ignores the array's own offset, hence the slice
        d = emb.type.list_size
        flat = emb.values.slice(emb.offset * d, n * d)
    else:
        flat = emb.flatten()
    if flat.null_count or n == 0 or len(flat) % n:
        return None
    d = len(flat) // n
    if pa.types.is_list(emb.type):
        offsets = emb.offsets.to_numpy()
        if not (np.diff(offsets) == d).all():
            return None
    return flat.to_numpy(zero_copy_only=False).reshape(n, d)


def _one_chunk(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The array itself: ``combine_chunks`` copies even a single chunk (0.7 ms per
    2,048 x 384 batch, ~10% of the UDF)."""
    if not isinstance(a, pa.ChunkedArray):
        return a
    return a.chunk(0) if a.num_chunks == 1 else a.combine_chunks()


def _refuse_nonfinite(emb: pa.Array) -> None:
    """NaN/Inf in a list column that is not a plain matrix (NULL rows, odd lengths):
    the same error as assign_raw's, showing the row's values."""
    from ..core.assign import _bad_vector_message

    if not (pa.types.is_list(emb.type) or pa.types.is_fixed_size_list(emb.type)):
        return
    vals = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), dtype=np.float32)
    bad = ~np.isfinite(vals)
    if bad.any():
        row = int(pc.list_parent_indices(emb).to_numpy()[int(np.argmax(bad))])
        v = np.asarray(emb[row].values.to_numpy(zero_copy_only=False), dtype=np.float32)
        raise DataError(_bad_vector_message(v, "assign_cluster"))


def _thresholds(threshold: pa.Array, n: int) -> np.ndarray | None:
    """The batch's thresholds: None when not given (each run's own threshold), else
    float32 (n,) with NaN for NULL rows (which take the run's own threshold too)."""
    if threshold.null_count == n:
        return None
    if threshold.null_count:
        check_threshold(pc.drop_null(threshold).to_numpy(zero_copy_only=False))
        return np.asarray(pc.fill_null(threshold, np.nan).to_numpy(zero_copy_only=False),
                          dtype=np.float32)
    thr = np.asarray(threshold.to_numpy(zero_copy_only=False), dtype=np.float32)
    check_threshold(thr)
    return thr


_NAME_COLUMNS: dict[tuple[str, int, Any], pa.Array] = {}


def _same_name(name: pa.Array, first: str) -> bool:
    """Every row of ``name`` is ``first``: one memory comparison with a cached column of
    ``first`` (2.6 us per 2,048 rows, against 31 us for ``pc.equal`` + ``pc.all``)."""
    key = (first, len(name), name.type)
    ref = _NAME_COLUMNS.get(key)
    if ref is None:
        if len(_NAME_COLUMNS) > 64:
            _NAME_COLUMNS.clear()
        ref = _NAME_COLUMNS[key] = pa.array([first] * len(name), type=name.type)
    return name.equals(ref) or pc.all(pc.equal(name, first)).as_py()


def _assign_plain(state: _State, emb: pa.Array, name: pa.Array, thr: np.ndarray | None,
                  some_null: bool, detail: bool):
    """The common batch, with nothing per row to sort out: one cluster name, no NULL
    embedding, a plain float32 matrix, a run with clusters of the right width and no
    partition_by. Returns the UDF's result, or None for any other batch (the general
    path then handles it, errors included).

    Per 2,048-row call this is one sgemm into a per-thread block of the name's cached
    :class:`~duckcluster.core.assign.Nearest` plus an argmax and a gather; the
    general path's masks, groups and scatter cost about a third of the matmul."""
    n = len(emb)
    if not n or emb.null_count or name.null_count:
        return None
    nm = name[0].as_py()
    if n > 1 and not _same_name(name, nm):
        return None
    X = _fast_matrix(emb)
    if X is None:
        return None
    run_id, ids_arr, C, own = state.reference(nm)
    if not len(ids_arr) or X.shape[1] != C.shape[1] or \
            state.partitioning(nm, run_id)[0] is not None:
        return None
    near, ids32 = state.nearest(nm, C, ids_arr)
    with _BLAS_PIN:
        idx, best = near.raw(X)
    if thr is None:
        t = np.float32(own)
    else:
        t = np.where(np.isnan(thr), np.float32(own), thr) if some_null else thr
    cid = ids32[idx]
    cid[~(best >= t)] = -1
    if detail:
        return pa.StructArray.from_arrays([pa.array(cid), pa.array(best)],
                                          names=["cluster_id", "similarity"])
    return pa.array(cid)


def _assign_batch(state: _State, emb: pa.ChunkedArray, name: pa.ChunkedArray,
                  threshold: pa.ChunkedArray, detail: bool,
                  part: pa.ChunkedArray | None = None):
    """One vector of rows (about 2048): nearest stored centroid by cosine. ``part``: the
    rows' partitions (``assign_cluster(..., partition := col)``): each row goes to the
    nearest cluster of its own partition, -1 when the run has none of that partition."""
    emb, name, threshold = _one_chunk(emb), _one_chunk(name), _one_chunk(threshold)
    n = len(emb)
    thr = _thresholds(threshold, n)
    if part is None:
        done = _assign_plain(state, emb, name, thr, threshold.null_count > 0, detail)
        if done is not None:
            return done
    out_ids = np.full(n, -1, dtype=np.int32)
    out_sim = np.full(n, np.nan, dtype=np.float32)
    null_mask = np.asarray(emb.is_null().to_numpy(zero_copy_only=False), dtype=bool) \
        if emb.null_count else np.zeros(n, dtype=bool)
    if name.null_count:
        null_mask |= np.asarray(name.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    no_centroids = np.zeros(n, dtype=bool)
    first = name[0].as_py() if n else None
    single = n > 0 and name.null_count == 0 and pc.all(pc.equal(name, first)).as_py()
    groups = [(first, None)] if single else [
        (nm, np.flatnonzero(np.asarray(pc.equal(name, nm).to_numpy(zero_copy_only=False),
                                       dtype=bool) & ~null_mask))
        for nm in pc.unique(name.drop_null()).to_pylist()]
    if part is not None:
        groups = _partition_groups(groups, _one_chunk(part), n, null_mask)
    for nm, rows in groups:
        if part is not None:
            (nm, value) = nm
            run_id, ids_arr, C = state.partition_centroids(nm, value)
            own = state.reference(nm)[3]
        else:
            run_id, ids_arr, C, own = state.reference(nm)
            by = state.partitioning(nm, run_id)[0]  # cached per run: a dict lookup
            if by is not None:
                raise SpecError(f"assign_cluster: cluster {nm!r} is partitioned by {by!r}; "
                                "pass each row's partition, e.g. assign_cluster(embedding, "
                                f"{nm!r}, partition := {by}).")
        sub = emb if rows is None else emb.take(pa.array(rows, type=pa.int64()))
        X = _fast_matrix(sub)
        if X is None:
            pos = np.arange(n) if rows is None else rows
            keep = ~null_mask[pos]
            _refuse_nonfinite(sub)  # named as assign_cluster names them, not by batch position
            v = to_dense(sub, [f"#{i}" for i in pos], "embedding")
            X, rows = v.X, pos[keep]
        if len(ids_arr) == 0:  # no clusters: -1, similarity NULL (but no NaN vectors)
            check_vectors(X)
            no_centroids[rows if rows is not None else slice(None)] = True
            continue
        if X.shape[0] == 0:
            continue
        if X.shape[1] != C.shape[1]:
            raise DataError(f"assign_cluster: the embedding has {X.shape[1]} dimensions but "
                            f"cluster {nm!r} (run {run_id}) has {C.shape[1]}. Use the same "
                            "embedding model as the definition's source.")
        with _BLAS_PIN:
            idx, best = assign_raw(X, C)
        if thr is None:
            t = np.float32(own)
        else:
            t = thr if rows is None else thr[rows]
            if threshold.null_count:
                t = np.where(np.isnan(t), np.float32(own), t)
        cid = np.where(best >= t, ids_arr[idx], -1).astype(np.int32)
        if rows is None:
            out_ids, out_sim = cid, best
        else:
            out_ids[rows], out_sim[rows] = cid, best
    if detail:
        return pa.StructArray.from_arrays(
            [pa.array(out_ids, mask=null_mask),
             pa.array(out_sim, mask=null_mask | no_centroids)],
            names=["cluster_id", "similarity"],
            mask=pa.array(null_mask) if null_mask.any() else None)
    return pa.array(out_ids, mask=null_mask if null_mask.any() else None)


def _partition_groups(groups, part: pa.Array, n: int, null_mask: np.ndarray):
    """The (name, rows) groups split by partition: ((name, value), rows), NULL a value."""
    text = pc.cast(part, pa.string()) if not pa.types.is_string(part.type) else part
    pnull = np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    out = []
    for nm, rows in groups:
        rows = np.flatnonzero(~null_mask) if rows is None else rows
        sub = text.take(pa.array(rows, type=pa.int64()))
        for value in pc.unique(sub.drop_null()).to_pylist():
            hit = np.asarray(pc.equal(sub, value).fill_null(False).to_numpy(
                zero_copy_only=False), dtype=bool)
            out.append(((nm, value), rows[hit]))
        if pnull[rows].any():
            out.append(((nm, None), rows[pnull[rows]]))
    return out


# -- registration --------------------------------------------------------------------

#: Embedding widths with their own assign UDFs typed FLOAT[d]. The macros pick one
#: with ``typeof`` (folded when the query is bound), so a FLOAT[d] column reaches
#: Python as a zero-copy fixed-size list. The generic FLOAT[] UDF needs DuckDB's
#: array-to-list cast first, which cost more than the UDF body (1M x 384 rows: an
#: empty UDF took 1.24 s behind the cast, 0.47 s without it (busy machine)). Other widths take
#: the generic path.
_ASSIGN_DIMS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)



def _assign_macro(macro: str, udf: str, doc: str) -> str:
    """``macro`` over ``udf``: the FLOAT[d] UDF for the widths in :data:`_ASSIGN_DIMS`;
    ``doc`` is its row in the generated reference."""
    args = "cluster_name, CAST(threshold AS FLOAT)"
    branches = "".join(
        f"\n        WHEN typeof(embedding) IN ('FLOAT[{d}]', 'DOUBLE[{d}]') "
        f"THEN {udf}_f{d}(CAST(embedding AS FLOAT[{d}]), {args})"
        for d in _ASSIGN_DIMS)
    part_args = "cluster_name, CAST(partition AS VARCHAR), CAST(threshold AS FLOAT)"
    part_branches = "".join(
        f"\n            WHEN typeof(embedding) IN ('FLOAT[{d}]', 'DOUBLE[{d}]') "
        f"THEN {udf}_part_f{d}(CAST(embedding AS FLOAT[{d}]), {part_args})"
        for d in _ASSIGN_DIMS)
    # partition := the row's partition (partition_by definitions): the default is a STRUCT
    # no partition value has, so typeof tells "not given" from a NULL partition when the
    # query is bound (the unpartitioned path costs nothing more)
    return (f"\n-- {doc}\nCREATE OR REPLACE TEMP MACRO {macro}(embedding, cluster_name, "
            f"threshold := NULL, partition := {NO_PARTITION}) AS\n"
            f"    CASE WHEN typeof(partition) <> {NO_PARTITION_TYPE!r}\n"
            f"        THEN CASE{part_branches}\n"
            f"            ELSE {udf}_part(CAST(embedding AS FLOAT[]), {part_args}) END"
            f"{branches}\n        ELSE {udf}(CAST(embedding AS FLOAT[]), {args}) END;\n")


#: assign_cluster's ``partition`` default: not given (a NULL partition is a value).
NO_PARTITION = "{'unpartitioned': true}"
NO_PARTITION_TYPE = "STRUCT(unpartitioned BOOLEAN)"


def _create_body(state: _State):
    return lambda args_json, replace: _create(state, args_json, replace)


def _execute_body(state: _State):
    return lambda name, mode, threshold: _execute_udf(state, name, mode, threshold)


def _delete_body(state: _State):
    return lambda name, drop_artifacts: _delete(state, name, drop_artifacts)


#: The regular functions of this area (see :mod:`._declare`). cluster_create's JSON keys
#: are the keys ClusterSpec.from_dict accepts; NULL means "not given" (its defaults apply).
FUNCTIONS = (
    Function("cluster_create", "_dc_create", "VARCHAR", _create_body,
             (*options(("name", "source", "embedding"), name=P("name")),
              P("algorithm", "'auto'"),
              *options(("params", "preprocessing", "id", "sample_size", "hierarchical",
                        "max_hierarchy_depth", "dimensions", "seed", "assignment_threshold",
                        "pooling", "labeling", "backend", "stable_ids", "lineage", "noise",
                        "noise_threshold", "partition_by")),
              P("replace", "false", to="arg", sql_type="BOOLEAN")),
             checks=SPEC_OPTIONS,
             doc="store a validated cluster definition (source, embedding column(s), algorithm, "
                 "preprocessing, options); nothing is fitted until cluster_execute; returns its "
                 "name"),
    Function("cluster_execute", "_dc_execute", "VARCHAR", _execute_body,
             (P("name", to="arg"), P("mode", "'full'", to="arg"),
              P("assignment_threshold", "NULL", to="arg", sql_type="DOUBLE", cast=True)),
             doc="run a definition: mode 'full' fits and assigns every row, 'assign' assigns to "
                 "the latest full run's centroids; returns the run id"),
    Function("cluster_delete", "_dc_delete", "VARCHAR", _delete_body,
             (P("name", to="arg"), P("drop_artifacts", "false", to="arg", sql_type="BOOLEAN")),
             doc="remove a definition and its catalog rows; drop_artifacts := true also deletes "
                 "the runs' Parquet files"),
)

_PY_MACROS = macros_sql(FUNCTIONS) + r"""
-- cluster a query's embeddings in one statement, nothing stored: every source row with
-- cluster_id (-1 noise) and cosine_similarity_to_centroid
-- (each embedding value as a STRUCT(kind, parts, indices): the overload DuckDB picks by
-- the column's type, so dense arrays and lists, multi-vector lists, MAP and STRUCT sparse
-- vectors all reach the fit in one shape)
CREATE OR REPLACE TEMP MACRO _dc_vector(x FLOAT[]) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'dense', 'dense': x, 'parts': NULL::FLOAT[][],
              'indices': NULL::INTEGER[]} END,
    (x DOUBLE[]) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'dense', 'dense': CAST(x AS FLOAT[]), 'parts': NULL::FLOAT[][],
              'indices': NULL::INTEGER[]} END,
    (x FLOAT[][]) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'multi', 'dense': NULL::FLOAT[], 'parts': x,
              'indices': NULL::INTEGER[]} END,
    (x DOUBLE[][]) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'multi', 'dense': NULL::FLOAT[], 'parts': CAST(x AS FLOAT[][]),
              'indices': NULL::INTEGER[]} END,
    (x MAP(INTEGER, FLOAT)) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'sparse', 'dense': NULL::FLOAT[], 'parts': [map_values(x)],
              'indices': map_keys(x)} END,
    (x STRUCT(indices INTEGER[], "values" FLOAT[])) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'sparse', 'dense': NULL::FLOAT[], 'parts': [x."values"],
              'indices': x.indices} END,
    (x STRUCT(indices BIGINT[], "values" DOUBLE[])) AS CASE WHEN x IS NULL THEN NULL
        ELSE {'kind': 'sparse', 'dense': NULL::FLOAT[], 'parts': [CAST(x."values" AS FLOAT[])],
              'indices': CAST(x.indices AS INTEGER[])} END;

-- partition_by := 'column': one clustering per value of the column (NULL is a value), in
-- one call; cluster ids are numbered within each partition.
CREATE OR REPLACE TEMP MACRO cluster_embeddings(source, embedding, algorithm := 'auto',
    params := NULL, preprocessing := NULL, id := NULL, seed := 42, sample_size := NULL,
    pooling := NULL, partition_by := NULL, noise := NULL) AS TABLE
    WITH __dc_src AS MATERIALIZED (
        SELECT * FROM query(_dc_oneshot_sql(source, to_json(embedding)::VARCHAR, id,
                                            partition_by))),
    __dc_fit AS (
        SELECT __dc_part AS __dc_fit_part,
            _dc_fit_lists(list(__dc_emb ORDER BY __dc_rn), list(__dc_id ORDER BY __dc_rn),
            json_object('embedding', embedding, 'algorithm', algorithm, 'params', params,
                        'preprocessing', preprocessing, 'seed', seed,
                        'sample_size', sample_size, 'pooling', pooling,
                        'partition_by', partition_by, 'noise', noise,
                        'partition', CAST(__dc_part AS VARCHAR))::VARCHAR) AS __dc_r
        FROM __dc_src GROUP BY __dc_part),
    -- one row per clustered row: joining the fitted lists themselves would copy them into
    -- every output row (quadratic in the partition's size)
    __dc_out AS (
        SELECT __dc_fit_part, unnest(__dc_r.cluster_id) AS __dc_cid,
               unnest(__dc_r.similarity) AS __dc_sim,
               generate_subscripts(__dc_r.cluster_id, 1) AS __dc_out_pos
        FROM __dc_fit),
    __dc_rows AS (
        SELECT CASE WHEN count(*) > 0 THEN true ELSE error('cluster_embeddings: the source is '
            || 'empty or every embedding is NULL; there is nothing to cluster.') END AS __dc_ok
        FROM __dc_src)
    SELECT __dc_src.* EXCLUDE (__dc_rn, __dc_emb, __dc_id, __dc_part, __dc_pos),
           __dc_cid AS cluster_id, __dc_sim AS cosine_similarity_to_centroid
    FROM __dc_src JOIN __dc_out ON __dc_part IS NOT DISTINCT FROM __dc_fit_part
                               AND __dc_pos = __dc_out_pos, __dc_rows
    WHERE __dc_ok
    ORDER BY __dc_rn;

""" + _assign_macro("assign_cluster_detail", "_dc_assign_detail",
                   "assign_cluster with the cosine similarity to the chosen centroid") \
    + _assign_macro("assign_cluster", "_dc_assign",
                    "the nearest centroid of the definition's latest full run (-1 below the "
                    "threshold); vectorized, one UDF per common embedding width")


def register_udfs(reg, state: _State) -> None:
    """Register the core UDFs (create, execute, delete, one-shot fit, assign) on one
    connection (a :class:`~duckcluster.functions._registry.Registrar`)."""
    register(reg, state, FUNCTIONS)
    f = reg.create_function
    f("_dc_oneshot_sql", _wrap(_oneshot_sql), ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR"],
      "VARCHAR",
      null_handling="special")
    f("_dc_fit_lists", _wrap(_fit_lists), [f"{VECTOR_TYPE}[][]", "VARCHAR[]", "VARCHAR"],
      "STRUCT(cluster_id INTEGER[], similarity FLOAT[])", type="arrow",
      null_handling="special", side_effects=True)
    assign = _wrap(lambda e, n, t: _assign_batch(state, e, n, t, False), reports=False)
    detail = _wrap(lambda e, n, t: _assign_batch(state, e, n, t, True), reports=False)
    assign_part = _wrap(lambda e, n, p, t: _assign_batch(state, e, n, t, False, p),
                        reports=False)
    detail_part = _wrap(lambda e, n, p, t: _assign_batch(state, e, n, t, True, p),
                        reports=False)
    for suffix, emb_type in (("", "FLOAT[]"), *((f"_f{d}", f"FLOAT[{d}]")
                                                 for d in _ASSIGN_DIMS)):
        f(f"_dc_assign_part{suffix}", assign_part, [emb_type, "VARCHAR", "VARCHAR", "FLOAT"],
          "INTEGER", type="arrow", null_handling="special", side_effects=True)
        f(f"_dc_assign_detail_part{suffix}", detail_part,
          [emb_type, "VARCHAR", "VARCHAR", "FLOAT"], "STRUCT(cluster_id INTEGER, similarity FLOAT)",
          type="arrow", null_handling="special", side_effects=True)
    for suffix, emb_type in (("", "FLOAT[]"), *((f"_f{d}", f"FLOAT[{d}]")
                                                 for d in _ASSIGN_DIMS)):
        f(f"_dc_assign{suffix}", assign, [emb_type, "VARCHAR", "FLOAT"], "INTEGER",
          type="arrow", null_handling="special", side_effects=True)
        f(f"_dc_assign_detail{suffix}", detail, [emb_type, "VARCHAR", "FLOAT"],
          "STRUCT(cluster_id INTEGER, similarity FLOAT)", type="arrow",
          null_handling="special", side_effects=True)


MACROS = _PY_MACROS
