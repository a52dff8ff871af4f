"""Execution: DuckDB source -> pure numeric core -> catalog rows and artifacts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import _json
from .._errors import INTERRUPTED, DataError, RunCancelledError, SpecError, stored_message
from .._source import (
    check_query,
    describe,
    find_key,
    is_query,
    require_columns,
    source_sql,
)
from ..catalog import runs as catalog
from ..core.algorithms import get_algorithm
from ..core.assign import assign
from ..core.fit import FitResult, check_distinct, fit, quiet_fit_warnings
from ..core.noise import apply as apply_noise
from ..core.lineage import fingerprints
from ..core.spec import ClusterSpec, check_rows
from ..core.threads import machine_sized
from . import lineage, reader
from .reader import SourceData, read_source  # noqa: F401  (re-exported)

Progress = Callable[[str], None]

def _noop(stage: str) -> None:
    pass


def create(cur, args: Mapping[str, Any], replace: bool = False,
           check_labeling: Callable[[Mapping[str, Any]], Any] | None = None) -> ClusterSpec:
    """Validate and store a definition (checks the source and columns exist).

    ``check_labeling``: validates the ``labeling`` settings (passed in by the SQL layer,
    which knows the labels area; the engine never imports it)."""
    spec = ClusterSpec.from_dict(args)
    pinned = reader.pin_source(spec.source)  # relative file paths: absolute, stored as such
    if pinned != spec.source:
        spec = spec.replace(source=pinned)
    if spec.labeling and check_labeling is not None:  # typos fail here, not at labeling
        check_labeling(spec.labeling)
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    require_columns(cols, list(spec.embedding), "embedding", spec.source)
    if spec.id is not None:
        require_columns(cols, [spec.id], "id", spec.source)
    else:
        spec = spec.replace(id=find_key(cur, spec.source, cols))
    reader.check_id_type(cols, spec.id, spec.source)
    catalog.put_definition(cur, spec, replace=replace)
    from ..catalog.read_side import sync_members_view  # ids in their own type

    sync_members_view(cur, spec.name, cols[spec.id])
    return spec


@machine_sized  # BLAS/OpenMP threads from the cores other processes leave free
def execute(cur, name: str, settings: catalog.Settings, mode: str = "full",
            threshold: float | None = None, progress: Progress = _noop,
            run_id: str | None = None) -> str:
    """Run a stored definition; returns the run id. Failures are recorded, then raised."""
    if mode not in ("full", "assign"):
        raise SpecError(f"mode must be 'full' or 'assign'. Got {mode!r}.")
    spec = catalog.get_definition(cur, name)
    if is_query(spec.source):  # stored by an older version: checked before any run row
        check_query(spec.source)
    if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
        raise SpecError(f"assignment_threshold must be a float in the range [0, 1]. "
                        f"Got {threshold!r} instead.")
    base_run = catalog.latest_run(cur, name, mode="full") if mode == "assign" else None
    thr = (spec.assignment_threshold if threshold is None else float(threshold)) \
        if mode == "assign" else None
    if run_id is None:
        run_id = catalog.start_run(cur, spec, mode, thr)
    else:
        catalog.start_queued(cur, run_id)
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
        p = reader.plan(cur, spec)
        alg = get_algorithm(spec.algorithm)
        sampled = mode == "full" and bool(spec.sample_size) and p.n_rows > spec.sample_size
        if mode == "assign":
            data, centroids, members, quality, n_clusters = _assign_run(
                cur, run_id, spec, p, base_run, thr, stage)
            n_fit, projection, choices = 0, None, None
        elif sampled:
            reader.check_memory(spec, spec.sample_size, p.dim, alg.quadratic_memory, True)
            data, centroids, members, quality, n_clusters, projection, choices = \
                _sampled_run(cur, run_id, spec, p, stage)
            n_fit = spec.sample_size
        else:
            reader.check_memory(spec, p.n_rows, p.dim, alg.quadratic_memory, False)
            data = read_source(cur, spec, p)
            check_rows(spec, len(data.ids))
            result = fit(data.X, spec, progress=stage)
            centroids, members = _full_tables(run_id, spec, data, result)
            projection = result.projection
            quality = result.quality
            n_clusters = int(len(result.cluster_ids))
            n_fit = result.n_fit
            choices = result.choices
        # stable ids, lineage and carried labels (engine/lineage.py)
        if mode == "full":
            stage("matching clusters to the previous full run")
            identity = lineage.identify(cur, spec, run_id, centroids, members)
        else:
            identity = lineage.inherit(cur, base_run, centroids, members)
        centroids, members = identity.centroids, identity.members
        stage("writing")
        q = quality.as_dict()
        timings[stage_name] = round(time.perf_counter() - last, 4)
        timings["total"] = round(time.perf_counter() - t0, 4)
        updates = {
            "_name": spec.name, "n_rows": data.n_rows, "n_null": data.n_null,
            "n_members": len(data.ids), "n_fit": n_fit, "n_clusters": n_clusters,
            "dim": int(data.X.shape[1]), "input_hash": data.input_hash, "base_run_id": base_run,
            "timings": json.dumps(timings), "progress": "done",  # with the status, atomically
            "quality": _json.dumps(q),
            "choices": None if choices is None else _json.dumps(choices),
            **{k: q.get(k) for k in ("silhouette_score", "mean_cosine_to_centroid", "noise_ratio",
                                     "cluster_size_entropy", "davies_bouldin",
                                     "calinski_harabasz", "should_recluster")},
        }
        catalog.commit_run(cur, run_id, settings, centroids, members, updates,
                           projection=projection.as_row() if projection is not None else None,
                           within=lambda c: identity.write(c, run_id, spec.name),
                           id_type=p.id_type)
        progress(f"{name}: done")
        return run_id
    except BaseException as exc:
        cancelled = isinstance(exc, (KeyboardInterrupt, RunCancelledError))
        # a KeyboardInterrupt (Ctrl-C before a progress check saw it) says what it was
        why = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else None
        try:  # on a fresh cursor: this one may hold an aborted or unfinished statement
            with cur.cursor() as fresh:
                catalog.fail_run(fresh, run_id,
                                 stored_message(RunCancelledError(why) if why else exc),
                                 status="cancelled" if cancelled else "failed")
        except Exception:  # the database itself is gone; mark_abandoned will catch it
            pass
        raise


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _centroid_stats(labels, sims, cluster_ids):
    """Size, mean and min similarity of each cluster in ``cluster_ids`` (one sort)."""
    cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
    k = len(cluster_ids)
    if k == 0:
        return [], [], []
    labels = np.asarray(labels, dtype=np.int64)
    member = labels >= 0
    pos = np.searchsorted(cluster_ids, labels[member])
    ok = (pos < k) & (cluster_ids[np.minimum(pos, k - 1)] == labels[member])
    pos, s = pos[ok], np.asarray(sims, dtype=np.float64)[member][ok]
    sizes = np.bincount(pos, minlength=k)
    sums = np.bincount(pos, weights=s, minlength=k)
    order = np.argsort(pos, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    mins = np.minimum.reduceat(s[order], np.minimum(starts, max(len(s) - 1, 0))) \
        if len(s) else np.zeros(k)
    return ([int(v) for v in sizes],
            [_f(sums[i] / sizes[i]) if sizes[i] else None for i in range(k)],
            [_f(mins[i]) if sizes[i] else None for i in range(k)])


def _const(value: str, n: int) -> pa.DictionaryArray:
    """A string column with one value in every row, stored once (dictionary)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value], type=pa.string()))


