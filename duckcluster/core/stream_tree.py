"""A fitted cluster hierarchy as centroids, to send streamed rows down the tree.

Runs with ``sample_size`` and ``hierarchical := true`` build the hierarchy on the
fitted sample (:func:`duckcluster.core.hierarchy.build_hierarchy`), then every row of
the source goes down it batch by batch: to its top-level cluster (as flat
sampled runs), then at each node with children to the nearest child centroid —
unless its similarity to that child is below the lowest similarity of the
child's fitted members (the child's *floor*), in which case the row stays at the
node, as the sample's sub-level noise does. Rows of the sample keep the leaf they
were fitted into. Node sizes and mean/min similarities describe every row.

Numeric core only: numpy arrays in and out, no DuckDB.

>>> from duckcluster.core.hierarchy import build_hierarchy
>>> X = np.eye(3, dtype=np.float32)
>>> t = Tree.from_hierarchy(build_hierarchy(X, np.array([0, 0, 1]), 1, 0), X)
>>> t.node_ids, t.descend(X, np.array([0, 0, 1])).tolist()
(['cl_0', 'cl_1'], [0, 0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .assign import normalize_rows


@dataclass
class Tree:
    node_ids: list[str]  # depth-first pre-order, as the hierarchy lists them
    cluster_of: np.ndarray  # (m,) top-level cluster id of each node
    parent: np.ndarray  # (m,) parent node index, -1 at the top level
    level: np.ndarray  # (m,) 0 at the top level
    children: list[np.ndarray]  # child node indices of each node
    child_ids: list[tuple[str, ...]]
    centroids: np.ndarray  # (m, d) normalized mean of the node's fitted members
    floors: np.ndarray  # (m,) lowest similarity of the node's fitted members
    top: dict[int, int]  # top-level cluster id -> node index
    leaf_of_fitted: np.ndarray  # (n_fit,) deepest node index of each fitted row, -1 noise
    count: np.ndarray = field(init=False)  # streamed statistics per node
    sim_sum: np.ndarray = field(init=False)
    sim_min: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        m = len(self.node_ids)
        self.count = np.zeros(m, dtype=np.int64)
        self.sim_sum = np.zeros(m, dtype=np.float64)
        self.sim_min = np.full(m, np.inf, dtype=np.float64)
        self._top_ids = np.array(sorted(self.top), dtype=np.int64)  # vectorized lookup
        self._top_index = np.array([self.top[c] for c in self._top_ids.tolist()], dtype=np.int64)
        depth = int(self.level.max()) + 1 if m else 0
        # ancestor of each node at each level (-1 below the node's own level)
        self._anc = np.full((m, depth), -1, dtype=np.int64)
        for i in range(m):
            j = i
            while j >= 0:
                self._anc[i, self.level[j]] = j
                j = self.parent[j]

    @classmethod
    def from_hierarchy(cls, h, X_fit: np.ndarray) -> "Tree":
        """The tree of hierarchy ``h`` built on the rows ``X_fit`` (normalized)."""
        index = {nd.node_id: i for i, nd in enumerate(h.nodes)}
        m = len(h.nodes)
        cents = np.zeros((m, X_fit.shape[1]), dtype=np.float32)
        floors = np.zeros(m, dtype=np.float32)
        for i, nd in enumerate(h.nodes):
            rows = X_fit[nd.members]
            cents[i] = normalize_rows(rows.mean(axis=0, dtype=np.float64)[None, :])[0]
            floors[i] = float((rows @ cents[i]).min()) if len(rows) else 1.0
        leaf = np.array([index[v] if v is not None else -1 for v in h.leaf_of], dtype=np.int64)
        return cls(
            node_ids=[nd.node_id for nd in h.nodes],
            cluster_of=np.array([nd.cluster_id for nd in h.nodes], dtype=np.int64),
            parent=np.array([index[nd.parent_id] if nd.parent_id else -1 for nd in h.nodes],
                            dtype=np.int64),
            level=np.array([nd.level for nd in h.nodes], dtype=np.int64),
            children=[np.array([index[c] for c in nd.child_ids], dtype=np.int64)
                      for nd in h.nodes],
            child_ids=[tuple(nd.child_ids) for nd in h.nodes],
            centroids=cents, floors=floors,
            top={int(nd.cluster_id): i for i, nd in enumerate(h.nodes) if nd.level == 0},
            leaf_of_fitted=leaf)

    def descend(self, X: np.ndarray, labels: np.ndarray,
                fitted_leaf: np.ndarray | None = None) -> np.ndarray:
        """Deepest node index of each row (n,), -1 for top-level noise, and add the
        rows to the per-node statistics. ``labels``: top-level cluster ids;
        ``fitted_leaf``: the leaf of rows the hierarchy was fitted on, -1 for others."""
        n = len(labels)
        cur = np.full(n, -1, dtype=np.int64)
        has = labels >= 0
        cur[has] = self._top_index[np.searchsorted(self._top_ids, labels[has])]
        forced = np.zeros(n, dtype=bool) if fitted_leaf is None else fitted_leaf >= 0
        self._add(X, cur, has)
        nchild = np.array([len(c) for c in self.children], dtype=np.int64)
        for lvl in range(self._anc.shape[1] - 1):
            active = (cur >= 0) & (nchild[np.maximum(cur, 0)] > 0)
            if not active.any():
                break
            nxt = cur.copy()
            f = np.flatnonzero(active & forced)
            if f.size:
                anc = self._anc[fitted_leaf[f], lvl + 1]
                nxt[f] = np.where(anc >= 0, anc, cur[f])
            free = np.flatnonzero(active & ~forced)
            for p in np.unique(cur[free]):
                r = free[cur[free] == p]
                ch = self.children[p]
                S = X[r] @ self.centroids[ch].T
                j = np.argmax(S, axis=1)
                ok = S[np.arange(len(r)), j] >= self.floors[ch[j]]
                nxt[r[ok]] = ch[j[ok]]
            moved = nxt != cur
            if not moved.any():
                break
            self._add(X, nxt, moved)
            cur = nxt
        return cur

    def _add(self, X: np.ndarray, node: np.ndarray, rows: np.ndarray) -> None:
        idx = np.flatnonzero(rows)
        if not idx.size:
            return
        nd = node[idx]
        sims = np.einsum("ij,ij->i", X[idx], self.centroids[nd]).astype(np.float64)
        self.count += np.bincount(nd, minlength=len(self.node_ids))
        self.sim_sum += np.bincount(nd, weights=sims, minlength=len(self.node_ids))
        np.minimum.at(self.sim_min, nd, sims)
