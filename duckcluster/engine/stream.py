"""Streamed runs: a sampled full run (fit on a seeded sample, then every row streamed to
its nearest centroid) and an assign-mode run (every row against the latest full run's
centroids), reading the source batch by batch so memory is bounded by the sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .._errors import DataError
from ..catalog import runs as catalog
from ..core.algorithms import get_algorithm
from ..core.assign import assign
from ..core.fit import check_distinct, fit_sample, quiet_fit_warnings, run_map, with_map
from ..core.lineage import fingerprints
from ..core.spec import check_rows
from . import lineage, reader, tables
from .reader import SourceData


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
        out.add(b.id_arrow, labels, sims, projection.transform(b.X, C) if projection else None)
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


def sampled_run(cur, run_id, spec, p, stage):
    """Fit on a seeded sample, then stream every row to the nearest centroid."""
    from ..core.quality import compute_quality

    stats1 = reader.ReadStats()
    s_ids, Xs, s_pos = _sample_pass(cur, spec, p, stats1, stage)
    check_rows(spec, len(s_ids))
    check_distinct(Xs, spec)
    with quiet_fit_warnings():
        f = fit_sample(Xs, spec, stage, rows="sampled rows")
    s_labels, cluster_ids, C, choices = f.labels, f.cluster_ids, f.centroids, f.choices
    floors = None
    if get_algorithm(spec.algorithm).noise and len(cluster_ids):
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
    projection, placed = run_map(Xs, f, spec)  # a graph layout of the sample, or PCA
    choices = with_map(choices, projection)
    stats2 = reader.ReadStats()
    out = _stream_assign(cur, spec, p, C, cluster_ids, stats2, stage, floors=floors,
                         projection=projection, keep=(s_pos, s_labels), tree=tree)
    ids, labels, sims, coords = out.arrays()
    rows = np.concatenate(out.sample_rows) if out.sample_rows else np.zeros(0, np.int64)
    if stats2.hexdigest() != stats1.hexdigest() or len(rows) != len(s_pos):
        raise DataError(f"Source {spec.source!r} changed while the run read it twice; "
                        "run it again when writers are done.")
    if placed is not None:  # the sample's own positions in the layout (rows: s_pos order)
        coords[rows] = placed
    stage("quality metrics")
    quality = compute_quality(Xs, labels[rows], sims[rows], spec.seed,
                              population=(labels, sims))
    data = _summary(ids, C, stats2)
    assigned = np.zeros(len(ids), dtype=bool)
    assigned[rows] = f.noise_assigned  # sample rows, in the order of s_pos
    centroids, members = tables.flat_tables(run_id, spec, ids, labels, sims, coords, cluster_ids, C,
                                 fps=np.concatenate(out.fps), noise_assigned=assigned)
    if tree is not None:
        centroids, members = tables.tree_tables(run_id, spec, members, tree,
                                          np.concatenate(out.leaves))
    return data, centroids, members, quality, int(len(cluster_ids)), projection, choices


#: Rows whose vectors an assign-mode run keeps for silhouette, Davies-Bouldin and
#: Calinski-Harabasz (seeded; the other metrics describe every row).
ASSIGN_QUALITY_SAMPLE = 20_000


def assign_run(cur, run_id, spec, p, base_run, thr, stage):
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
    if projection is not None and projection.input_dims not in (None, C.shape[1]):
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
    centroids, members = tables.flat_tables(run_id, spec, ids, labels, sims, coords, ids_arr, C,
                                 centroid_column=base.column, fps=fps)
    return _summary(ids, C, stats), centroids, members, quality, \
        int(len(np.unique(labels[labels >= 0])))


def _summary(ids: np.ndarray, C: np.ndarray, stats: reader.ReadStats) -> SourceData:
    """SourceData of a streamed run: ids and counts; vectors were never all in memory
    (X is an empty matrix of the right width)."""
    width = C.shape[1] if C.ndim == 2 else 0
    return SourceData(ids=ids, X=np.zeros((0, width), dtype=np.float32), n_rows=stats.n_rows,
                      n_null=stats.n_null, stats=stats)