def _dict_column(idx: np.ndarray, values) -> pa.DictionaryArray:
    """``values[idx]`` per row as a dictionary column; NULL where ``idx`` < 0."""
    idx = np.asarray(idx, dtype=np.int64)
    return pa.DictionaryArray.from_arrays(pa.array(np.maximum(idx, 0).astype(np.int32),
                                                   mask=idx < 0),
                                          pa.array(values, type=pa.string()))


def _node_column(labels: np.ndarray) -> pa.DictionaryArray:
    """``cl_<label>`` per member, NULL for noise, as a dictionary column."""
    labels = np.asarray(labels, dtype=np.int64)
    uniq = np.unique(labels[labels >= 0])
    idx = np.where(labels >= 0, np.searchsorted(uniq, labels), -1)
    return _dict_column(idx, [f"cl_{int(c)}" for c in uniq])


def _tree_tables(run_id, spec, members, tree, leaf):
    """Centroid rows of every hierarchy node (statistics over every streamed row) and
    the members' deepest node, its parent and level (a streamed hierarchical run)."""
    m = len(tree.node_ids)
    count = tree.count
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, tree.sim_sum / count, np.nan)
    centroids = pa.table({
        "run_id": [run_id] * m, "name": [spec.name] * m,
        "cluster_id": pa.array(tree.cluster_of.astype(np.int32)),
        "node_id": pa.array(tree.node_ids, pa.string()),
        "parent_cluster_id": pa.array([tree.node_ids[i] if i >= 0 else None
                                       for i in tree.parent.tolist()], pa.string()),
        "child_cluster_ids": pa.array([list(c) for c in tree.child_ids],
                                      pa.list_(pa.string())),
        "hierarchy_level": pa.array(tree.level.astype(np.int32)),
        "size": pa.array(count.astype(np.int64)),
        "mean_cosine_similarity": pa.array([_f(v) for v in mean], pa.float64()),
        "min_cosine_similarity": pa.array([_f(v) if c else None for v, c in
                                           zip(tree.sim_min.tolist(), count)], pa.float64()),
        "centroid": pa.array([c.tolist() for c in tree.centroids], pa.list_(pa.float32())),
    })
    par = np.where(leaf >= 0, tree.parent[np.maximum(leaf, 0)], -1)
    members = members.set_column(members.schema.get_field_index("node_id"), "node_id",
                                 _dict_column(leaf, tree.node_ids))
    members = members.set_column(members.schema.get_field_index("parent_cluster_id"),
                                 "parent_cluster_id", _dict_column(par, tree.node_ids))
    members = members.set_column(
        members.schema.get_field_index("hierarchy_level"), "hierarchy_level",
        pa.array(np.where(leaf >= 0, tree.level[np.maximum(leaf, 0)], -1).astype(np.int32)))
    return centroids, members


