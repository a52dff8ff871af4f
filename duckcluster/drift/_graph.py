"""The pooled neighbour graph the ``knn`` test and ``embedding_drift_explain`` read.

Every row of both sides gets its ``k`` nearest other rows of the pooled set
(cosine on L2-normalized rows, euclidean otherwise). The graph is built from the
pooled rows alone, never from which side a row came from, so any statistic of
(graph, labels) has an exact permutation p-value: under "no drift" every
relabelling of the pooled rows is equally likely given the graph. The rows are
shuffled (seeded) before the graph is built, so neither the order a builder
looks at rows in nor the order that breaks ties between duplicate rows carries
side information.

Up to :data:`EXACT_MAX_ROWS` pooled rows the neighbours are exact (blocked BLAS).
Above, an inverted file in numpy: the rows are reduced to their first
:data:`REDUCED_DIMS` (64) principal components (fitted on a seeded sample of pooled
rows), split into cells of about :data:`CELL_ROWS` rows by k-means (fitted on a
seeded sample; above :data:`FLAT_CELLS` cells, a two-level k-means), and each row's
neighbours are the nearest, in those components, of the rows of its own cell and
the :data:`PROBES` - 1 cells whose centres are nearest (one BLAS product per cell,
a numba top-k). Ranking in 64 components instead of the full space took the graph of
100k pooled rows like real sentence embeddings from 20 s of CPU to 2.4 s; at 2M pooled
rows it takes about 55 s (``bench/drift_scale.py``). Its recall against the exact
full-space neighbours of :data:`CHECK_ROWS` seeded rows is measured and reported in
``details`` (0.79-0.87 from 40k to 2M pooled rows there; none useful on isotropic
noise, where every row of a cluster is about as near as any other). Approximate
neighbours change power, not validity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Pooled rows up to which the neighbours are exact.
EXACT_MAX_ROWS = 12_000
#: Dimensions of the approximate search (principal components of the pooled rows).
REDUCED_DIMS = 64
#: Rows per cell of the inverted file (on average).
CELL_ROWS = 128
#: Cells searched per row (its own and the nearest others).
PROBES = 8
#: Rows whose exact neighbours measure the approximate graph's recall.
CHECK_ROWS = 64
_BLOCK = 1024


@dataclass(frozen=True)
class Graph:
    """``idx[i]``: the ``k`` nearest other rows of pooled row ``i``, nearest first."""

    idx: np.ndarray  # (N, k) int32
    details: dict[str, Any] = field(default_factory=dict)
    #: rows in the order of the search's cells (neighbours mostly near each other), or None
    order: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])


def _top_k(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the ``k`` largest entries of each row of ``S``, largest first."""
    if k < S.shape[1]:
        part = np.argpartition(S, S.shape[1] - k, axis=1)[:, S.shape[1] - k:]
    else:
        part = np.broadcast_to(np.arange(S.shape[1]), S.shape).copy()
    vals = np.take_along_axis(S, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _half_sq(X: np.ndarray) -> np.ndarray:
    return 0.5 * np.einsum("ij,ij->i", X, X)


def exact_graph(X: np.ndarray, k: int) -> Graph:
    """Exact ``k`` nearest other rows (euclidean; on unit rows the same order as cosine)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    hs = _half_sq(X)
    idx = np.empty((n, k), dtype=np.int32)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        S = X[s:e] @ X.T - hs[None, :]  # larger = nearer
        S[np.arange(e - s), np.arange(s, e)] = -np.inf
        idx[s:e] = _top_k(S, k)[0]
    return Graph(idx, {"neighbours": "exact"})


@dataclass(frozen=True)
class Axes:
    """Principal axes of the pooled rows (fitted on a seeded sample, labels unseen)."""

    mean: np.ndarray  # (d,) float32
    variances: np.ndarray  # (r,) float64, largest first
    vectors: np.ndarray  # (d, r) float32

    def project(self, X: np.ndarray, dims: int, scale: bool = False) -> np.ndarray:
        """(N, dims) scores of ``X`` on the first ``dims`` axes (unit variance with
        ``scale``), in blocks (no centred copy of ``X``)."""
        W = self.vectors[:, :dims]
        if scale:
            W = W / np.sqrt(self.variances[:dims]).astype(np.float32)
        W = np.ascontiguousarray(W, dtype=np.float32)
        shift = self.mean @ W
        out = np.empty((X.shape[0], W.shape[1]), dtype=np.float32)
        for s in range(0, X.shape[0], 65_536):
            np.subtract(X[s:s + 65_536] @ W, shift, out=out[s:s + 65_536])
        return out


def principal_axes(X: np.ndarray, dims: int, rng: np.random.Generator,
                   rows: int = 20_000) -> Axes:
    """The first ``dims`` principal axes of a seeded sample of at most ``rows`` rows of
    ``X`` (float32 products, the eigen-decomposition in float64)."""
    r = max(1, min(dims, X.shape[1], X.shape[0] - 1))
    S = X if X.shape[0] <= rows else \
        X[np.sort(rng.choice(X.shape[0], size=rows, replace=False))]
    S = np.asarray(S, dtype=np.float32)
    mean = S.mean(axis=0, dtype=np.float64).astype(np.float32)
    S = S - mean
    cov = (S.T @ S).astype(np.float64) / max(S.shape[0] - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:r]
    return Axes(mean, np.maximum(vals[order], 1e-12),
                np.ascontiguousarray(vecs[:, order], dtype=np.float32))


def _reduce(X: np.ndarray, dims: int, rng: np.random.Generator,
            axes: Axes | None = None) -> np.ndarray:
    """Rows on the first ``dims`` principal components of a seeded sample of them."""
    if X.shape[1] <= dims:
        return np.ascontiguousarray(X, dtype=np.float32)
    if axes is None or axes.vectors.shape[1] < dims:
        axes = principal_axes(X, dims, rng)
    return axes.project(X, dims)


def _assign(Z: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Nearest centroid of every row (euclidean)."""
    hc = _half_sq(C)
    out = np.empty(Z.shape[0], dtype=np.int64)
    for s in range(0, Z.shape[0], 16_384):
        out[s:s + 16_384] = np.argmax(Z[s:s + 16_384] @ C.T - hc, axis=1)
    return out


def _kmeans(Z: np.ndarray, n_cells: int, rng: np.random.Generator, iters: int = 6) -> np.ndarray:
    """Centroids of a seeded k-means on a sample of ``Z`` (euclidean)."""
    from scipy import sparse

    T = Z[np.sort(rng.choice(Z.shape[0], size=min(Z.shape[0], 32 * n_cells), replace=False))]
    C = T[rng.choice(T.shape[0], size=n_cells, replace=False)].copy()
    for _ in range(iters):
        a = _assign(T, C)
        onehot = sparse.csr_matrix((np.ones(a.size, dtype=np.float32), (a, np.arange(a.size))),
                                   shape=(n_cells, a.size))
        counts = np.bincount(a, minlength=n_cells)
        sums = onehot @ T
        full = counts > 0
        C[full] = sums[full] / counts[full, None]
    return C


#: Above this many cells, the cells are found by a two-level k-means (one k-means of about
#: sqrt(cells) groups, then one per group), so finding them stays near-linear in the rows.
FLAT_CELLS = 1024


def _cells(Z: np.ndarray, n_cells: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, cell of every row) of about ``n_cells`` k-means cells of ``Z``."""
    if n_cells <= FLAT_CELLS:
        C = _kmeans(Z, n_cells, rng)
        return C, _assign(Z, C)
    top = int(np.sqrt(n_cells))
    group = _assign(Z, _kmeans(Z, top, rng))
    cents, cell = [], np.empty(Z.shape[0], dtype=np.int64)
    start = 0
    for g in range(top):
        rows = np.flatnonzero(group == g)
        if rows.size == 0:
            continue
        sub = int(min(rows.size, max(1, round(rows.size / CELL_ROWS))))
        C = _kmeans(Z[rows], sub, rng) if sub > 1 else Z[rows].mean(axis=0, keepdims=True)
        cell[rows] = start + (_assign(Z[rows], C) if sub > 1 else 0)
        cents.append(C)
        start += C.shape[0]
    return np.concatenate(cents), cell


def _nearest_cells(C: np.ndarray, probes: int) -> np.ndarray:
    """(cells, probes) the nearest centroids of each centroid (itself first, in blocks)."""
    hc = _half_sq(C)
    out = np.empty((C.shape[0], probes), dtype=np.int64)
    for s in range(0, C.shape[0], 1024):
        S = C[s:s + 1024] @ C.T - hc[None, :]
        S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = np.inf  # itself first
        out[s:s + 1024] = _top_k(S, probes)[0]
    return out


def approximate_graph(X: np.ndarray, k: int, seed: int, axes: Axes | None = None) -> Graph:
    """Inverted-file neighbours in the principal-component space (see the module docstring)."""
    import numba

    from ..core.threads import for_machine, limited

    workers = for_machine()
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(workers, numba.config.NUMBA_NUM_THREADS)))
    try:
        with limited(workers):
            return _approximate_graph(X, k, seed, axes)
    finally:
        numba.set_num_threads(before)


def _approximate_graph(X: np.ndarray, k: int, seed: int, axes: Axes | None) -> Graph:
    rng = np.random.default_rng([seed, 7])
    n = X.shape[0]
    # the builder sees the rows in an order unrelated to the sides
    perm = rng.permutation(n)
    Z = _reduce(X, REDUCED_DIMS, rng, axes)
    C, cell = _cells(Z[perm], max(2, n // CELL_ROWS), rng)
    n_cells = C.shape[0]
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=n_cells))])
    probes = min(PROBES, n_cells)
    nearest = _nearest_cells(C, probes)
    # rows sorted by cell: a cell and its candidates are slices
    rows_of = perm[order]  # caller's row number of each sorted position
    F = Z[rows_of]
    del Z
    idx = _search(F, bounds, nearest, k)
    out = np.empty((n, k), dtype=np.int32)
    out[rows_of] = rows_of[idx]  # back to the caller's row numbers
    recall = _recall(X, out, rng)
    return Graph(out, {
        "neighbours": "approximate",
        "search": f"inverted file on {F.shape[1]} principal components: {n_cells} k-means "
                  f"cells, each row ranked against the rows of its own and the {probes - 1} "
                  f"nearest cells",
        "recall": round(recall, 3), "recall_rows": int(min(CHECK_ROWS, n))}, rows_of)


def _search(F: np.ndarray, bounds: np.ndarray, nearest: np.ndarray, k: int) -> np.ndarray:
    """(N, k) positions in ``F`` (rows sorted by cell, cell ``c`` = ``bounds[c]:bounds[c+1]``)
    of each row's ``k`` nearest other rows among its cell's and the ``nearest`` cells' rows."""
    from ..core.preprocess.layout import top_k_rows

    hs = _half_sq(F)
    idx = np.empty((F.shape[0], k), dtype=np.int64)
    for c in range(len(bounds) - 1):
        lo, hi = bounds[c], bounds[c + 1]
        if hi == lo:
            continue
        cells = [c] + [o for o in nearest[c] if o != c]
        pos = np.concatenate([np.arange(bounds[o], bounds[o + 1]) for o in cells])
        S = F[lo:hi] @ F[pos].T  # the cell's own rows first
        S -= hs[pos][None, :]  # larger = nearer
        S[np.arange(hi - lo), np.arange(hi - lo)] = -np.inf
        kk = min(k, pos.size - 1)
        nb = pos[top_k_rows(S, kk)[0]]
        if kk < k:  # a tiny neighbourhood: repeat the farthest found
            nb = np.concatenate([nb, np.repeat(nb[:, -1:], k - kk, axis=1)], axis=1)
        idx[lo:hi] = nb
    return idx


def _recall(X: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> float:
    """Share of the exact neighbours (in the full space) of seeded rows that ``idx`` found."""
    from ..core.preprocess.layout import top_k_rows

    k = idx.shape[1]
    rows = np.sort(rng.choice(X.shape[0], size=min(CHECK_ROWS, X.shape[0]), replace=False))
    Q = np.ascontiguousarray(X[rows], dtype=np.float32)
    S = np.empty((rows.size, X.shape[0]), dtype=np.float32)
    for s in range(0, X.shape[0], 65_536):
        B = X[s:s + 65_536]
        np.subtract(Q @ B.T, _half_sq(B)[None, :], out=S[:, s:s + 65_536])
    S[np.arange(rows.size), rows] = -np.inf
    truth = top_k_rows(S, k)[0]
    return float(np.mean([np.intersect1d(a, b).size / k for a, b in zip(idx[rows], truth)]))


def pooled_graph(X: np.ndarray, k: int, seed: int, axes: Axes | None = None) -> Graph:
    """The ``k``-nearest-neighbour graph of the pooled rows ``X`` (baseline rows first);
    ``axes``: principal axes of ``X`` already fitted (labels unseen), for the search."""
    k = int(min(k, X.shape[0] - 1))
    if X.shape[0] > EXACT_MAX_ROWS:
        return approximate_graph(X, k, seed, axes)
    # ties (duplicate rows) are broken by position: shuffle first, so the order that breaks
    # them is unrelated to the sides (baseline rows come first in ``X``)
    perm = np.random.default_rng([seed, 11]).permutation(X.shape[0])
    g = exact_graph(X[perm], k)
    idx = np.empty_like(g.idx)
    idx[perm] = perm[g.idx]
    return Graph(idx, g.details)
