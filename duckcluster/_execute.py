"""Execution: DuckDB source -> pure numeric core -> catalog rows and artifacts."""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import _catalog as catalog
from ._assign import assign, normalize_rows
from ._errors import DataError, DuckclusterError, SpecError
from ._fit import FitResult, fit
from ._source import describe, find_key, quote_ident, require_columns, source_sql
from ._spec import ClusterSpec, check_rows
from ._vectors import check_nonzero, to_dense
from .algorithms import get_algorithm

Progress = Callable[[str], None]

def _noop(stage: str) -> None:
    pass


@dataclass(frozen=True)
class SourceData:
    """Rows of a source with an embedding, in id order."""

    ids: np.ndarray  # (n,) str, rows with an embedding
    X: np.ndarray  # (n, d) float32, L2-normalized (concatenated columns)
    n_rows: int  # all source rows
    n_null: int  # rows skipped for a NULL embedding
    input_hash: str


def create(cur, args: Mapping[str, Any], replace: bool = False) -> ClusterSpec:
    """Validate and store a definition (checks the source and columns exist)."""
    spec = ClusterSpec.from_dict(args)
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    require_columns(cols, list(spec.embedding), "embedding", spec.source)
    if spec.id is not None:
        require_columns(cols, [spec.id], "id", spec.source)
    else:
        spec = spec.replace(id=find_key(cur, spec.source, cols))
    catalog.put_definition(cur, spec, replace=replace)
    return spec


def read_source(cur, spec: ClusterSpec) -> SourceData:
    """Read id + embedding columns in id order; validate and normalize."""
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    require_columns(cols, list(spec.embedding), "embedding", spec.source)
    id_col = spec.id or find_key(cur, spec.source, cols)
    require_columns(cols, [id_col], "id", spec.source)
    emb = ", ".join(quote_ident(c) for c in spec.embedding)
    qid = quote_ident(id_col)
    tbl = cur.sql(f"SELECT CAST({qid} AS VARCHAR) AS __dc_id, {emb} FROM {src} "
                  f"ORDER BY {qid}").to_arrow_table()
    n_rows = tbl.num_rows
    if n_rows == 0:
        raise DataError(f"Source {spec.source!r} is empty: there is nothing to cluster. "
                        "Load rows first or check the WHERE clause of a query source.")
    id_arr = tbl.column("__dc_id")
    if id_arr.null_count:
        raise DataError(f"The id column {id_col!r} has NULL values; ids must be unique and "
                        "not NULL.")
    ids = np.asarray(id_arr.to_pylist(), dtype=object)
    _check_unique(ids, id_col)
    valid = np.ones(n_rows, dtype=bool)
    dense = []
    for c in spec.embedding:
        v = to_dense(tbl.column(c), ids, c, spec.pooling)
        dense.append((v, c))
        valid &= v.valid
    parts = []
    for v, c in dense:  # each column: rows valid in all columns, normalized
        X = v.X[valid[v.valid]] if not v.valid.all() else v.X[valid]
        check_nonzero(X, ids[valid], c)
        parts.append(normalize_rows(X))
    X = parts[0] if len(parts) == 1 else normalize_rows(np.concatenate(parts, axis=1))
    ids = ids[valid]
    if len(ids) == 0:
        raise DataError(f"Every row of {spec.source!r} has a NULL embedding in "
                        f"{', '.join(spec.embedding)}; there is nothing to cluster.")
    h = hashlib.sha256()
    h.update("\x1f".join(ids.tolist()).encode())
    h.update(np.ascontiguousarray(X).tobytes())
    return SourceData(ids=ids, X=X, n_rows=n_rows, n_null=int((~valid).sum()),
                      input_hash=h.hexdigest())


def _check_unique(ids: np.ndarray, id_col: str) -> None:
    s = np.sort(ids.astype(str))
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        raise DataError(f"The id column {id_col!r} is not unique: {str(s[dup[0]])!r} appears more "
                        "than once. Name a unique column with id := '<column>'.")