def _id_column(ids) -> pa.Array:
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids
    return pa.array(np.asarray(ids, dtype=object).tolist(), pa.string())


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
    member_level = np.where(r.labels >= 0, 0, -1)
    if r.hierarchy is not None:
        member_node = np.array([f"cl_{int(c)}" if c >= 0 else None for c in r.labels],
                               dtype=object)
        member_parent = np.full(n, None, dtype=object)
        by_id = {nd.node_id: nd for nd in r.hierarchy.nodes}
        for i, nid in enumerate(node_ids):
            if nid in by_id:
                rows["child_cluster_ids"][i] = list(by_id[nid].child_ids)
        from ..core.assign import (
            centroids_from_labels,  # sub-centroids in the original space
        )
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
    flat = r.hierarchy is None
    members = pa.table({
        "run_id": _const(run_id, n), "name": _const(spec.name, n), "id": _id_column(data.ids),
        "cluster_id": pa.array(r.labels.astype(np.int32)),
        "cosine_similarity_to_centroid": pa.array(r.similarity.astype(np.float32),
                                                  from_pandas=True),
        "x": pa.array(coords[:, 0].astype(np.float32)),
        "y": pa.array(coords[:, 1].astype(np.float32)),
        "z": pa.array(coords[:, 2].astype(np.float32) if spec.dimensions == 3
                      else np.full(n, np.nan, dtype=np.float32), from_pandas=True),
        "node_id": _node_column(r.labels) if flat else pa.array(member_node.tolist(),
                                                                 type=pa.string()),
        "parent_cluster_id": pa.nulls(n, pa.string()) if flat else
        pa.array(member_parent.tolist(), type=pa.string()),
        "hierarchy_level": pa.array(member_level.astype(np.int32)),
        "fingerprint": pa.array(fingerprints(data.X)),
        "noise_assigned": pa.array(r.noise_assigned if r.noise_assigned is not None
                                   else np.zeros(n, dtype=bool)),
    })
    return centroids, members


@dataclass
class _Streamed:
    """Per-row results of a streamed pass, accumulated batch by batch (ids stay Arrow
    strings: millions of Python str objects would dominate the memory)."""

    ids: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    sims: list = field(default_factory=list)
    coords: list = field(default_factory=list)
    sample_rows: list = field(default_factory=list)  # row numbers of kept (fitted) rows
    probe_X: list = field(default_factory=list)  # vectors of the quality sample
    probe_rows: list = field(default_factory=list)  # and their row numbers
    leaves: list = field(default_factory=list)  # deepest hierarchy node (hierarchical runs)
    fps: list = field(default_factory=list)  # row fingerprints (core.lineage.fingerprints)
    n: int = 0

    def add(self, ids, labels, sims, coords) -> None:
        self.ids.append(ids)
        self.labels.append(labels)
        self.sims.append(sims)
        self.coords.append(coords)
        self.n += len(labels)

    def arrays(self):
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
        ids = pa.chunked_array(self.ids, type=self.ids[0].type) if self.ids else \
            pa.chunked_array([], type=pa.string())
        return ids, cat(self.labels).astype(np.int64), cat(self.sims), \
            (np.concatenate(self.coords) if self.coords and self.coords[0] is not None else None)


