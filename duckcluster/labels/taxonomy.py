"""Taxonomies: stable clusters promoted to reference nodes, and assignment to them.

``cluster_promote`` copies chosen cluster nodes of a run (default: every
non-noise node) into ``duckcluster.taxonomy_nodes`` with label, centroid,
parent and source run; a hierarchical run promotes as a tree. ``assign_taxonomy``
walks that tree: the nearest root by cosine (NULL below the threshold), then,
while the nearest child of the current node is at or above the threshold, that
child. Vectorized: one ``X @ C.T`` per batch, then one argmax per parent.

Clusters keep their ids across full runs (``engine/lineage.py``), so a node promoted
from one run is the same cluster in the next: ``mode := 'merge'`` on a later run
updates it in place, and ``taxonomy_nodes(name)`` follows each node's cluster along
its lineage to the latest full run (``current_node_id``) or says where it ended
(``lineage_note``: died, split, merged in run ...).

>>> C = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.9, -0.1]], dtype=np.float32)
>>> parent = np.array([-1, -1, 0, 0])
>>> X = np.array([[0.8, 0.2], [0.1, 1.0], [-1, 0]], dtype=np.float32)
>>> node, sim = walk_tree(X, C, parent, threshold=0.5)
>>> node.tolist()
[2, 1, -1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._errors import DataError, SpecError
from .._params import Param, validate_params
from ..catalog import labels as store
from ..catalog import runs as catalog
from ..core.assign import normalize_rows
from ..core.vectors import matrix

OPTIONS: dict[str, Param] = {
    "run_id": Param(str, None, nullable=True, doc="default: the latest successful run"),
    "min_size": Param(int, None, low=1, nullable=True, doc="skip smaller nodes"),
    "min_mean_similarity": Param(float, None, low=-1.0, high=1.0, nullable=True,
                                 doc="skip nodes less cohesive than this"),
    "threshold": Param(float, 0.5, low=-1.0, high=1.0,
                       doc="default minimum cosine similarity of assign_taxonomy"),
    "mode": Param(str, "create", choices=("create", "replace", "merge")),
    "prefix": Param(str, "", doc="prefix of node ids, e.g. 'topics.' to merge definitions"),
}

_MAX_DEPTH = 32


def walk_tree(X: np.ndarray, C: np.ndarray, parent: np.ndarray, threshold: float | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Deepest node of each row: (node index or -1, its cosine similarity or NaN).

    ``X`` (n, d) and ``C`` (m, d) are normalized here; ``parent[i]`` is the index of
    node i's parent, -1 for roots. Ties go to the lowest index.
    """
    X = normalize_rows(X)
    C = normalize_rows(C)
    n = X.shape[0]
    node = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan, dtype=np.float32)
    roots = np.flatnonzero(parent < 0)
    if n == 0 or roots.size == 0:
        return node, sim
    S = X @ C.T
    thr = -np.inf if threshold is None else float(threshold)
    j = np.argmax(S[:, roots], axis=1)
    best = S[np.arange(n), roots[j]]
    ok = best >= thr
    node[ok] = roots[j[ok]]
    sim[ok] = best[ok]
    children = {int(p): np.flatnonzero(parent == p) for p in np.unique(parent[parent >= 0])}
    active = ok.copy()
    for _ in range(_MAX_DEPTH):
        moved = False
        for p, ch in children.items():
            rows = np.flatnonzero(active & (node == p))
            if rows.size == 0:
                continue
            sub = S[np.ix_(rows, ch)]
            k = np.argmax(sub, axis=1)
            s = sub[np.arange(rows.size), k]
            go = s >= thr
            node[rows[go]] = ch[k[go]]
            sim[rows[go]] = s[go]
            active[rows[~go]] = False
            moved = moved or bool(go.any())
        if not moved:
            break
    return node, sim


@dataclass(frozen=True)
class Taxonomy:
    """A loaded taxonomy, ready for :func:`walk_tree`."""

    name: str
    threshold: float
    node_ids: list[str]
    labels: list[str | None]
    parent: np.ndarray
    C: np.ndarray

    def path(self, i: int) -> list[str]:
        out = []
        while i >= 0 and len(out) < _MAX_DEPTH:
            out.append(self.node_ids[i])
            i = int(self.parent[i])
        return out[::-1]


def load(cur, taxonomy: str) -> Taxonomy:
    head, nodes = store.load_taxonomy(cur, taxonomy)
    ids = nodes.column("node_id").to_pylist()
    pos = {nid: i for i, nid in enumerate(ids)}
    parent = np.asarray([pos.get(p, -1) if p is not None else -1
                         for p in nodes.column("parent_node_id").to_pylist()], dtype=np.int64)
    C = matrix(nodes.column("centroid"), len(ids), int(head["dim"]))
    return Taxonomy(taxonomy, float(head["threshold"]), ids, nodes.column("label").to_pylist(),
                    parent, C)


