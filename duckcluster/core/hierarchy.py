"""Hierarchical sub-clustering: split each big enough cluster again, recursively.

As in the seed, "each cluster with enough members is further divided using
UMAP + HDBSCAN". Top-level clusters are ``cl_<k>`` at level 0; the children of
``cl_0`` are ``cl_0_sub_0``, ``cl_0_sub_1``, ... (numbered by decreasing size),
theirs ``cl_0_sub_1_sub_0`` and so on.

Rules:

- ``max_depth`` counts levels: 1 is the top level only, 3 allows
  ``cl_0_sub_1_sub_0``.
- A node is split only if it has at least ``min_size`` members and the
  sub-clustering finds at least two sub-clusters; otherwise it is a leaf.
- Rows the sub-clustering calls noise stay in the parent (their deepest node
  is the parent); top-level noise rows belong to no node (``leaf_of`` None).
- Deterministic for a seed: every split uses the same seed.

The default splitter (:func:`default_subcluster`) reduces a node's ``m`` members
to 5 dimensions and runs HDBSCAN with ``min_cluster_size = max(5, m // 20)``.
The reduction is duckcluster's UMAP step (cosine, ``n_neighbors`` 15,
``min_dist`` 0, seeded) from :data:`UMAP_MIN_MEMBERS` members up, PCA below: on a
few hundred rows UMAP's
neighbour graph carves a homogeneous Gaussian blob into 2-5 artificial clumps
(measured at 60-400 rows, d = 32 and 384), while from ~1,000 rows it leaves such
a blob whole and still separates sub-blobs that PCA + HDBSCAN misses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._errors import DataError, SpecError
from .algorithms import get_algorithm, relabel_by_size, validate_algorithm_params
from .algorithms._base import random_state
from .backend import Executor, LocalExecutor

UMAP_MIN_MEMBERS = 1000
SUB_COMPONENTS = 5

Subcluster = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Node:
    """One node of the hierarchy.

    ``members`` are int64 row indices into the clustered rows (sorted);
    ``cluster_id`` is the top-level cluster the node descends from.
    """

    node_id: str
    cluster_id: int
    parent_id: str | None
    child_ids: tuple[str, ...]
    level: int
    members: np.ndarray


@dataclass(frozen=True)
class Hierarchy:
    """All nodes in depth-first pre-order (``cl_0``, ``cl_0_sub_0``, ..., ``cl_1``, ...).

    ``leaf_of`` (object array of shape (n,)) holds each row's deepest node id,
    None for top-level noise rows.
    """

    nodes: tuple[Node, ...]
    leaf_of: np.ndarray

    def node(self, node_id: str) -> Node:
        """Return the node with id ``node_id``."""
        for nd in self.nodes:
            if nd.node_id == node_id:
                return nd
        raise KeyError(node_id)


def _reduce_members(X: np.ndarray, seed: int) -> np.ndarray:
    m, d = X.shape
    if m < UMAP_MIN_MEMBERS:
        from sklearn.decomposition import PCA

        k = min(SUB_COMPONENTS, d, m - 1)
        return PCA(n_components=k, random_state=random_state(seed)).fit_transform(X)
    from .preprocess import run_preprocessing, validate_steps

    # duckcluster's own UMAP step (cached kernels, no umap-learn import)
    steps = validate_steps([{"method": "umap", "n_components": min(SUB_COMPONENTS, d, m - 2),
                             "n_neighbors": min(15, m - 1), "min_dist": 0.0,
                             "metric": "cosine"}])
    return run_preprocessing(X, steps, seed)


def default_subcluster(X: np.ndarray, seed: int) -> np.ndarray:
    """Split one cluster's rows (m, d): UMAP (PCA below 1,000 rows), then HDBSCAN.

    Returns labels of shape (m,), -1 for noise.
    """
    m = X.shape[0]
    if m < 3:
        return np.full(m, -1, dtype=np.int64)
    Y = np.asarray(_reduce_members(X, seed), dtype=np.float32)
    hdb = get_algorithm("hdbscan")
    params = validate_algorithm_params("hdbscan", {"min_cluster_size": max(5, m // 20)})
    return hdb.fit_predict(Y, params, seed)


def _split(members: np.ndarray, X: np.ndarray, seed: int, split: Subcluster) -> np.ndarray:
    """Labels of one node's rows, renumbered by decreasing size (a task of its own)."""
    return relabel_by_size(np.asarray(split(X[members], seed)).ravel())