def execute(cur, name: str, settings: catalog.Settings, mode: str = "full",
            threshold: float | None = None, progress: Progress = _noop,
            run_id: str | None = None) -> str:
    """Run a stored definition; returns the run id. Failures are recorded, then raised."""
    if mode not in ("full", "assign"):
        raise SpecError(f"mode must be 'full' or 'assign'. Got {mode!r}.")
    spec = catalog.get_definition(cur, name)
    if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
        raise SpecError(f"assignment_threshold must be a float in the range [0, 1]. "
                        f"Got {threshold!r} instead.")
    base_run = catalog.latest_run(cur, name, mode="full") if mode == "assign" else None
    thr = (spec.assignment_threshold if threshold is None else float(threshold)) \
        if mode == "assign" else None
    if run_id is None:
        run_id = catalog.start_run(cur, spec, mode, thr)
    else:
        catalog.set_status(cur, run_id, "running")
    timings: dict[str, float] = {}
    t0 = last = time.perf_counter()
    stage_name = "reading source"

    def stage(s: str) -> None:
        nonlocal last, stage_name
        t = time.perf_counter()
        timings[stage_name] = round(timings.get(stage_name, 0.0) + t - last, 4)
        last, stage_name = t, s.split(" ")[0]
        progress(f"{name}: {s}")

    try:
        progress(f"{name}: reading source")
        data = read_source(cur, spec)
        if mode == "full":
            check_rows(spec, len(data.ids))
            result = fit(data.X, spec, progress=stage)
            stage("writing")
            centroids, members = _full_tables(run_id, spec, data, result)
            quality = result.quality
            n_clusters = int(len(result.cluster_ids))
            n_fit = result.n_fit
        else:
            stage(f"assigning {len(data.ids):,} rows")
            centroids, members, quality, n_clusters = _assign_tables(
                cur, run_id, spec, data, base_run, thr)
            n_fit = 0
            stage("writing")
        q = quality.as_dict()
        timings[stage_name] = round(time.perf_counter() - last, 4)
        timings["total"] = round(time.perf_counter() - t0, 4)
        updates = {
            "_name": spec.name, "n_rows": data.n_rows, "n_null": data.n_null,
            "n_members": len(data.ids), "n_fit": n_fit, "n_clusters": n_clusters,
            "dim": int(data.X.shape[1]), "input_hash": data.input_hash, "base_run_id": base_run,
            "timings": json.dumps(timings),
            "quality": json.dumps(q, sort_keys=True, default=_json_default),
            **{k: q.get(k) for k in ("silhouette_score", "mean_cosine_to_centroid", "noise_ratio",
                                     "cluster_size_entropy", "davies_bouldin",
                                     "calinski_harabasz", "should_recluster")},
        }
        catalog.commit_run(cur, run_id, settings, centroids, members, updates)
        progress(f"{name}: done")
        return run_id
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}" if isinstance(exc, DuckclusterError) else \
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        try:
            catalog.fail_run(cur, run_id, msg)
        except Exception:  # the connection itself is gone; mark_abandoned will catch it
            pass
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _centroid_stats(labels, sims, cluster_ids):
    sizes, means, mins = [], [], []
    for cid in cluster_ids:
        s = sims[labels == cid]
        sizes.append(int(s.size))
        means.append(_f(s.mean()) if s.size else None)
        mins.append(_f(s.min()) if s.size else None)
    return sizes, means, mins