def _stream_assign(cur, spec, p, C, cluster_ids, stats, stage, threshold=None, floors=None,
                   projection=None, keep: tuple[np.ndarray, np.ndarray] | None = None,
                   probe: np.ndarray | None = None, tree=None) -> _Streamed:
    """Second pass: every row to its nearest centroid, batch by batch.

    ``threshold``: rows below it are -1 (assign mode). ``floors`` (k,): per-cluster
    minimum similarity of fitted members; rows below their cluster's floor are
    noise (density algorithms). ``keep``: (sorted source positions, labels) of rows
    the algorithm labelled itself (the fitted sample), which keep that label; their
    row numbers in the output are collected in ``sample_rows``. ``probe``: sorted
    source positions whose vectors are kept (``probe_X``, ``probe_rows``) for the
    geometric quality metrics. ``tree``: a :class:`~duckcluster.core.stream_tree.Tree`
    each row then goes down (hierarchical runs; fitted rows keep their leaf).
    """
    out = _Streamed()
    dims = set()
    for b in reader.batches(cur, spec, p, stats):
        if C.shape[1] != b.X.shape[1]:
            raise DataError(f"The source's embeddings have {b.X.shape[1]} dimensions but the "
                            f"centroids have {C.shape[1]}. Run a full execution again.")
        dims.add(b.X.shape[1])
        idx, best = assign(b.X, C, threshold) if len(C) else \
            (np.full(len(b.ids), -1), np.full(len(b.ids), np.nan, dtype=np.float32))
        labels = np.where(idx >= 0, cluster_ids[np.maximum(idx, 0)], -1)
        if floors is not None and len(C):
            labels = np.where(best >= floors[np.maximum(idx, 0)], labels, -1)
        fitted_leaf = None
        if keep is not None and len(keep[0]):
            pos = b.start + np.flatnonzero(b.valid)
            at = np.minimum(np.searchsorted(keep[0], pos), len(keep[0]) - 1)
            hit = np.flatnonzero(keep[0][at] == pos)
            labels[hit] = keep[1][at[hit]]
            out.sample_rows.append(out.n + hit)
            if tree is not None:
                fitted_leaf = np.full(len(labels), -1, dtype=np.int64)
                fitted_leaf[hit] = tree.leaf_of_fitted[at[hit]]
        if tree is not None:
            out.leaves.append(tree.descend(b.X, labels, fitted_leaf))
        if probe is not None and len(probe):
            hit = np.flatnonzero(np.isin(b.start + np.flatnonzero(b.valid), probe))
            out.probe_X.append(b.X[hit])
            out.probe_rows.append(out.n + hit)
        sims = np.where(labels >= 0, best, np.nan).astype(np.float32)
        out.add(b.id_arrow, labels, sims, projection.transform(b.X) if projection else None)
        out.fps.append(fingerprints(b.X))
        stage(f"assigning: {stats.n_rows:,} of {p.n_rows:,} rows")
    reader.check_dims(dims, spec)
    if out.n == 0:
        raise DataError(f"Every row of {spec.source!r} has a NULL embedding in "
                        f"{', '.join(spec.embedding)}; there is nothing to cluster.")
    return out