def build_hierarchy(
    X_norm: np.ndarray,
    labels: np.ndarray,
    max_depth: int,
    seed: int,
    min_size: int = 50,
    subcluster: Subcluster | None = None,
    executor: Executor | None = None,
) -> Hierarchy:
    """Build the cluster hierarchy over top-level ``labels`` (n,), -1 = noise.

    ``X_norm`` (n, d) are the rows the top level was clustered on; ``subcluster``
    (rows, seed) -> labels splits one node, default=:func:`default_subcluster`.
    ``executor`` runs the splits of one level, one task per node to split
    (default: in this process; see :mod:`duckcluster.core.backend`); the result does
    not depend on it.

    >>> X = np.eye(4, dtype=np.float32)
    >>> h = build_hierarchy(X, np.array([0, 0, 1, -1]), max_depth=1, seed=0)
    >>> [nd.node_id for nd in h.nodes], h.leaf_of.tolist()
    (['cl_0', 'cl_1'], ['cl_0', 'cl_0', 'cl_1', None])
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) \
            or max_depth < 1:
        raise SpecError(
            f"max_hierarchy_depth must be an int >= 1 (1 = top level only). "
            f"Got {max_depth!r} instead."
        )
    X = np.asarray(X_norm, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if labels.shape[0] != X.shape[0]:
        raise DataError(f"labels has {labels.shape[0]} entries but X has {X.shape[0]} rows.")
    split = subcluster or default_subcluster
    run = executor or LocalExecutor()

    # level by level: every node of a level that may split is one task
    order = np.argsort(labels, kind="stable")
    ids, starts = np.unique(labels[order], return_index=True)
    level_nodes = [(f"cl_{int(cid)}", int(cid), None, np.sort(group))
                   for cid, group in zip(ids, np.split(order, starts[1:])) if cid >= 0]
    roots = [nid for nid, *_ in level_nodes]
    found: dict[str, tuple[int, str | None, int, np.ndarray, tuple[str, ...]]] = {}
    level = 0
    while level_nodes:
        splittable = [nd for nd in level_nodes
                      if level + 1 < max_depth and nd[3].size >= min_size]
        subs = run.map(_split, [nd[3] for nd in splittable], shared=(X, seed, split))
        sub_of = {nd[0]: sub for nd, sub in zip(splittable, subs)}
        next_nodes = []
        for node_id, cluster_id, parent_id, members in level_nodes:
            child_ids: tuple[str, ...] = ()
            sub = sub_of.get(node_id)
            if sub is not None:
                if sub.shape[0] != members.size:
                    raise DataError(
                        f"subcluster returned {sub.shape[0]} labels for {members.size} rows "
                        f"of {node_id}."
                    )
                k = int(sub.max()) + 1 if sub.size else 0
                if k >= 2:
                    child_ids = tuple(f"{node_id}_sub_{j}" for j in range(k))
                    next_nodes.extend((child, cluster_id, node_id, members[sub == j])
                                      for j, child in enumerate(child_ids))
            found[node_id] = (cluster_id, parent_id, level, members, child_ids)
        level_nodes = next_nodes
        level += 1

    nodes: list[Node] = []
    leaf_of = np.full(labels.shape[0], None, dtype=object)

    def emit(node_id: str) -> None:  # depth-first pre-order: a parent before its children
        cluster_id, parent_id, lvl, members, child_ids = found[node_id]
        nodes.append(Node(node_id, cluster_id, parent_id, child_ids, lvl, members))
        leaf_of[members] = node_id
        for child in child_ids:
            emit(child)

    for root in roots:
        emit(root)
    return Hierarchy(nodes=tuple(nodes), leaf_of=leaf_of)