def _selected(rows: Sequence[store.NodeRow], clusters: Any, opts: Mapping[str, Any]
              ) -> list[store.NodeRow]:
    """Chosen nodes plus their descendants, minus nodes failing the filters (and theirs)."""
    by_id = {r.node_id: r for r in rows}
    if clusters is None:
        chosen = {r.node_id for r in rows}
    else:
        if isinstance(clusters, (int, str)):
            clusters = [clusters]
        chosen = set()
        for c in clusters:
            nid = f"cl_{c}" if isinstance(c, int) and not isinstance(c, bool) else c
            if nid not in by_id:
                valid = ", ".join(repr(r.node_id) for r in rows[:20])
                raise SpecError(f"clusters: {c!r} is not a cluster of this run. Pass cluster ids "
                                f"(ints) or node ids; this run has {valid}"
                                f"{', ...' if len(rows) > 20 else ''}.")
            chosen.add(nid)
        grew = True
        while grew:  # a chosen node brings its subtree
            grew = False
            for r in rows:
                if r.parent_id in chosen and r.node_id not in chosen:
                    chosen.add(r.node_id)
                    grew = True

    def keep(r: store.NodeRow) -> bool:
        if opts["min_size"] is not None and r.size < opts["min_size"]:
            return False
        mean = r.mean_similarity
        return not (opts["min_mean_similarity"] is not None
                    and (mean is None or mean < opts["min_mean_similarity"]))

    out = []
    kept: set[str] = set()
    for r in rows:  # stored order puts parents before children
        parent_ok = r.parent_id is None or r.parent_id in kept or r.parent_id not in chosen
        if r.node_id in chosen and keep(r) and parent_ok:
            out.append(r)
            kept.add(r.node_id)
    return out


def promote(cur, name: str, taxonomy: str, clusters: Any, options: Mapping[str, Any]) -> str:
    """Promote a run's clusters to taxonomy nodes; one transaction. Returns a message."""
    catalog.require_writable(cur, "cluster_promote")
    opts = validate_params("cluster_promote", OPTIONS, options)
    if not isinstance(taxonomy, str) or not taxonomy.strip():
        raise SpecError("cluster_promote: taxonomy_name must be a non-empty name, like "
                        f"'topics'. Got {taxonomy!r}.")
    run_id = catalog.resolve_run(cur, name, opts["run_id"])
    rows = _selected(store.run_nodes(cur, run_id), clusters, opts)
    if not rows:
        raise DataError(f"No cluster of run {run_id} qualifies for promotion (the run has no "
                        "clusters, or min_size / min_mean_similarity excluded all of them).")
    dims = {r.centroid.shape[0] for r in rows}
    if len(dims) != 1:
        raise DataError(f"Run {run_id} has centroids of mixed dimensions {sorted(dims)}.")
    kept = {r.node_id for r in rows}
    depth: dict[str, int] = {}
    for r in rows:
        depth[r.node_id] = depth[r.parent_id] + 1 if r.parent_id in kept else 0
    pre = opts["prefix"]
    nodes = pa.table({
        "node_id": pa.array([pre + r.node_id for r in rows], pa.string()),
        "parent_node_id": pa.array([pre + r.parent_id if r.parent_id in kept else None
                                    for r in rows], pa.string()),
        "level": pa.array([depth[r.node_id] for r in rows], pa.int32()),
        "label": pa.array([r.label or r.node_id for r in rows], pa.string()),
        "summary": pa.array([r.summary for r in rows], pa.string()),
        "keywords": pa.array([list(r.keywords) if r.keywords is not None else None
                              for r in rows], pa.list_(pa.string())),
        "centroid": pa.array([normalize_rows(r.centroid[None, :])[0].tolist() for r in rows],
                             pa.list_(pa.float32())),
        "size": pa.array([r.size for r in rows], pa.int64()),
        "source_name": pa.array([name] * len(rows), pa.string()),
        "source_run_id": pa.array([run_id] * len(rows), pa.string()),
        "source_node_id": pa.array([r.node_id for r in rows], pa.string()),
    })
    cur.execute("BEGIN")
    try:
        n = store.write_taxonomy(cur, taxonomy, nodes, opts["threshold"], dims.pop(),
                                 opts["mode"], catalog.now())
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    levels = max(depth.values()) + 1
    return (f"promoted {len(rows)} node(s) of run {run_id} ({levels} level(s)) into taxonomy "
            f"{taxonomy!r}, which now has {n} node(s)")