def _full_tables(run_id: str, spec: ClusterSpec, data: SourceData, r: FitResult):
    n, k = len(data.ids), len(r.cluster_ids)
    sizes, means, mins = _centroid_stats(r.labels, r.similarity, r.cluster_ids)
    node_ids = [f"cl_{int(c)}" for c in r.cluster_ids]
    rows: dict[str, list] = {
        "run_id": [run_id] * k, "name": [spec.name] * k,
        "cluster_id": [int(c) for c in r.cluster_ids], "node_id": node_ids,
        "parent_cluster_id": [None] * k, "child_cluster_ids": [[] for _ in range(k)],
        "hierarchy_level": [0] * k, "size": sizes, "mean_cosine_similarity": means,
        "min_cosine_similarity": mins, "centroid": [c.tolist() for c in r.centroids],
    }
    member_node = np.array([f"cl_{int(c)}" if c >= 0 else None for c in r.labels], dtype=object)
    member_level = np.where(r.labels >= 0, 0, -1)
    member_parent = np.full(n, None, dtype=object)
    if r.hierarchy is not None:
        by_id = {nd.node_id: nd for nd in r.hierarchy.nodes}
        for i, nid in enumerate(node_ids):
            if nid in by_id:
                rows["child_cluster_ids"][i] = list(by_id[nid].child_ids)
        from ._assign import centroids_from_labels  # sub-centroids in the original space
        for nd in r.hierarchy.nodes:
            if nd.level == 0:
                continue
            sub = np.zeros(n, dtype=np.int64) - 1
            sub[nd.members] = 0
            _, C = centroids_from_labels(data.X, sub)
            s = data.X[nd.members] @ C[0]
            rows["run_id"].append(run_id)
            rows["name"].append(spec.name)
            rows["cluster_id"].append(int(nd.cluster_id))
            rows["node_id"].append(nd.node_id)
            rows["parent_cluster_id"].append(nd.parent_id)
            rows["child_cluster_ids"].append(list(nd.child_ids))
            rows["hierarchy_level"].append(int(nd.level))
            rows["size"].append(int(len(nd.members)))
            rows["mean_cosine_similarity"].append(_f(s.mean()))
            rows["min_cosine_similarity"].append(_f(s.min()))
            rows["centroid"].append(C[0].tolist())
        leaf = np.asarray(r.hierarchy.leaf_of, dtype=object)
        has = np.array([bool(x) for x in leaf])
        member_node[has] = leaf[has]
        for i in np.flatnonzero(has):
            nd = by_id[leaf[i]]
            member_level[i] = nd.level
            member_parent[i] = nd.parent_id
    centroids = pa.table({
        **{c: rows[c] for c in rows if c != "centroid"},
        "centroid": pa.array(rows["centroid"], type=pa.list_(pa.float32())),
    })
    centroids = centroids.cast(centroids.schema.set(
        centroids.schema.get_field_index("child_cluster_ids"),
        pa.field("child_cluster_ids", pa.list_(pa.string()))))
    coords = r.coords if r.coords is not None else np.full((n, spec.dimensions), np.nan)
    members = pa.table({
        "run_id": [run_id] * n, "name": [spec.name] * n, "id": data.ids.tolist(),
        "cluster_id": pa.array(r.labels.astype(np.int32)),
        "cosine_similarity_to_centroid": pa.array(r.similarity.astype(np.float32),
                                                  from_pandas=True),
        "x": pa.array(coords[:, 0].astype(np.float32)),
        "y": pa.array(coords[:, 1].astype(np.float32)),
        "z": pa.array(coords[:, 2].astype(np.float32) if spec.dimensions == 3
                      else np.full(n, np.nan, dtype=np.float32), from_pandas=True),
        "node_id": pa.array(member_node.tolist(), type=pa.string()),
        "parent_cluster_id": pa.array(member_parent.tolist(), type=pa.string()),
        "hierarchy_level": pa.array(member_level.astype(np.int32)),
    })
    return centroids, members


def _assign_tables(cur, run_id, spec, data: SourceData, base_run: str, thr: float):
    from ._quality import compute_quality

    cluster_ids, tbl = catalog.load_centroids(cur, base_run)
    C = np.asarray(tbl.column("centroid").combine_chunks().flatten().to_numpy(),
                   dtype=np.float32).reshape(len(cluster_ids), -1)
    if C.shape[1] != data.X.shape[1]:
        raise DataError(f"The source's embeddings have {data.X.shape[1]} dimensions but run "
                        f"{base_run!r} has centroids of {C.shape[1]}. Re-run a full execution.")
    ids_arr = np.asarray(cluster_ids, dtype=np.int64)
    idx, best = assign(data.X, C, thr)
    labels = np.where(idx >= 0, ids_arr[np.maximum(idx, 0)], -1)
    sims = np.where(idx >= 0, best, np.nan).astype(np.float32)
    sizes, means, mins = _centroid_stats(labels, sims, ids_arr)
    k = len(ids_arr)
    centroids = pa.table({
        "run_id": [run_id] * k, "name": [spec.name] * k,
        "cluster_id": pa.array(ids_arr.astype(np.int32)), "node_id": [f"cl_{c}" for c in ids_arr],
        "parent_cluster_id": pa.array([None] * k, type=pa.string()),
        "child_cluster_ids": pa.array([[] for _ in range(k)], type=pa.list_(pa.string())),
        "hierarchy_level": pa.array([0] * k, type=pa.int32()), "size": sizes,
        "mean_cosine_similarity": pa.array(means, type=pa.float64()),
        "min_cosine_similarity": pa.array(mins, type=pa.float64()),
        "centroid": tbl.column("centroid").combine_chunks(),
    })
    n = len(data.ids)
    nan = np.full(n, np.nan, dtype=np.float32)
    members = pa.table({
        "run_id": [run_id] * n, "name": [spec.name] * n, "id": data.ids.tolist(),
        "cluster_id": pa.array(labels.astype(np.int32)),
        "cosine_similarity_to_centroid": pa.array(sims, from_pandas=True),
        "x": pa.array(nan, from_pandas=True), "y": pa.array(nan, from_pandas=True),
        "z": pa.array(nan, from_pandas=True),
        "node_id": pa.array([f"cl_{c}" if c >= 0 else None for c in labels], type=pa.string()),
        "parent_cluster_id": pa.array([None] * n, type=pa.string()),
        "hierarchy_level": pa.array(np.where(labels >= 0, 0, -1).astype(np.int32)),
    })
    quality = compute_quality(data.X, labels, sims, spec.seed)
    return centroids, members, quality, int((np.asarray(sizes) > 0).sum())