def _sample_pass(cur, spec, p, stats, stage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First pass of a sampled run: rows at seeded positions (of all rows, in id order)."""
    rng = np.random.default_rng(spec.seed)
    wanted = np.sort(rng.choice(p.n_rows, size=spec.sample_size, replace=False))
    ids, mats, positions = [], [], []
    for b in reader.batches(cur, spec, p, stats):
        pos = b.start + np.flatnonzero(b.valid)  # source positions of rows with embeddings
        hit = np.isin(pos, wanted)
        ids.append(b.ids[hit])
        mats.append(b.X[hit])
        positions.append(pos[hit])
        stage(f"reading the sample: {stats.n_rows:,} of {p.n_rows:,} rows")
    reader.check_dims({m.shape[1] for m in mats if len(m)}, spec)
    X = np.concatenate(mats) if mats else np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(ids), X, np.concatenate(positions)


def _sampled_run(cur, run_id, spec, p, stage):
    """Fit on a seeded sample, then stream every row to the nearest centroid."""
    from ..core.assign import centroids_from_labels
    from ..core.preprocess import run_preprocessing
    from ..core.projection import Projection
    from ..core.quality import compute_quality

    stats1 = reader.ReadStats()
    s_ids, Xs, s_pos = _sample_pass(cur, spec, p, stats1, stage)
    check_rows(spec, len(s_ids))
    check_distinct(Xs, spec)
    alg = get_algorithm(spec.algorithm)
    with quiet_fit_warnings():
        stage("preprocessing")
        Xp = run_preprocessing(Xs, spec.preprocessing, spec.seed)
        stage(f"fitting {spec.algorithm} on {len(s_ids):,} sampled rows")
        fitted = alg.fit_explained(Xp, dict(spec.params), spec.seed)
        noise = apply_noise(Xs, fitted.labels, spec.noise_policy, spec.noise_threshold)
        s_labels = noise.labels
    choices = fitted.choices if noise.report is None else \
        {**(fitted.choices or {}), "noise": noise.report}
    cluster_ids, C = centroids_from_labels(Xs, s_labels)
    floors = None
    if alg.noise and len(cluster_ids):
        own = np.searchsorted(cluster_ids, np.maximum(s_labels, 0))
        s_sims = np.einsum("ij,ij->i", Xs, C[np.minimum(own, len(C) - 1)])
        floors = np.array([s_sims[s_labels == c].min() for c in cluster_ids], dtype=np.float32)
    tree = None
    if spec.hierarchical and spec.max_hierarchy_depth > 1 and len(cluster_ids):
        from ..core.backend import get_executor
        from ..core.hierarchy import build_hierarchy
        from ..core.stream_tree import Tree

        stage("sub-clustering the sample")
        tree = Tree.from_hierarchy(build_hierarchy(
            Xs, s_labels, spec.max_hierarchy_depth, spec.seed,
            executor=get_executor(spec.backend)), Xs)
        for c, i in tree.top.items():  # the very centroids the rows are assigned to
            tree.centroids[i] = C[np.searchsorted(cluster_ids, c)]
    projection = Projection(Xs, spec.dimensions, spec.seed)
    stats2 = reader.ReadStats()
    out = _stream_assign(cur, spec, p, C, cluster_ids, stats2, stage, floors=floors,
                         projection=projection, keep=(s_pos, s_labels), tree=tree)
    ids, labels, sims, coords = out.arrays()
    rows = np.concatenate(out.sample_rows) if out.sample_rows else np.zeros(0, np.int64)
    if stats2.hexdigest() != stats1.hexdigest() or len(rows) != len(s_pos):
        raise DataError(f"Source {spec.source!r} changed while the run read it twice; "
                        "run it again when writers are done.")
    stage("quality metrics")
    quality = compute_quality(Xs, labels[rows], sims[rows], spec.seed,
                              population=(labels, sims))
    data = _summary(ids, C, stats2)
    assigned = np.zeros(len(ids), dtype=bool)
    assigned[rows] = noise.assigned  # sample rows, in the order of s_pos
    centroids, members = _tables(run_id, spec, ids, labels, sims, coords, cluster_ids, C,
                                 fps=np.concatenate(out.fps), noise_assigned=assigned)
    if tree is not None:
        centroids, members = _tree_tables(run_id, spec, members, tree,
                                          np.concatenate(out.leaves))
    return data, centroids, members, quality, int(len(cluster_ids)), projection, choices


#: Rows whose vectors an assign-mode run keeps for silhouette, Davies-Bouldin and
#: Calinski-Harabasz (seeded; the other metrics describe every row).
ASSIGN_QUALITY_SAMPLE = 20_000


def _assign_run(cur, run_id, spec, p, base_run, thr, stage):
    """Assign mode: stream the source against the latest full run's centroids."""
    from ..core.quality import compute_quality

    base = catalog.centroid_matrix(cur, base_run)
    ids_arr, C = base.cluster_ids.astype(np.int64), base.C
    stats = reader.ReadStats()
    # geometric metrics need vectors: a seeded sample of rows, kept while streaming
    rng = np.random.default_rng(spec.seed)
    probe = np.sort(rng.choice(p.n_rows, size=min(p.n_rows, ASSIGN_QUALITY_SAMPLE),
                               replace=False))
    # the base run's map: new rows land where its rows are (None for older runs)
    projection = catalog.load_projection(cur, base_run)
    if projection is not None and projection.W is not None and \
            projection.W.shape[0] != C.shape[1]:
        projection = None
    out = _stream_assign(cur, spec, p, C, ids_arr, stats, stage, threshold=thr, probe=probe,
                         projection=projection)
    ids, labels, sims, coords = out.arrays()
    fps = np.concatenate(out.fps)
    # rows the base run clustered, unchanged (same id and vector): its decision stands
    labels, sims, coords = lineage.keep_known(cur, base_run, ids, fps, labels, sims, coords)
    stage("quality metrics")
    rows = np.concatenate(out.probe_rows) if out.probe_rows else np.zeros(0, np.int64)
    Xq = np.concatenate(out.probe_X) if out.probe_X else \
        np.zeros((0, max(C.shape[1], 1)), dtype=np.float32)
    quality = compute_quality(Xq, labels[rows], sims[rows], spec.seed,
                              population=(labels, sims))
    centroids, members = _tables(run_id, spec, ids, labels, sims, coords, ids_arr, C,
                                 centroid_column=base.column, fps=fps)
    return _summary(ids, C, stats), centroids, members, quality, \
        int(len(np.unique(labels[labels >= 0])))


def _summary(ids: np.ndarray, C: np.ndarray, stats: reader.ReadStats) -> SourceData:
    """SourceData of a streamed run: ids and counts; vectors were never all in memory
    (X is an empty matrix of the right width)."""
    width = C.shape[1] if C.ndim == 2 else 0
    return SourceData(ids=ids, X=np.zeros((0, width), dtype=np.float32), n_rows=stats.n_rows,
                      n_null=stats.n_null, stats=stats)


def _tables(run_id, spec, ids, labels, sims, coords, cluster_ids, C, centroid_column=None,
            fps=None, noise_assigned=None):
    """Centroid and member tables of a flat (non-hierarchical) run."""
    sizes, means, mins = _centroid_stats(labels, sims, cluster_ids)
    k, n = len(cluster_ids), len(ids)
    centroids = pa.table({
        "run_id": [run_id] * k, "name": [spec.name] * k,
        "cluster_id": pa.array(np.asarray(cluster_ids).astype(np.int32)),
        "node_id": [f"cl_{int(c)}" for c in cluster_ids],
        "parent_cluster_id": pa.array([None] * k, type=pa.string()),
        "child_cluster_ids": pa.array([[] for _ in range(k)], type=pa.list_(pa.string())),
        "hierarchy_level": pa.array([0] * k, type=pa.int32()),
        "size": pa.array(sizes, type=pa.int64()),
        "mean_cosine_similarity": pa.array(means, type=pa.float64()),
        "min_cosine_similarity": pa.array(mins, type=pa.float64()),
        "centroid": centroid_column if centroid_column is not None else
        pa.array([c.tolist() for c in C], type=pa.list_(pa.float32())),
    })
    nan = np.full(n, np.nan, dtype=np.float32)
    xyz = [coords[:, i] if coords is not None and i < coords.shape[1] else nan
           for i in range(3)]
    members = pa.table({
        "run_id": _const(run_id, n), "name": _const(spec.name, n), "id": _id_column(ids),
        "cluster_id": pa.array(labels.astype(np.int32)),
        "cosine_similarity_to_centroid": pa.array(sims.astype(np.float32), from_pandas=True),
        "x": pa.array(xyz[0].astype(np.float32), from_pandas=True),
        "y": pa.array(xyz[1].astype(np.float32), from_pandas=True),
        "z": pa.array(xyz[2].astype(np.float32), from_pandas=True),
        "node_id": _node_column(labels),
        "parent_cluster_id": pa.nulls(n, pa.string()),
        "hierarchy_level": pa.array(np.where(labels >= 0, 0, -1).astype(np.int32)),
        "fingerprint": pa.array(fps, pa.int64()) if fps is not None else pa.nulls(n, pa.int64()),
        "noise_assigned": pa.array(noise_assigned if noise_assigned is not None
                                   else np.zeros(n, dtype=bool)),
    })
    return centroids, members
