"""The catalog tables of a run: centroid and member rows as Arrow tables, flat or
hierarchical, for in-memory (:func:`full_tables`) and streamed runs (:func:`flat_tables`,
:func:`tree_tables`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..core.fit import FitResult
from ..core.lineage import fingerprints
from ..core.spec import ClusterSpec
from .reader import SourceData


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def centroid_stats(labels, sims, cluster_ids):
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


def tree_tables(run_id, spec, members, tree, leaf):
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


def full_tables(run_id: str, spec: ClusterSpec, data: SourceData, r: FitResult):
    n, k = len(data.ids), len(r.cluster_ids)
    sizes, means, mins = centroid_stats(r.labels, r.similarity, r.cluster_ids)
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


def flat_tables(run_id, spec, ids, labels, sims, coords, cluster_ids, C, centroid_column=None,
            fps=None, noise_assigned=None):
    """Centroid and member tables of a flat (non-hierarchical) run."""
    sizes, means, mins = centroid_stats(labels, sims, cluster_ids)
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
