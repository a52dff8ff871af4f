"""A run's map (x, y[, z] per member) and the one PCA (:func:`principal_components`).

Two kinds of map, both with ``transform(X)`` for rows that come later (the rows a
sampled run streams, the rows of assign runs based on the run):

- :class:`GraphMap` (``kind = 'graph'``), for pipelines that build a neighbour graph
  (``algorithm := 'auto'`` on high-dimensional input, a ``umap`` preprocessing step):
  a 2-D (3-D) layout of that SAME graph (:func:`graph_layout`: UMAP's objective,
  started from the clustering embedding, :func:`map_epochs` epochs, seeded). New rows
  land at the similarity-weighted mean of the map positions of their
  :data:`PLACE_NEIGHBORS` nearest reference rows (a seeded sample of
  :data:`REFERENCE_ROWS` of the fitted rows, stored with the run), looked for among
  the references nearest the same centroid: what umap-learn's ``transform`` does
  before its optimisation, kept inside the row's cluster.
- :class:`Projection` (``kind = 'pca'``), every other pipeline: PCA of the
  (normalised) vectors. Fitted on at most :data:`FIT_SAMPLE` seeded rows and applied
  to all rows in chunks, so memory stays bounded on millions of rows. Inputs with
  fewer rows or dimensions than asked are zero-padded.

And :class:`Scores`, standardized principal-component scores, on which the drift
methods ``energy``, ``wasserstein`` and ``kl`` compare two sides.

>>> reduce_coordinates(np.eye(3, dtype=np.float32), dimensions=2, seed=0).shape
(3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .algorithms._base import random_state

#: Rows the PCA is fitted on (seeded sample above). A 2-D/3-D projection for
#: plotting is settled by far fewer rows: 100k x 384 took 3.7 s with 100k rows,
#: 0.9 s with 20k, coordinates correlating 0.998-0.999 (busy machine).
FIT_SAMPLE = 20_000
_CHUNK_ROWS = 65_536


def principal_components(X: np.ndarray, k: int, exact: bool = False
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """PCA of the rows of ``X`` (n, d): (mean (d,), components (k, d) largest variance
    first, their variances (k,), the total variance).

    With more rows than columns (and not ``exact``) by eigendecomposition of the d x d
    covariance: one float32 gemm on every BLAS thread, the eigensolver on ONE thread
    (OpenBLAS's threaded LAPACK on a 384 x 384 matrix took 0.07-2.2 s on the busy 2-core
    machine, single-threaded 0.02-0.04 s). Otherwise the exact float64 SVD of the centered
    rows, on one thread (threaded, a 1,500 x 384 SVD took 13 s at load 20; single-threaded
    0.1-0.3 s). Signs follow scikit-learn's ``svd_flip`` convention (largest-magnitude
    loading positive), so results are deterministic.
    """
    from .threads import limited

    n, d = X.shape
    if exact or n < d:
        X64 = np.asarray(X, dtype=np.float64)
        mean = X64.mean(axis=0)
        with limited(1):
            _, s, Vt = np.linalg.svd(X64 - mean, full_matrices=False)
        comps, var = Vt[:k], s**2 / max(n - 1, 1)
    else:
        mean = X.mean(axis=0, dtype=np.float64)
        Xc = X - mean.astype(np.float32)
        cov = (Xc.T @ Xc).astype(np.float64)
        with limited(1):
            w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1]
        comps, var = v[:, order[:k]].T, np.maximum(w[order], 0.0) / max(n - 1, 1)
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    return mean, comps * np.where(signs == 0, 1.0, signs)[:, None], var[:k], float(var.sum())


class Projection:
    """A PCA projection fitted once and applied to batches (streamed runs)."""

    kind = "pca"

    def __init__(self, X_fit: np.ndarray, dimensions: int, seed: int):
        X = np.asarray(X_fit, dtype=np.float32)
        n, d = X.shape
        self.dimensions = int(dimensions)
        # n rows span at most n - 1 centered directions
        self.k = min(self.dimensions, d, n - 1)
        self.W = self.mean = None
        if self.k < 1:
            return
        mean, comps, _, _ = principal_components(X, self.k)  # exact SVD when n < d
        self.W = np.ascontiguousarray(comps.T, dtype=np.float32)
        self.mean = mean.astype(np.float32)

    def transform(self, X: np.ndarray, centroids: np.ndarray | None = None) -> np.ndarray:
        """Map positions of rows (n, d); ``centroids`` is for :class:`GraphMap`."""
        out = np.zeros((X.shape[0], self.dimensions), dtype=np.float32)
        if self.W is not None:
            shift = self.mean @ self.W  # (x - mean) W without an (n, d) temporary
            for start in range(0, X.shape[0], _CHUNK_ROWS):
                part = np.asarray(X[start:start + _CHUNK_ROWS], dtype=np.float32)
                out[start:start + _CHUNK_ROWS, : self.k] = part @ self.W - shift
        return out


    @property
    def input_dims(self) -> int | None:
        """Width of the vectors it takes (None: it maps everything to zeros)."""
        return None if self.W is None else int(self.W.shape[0])

    def describe(self) -> dict:
        return {"kind": "pca", "dimensions": self.dimensions}

    def as_row(self) -> dict:
        """The projection as a ``duckcluster.projections`` row (without run and name)."""
        return {"kind": "pca", "dimensions": self.dimensions,
                "mean": [] if self.mean is None else self.mean.tolist(),
                "components": [] if self.W is None else self.W.T.tolist()}

    @classmethod
    def from_row(cls, dimensions: int, mean, components) -> "Projection":
        """A stored projection (:meth:`as_row`), ready to :meth:`transform`."""
        self = cls.__new__(cls)
        self.dimensions = int(dimensions)
        comps = np.asarray(components, dtype=np.float32)
        self.k = int(comps.shape[0]) if comps.size else 0
        self.W = np.ascontiguousarray(comps.T) if self.k else None
        self.mean = np.asarray(mean, dtype=np.float32) if self.k else None
        return self


def fit_projection(X_norm: np.ndarray, dimensions: int, seed: int) -> Projection:
    """PCA fitted on at most :data:`FIT_SAMPLE` seeded rows of ``X_norm``."""
    X = np.asarray(X_norm, dtype=np.float32)
    fit_rows = X
    if X.shape[0] > FIT_SAMPLE:
        rng = np.random.default_rng(random_state(seed))
        fit_rows = X[np.sort(rng.choice(X.shape[0], size=FIT_SAMPLE, replace=False))]
    return Projection(fit_rows, dimensions, seed)


def reduce_coordinates(X_norm: np.ndarray, dimensions: int, seed: int) -> np.ndarray:
    """Project rows (n, d) to float32 (n, dimensions) with PCA; deterministic for a seed.

    Components beyond ``min(n - 1, d)`` carry no variance and are zeros.
    """
    return fit_projection(X_norm, dimensions, seed).transform(X_norm)


#: Fitted rows kept with a graph-map run as references for placing later rows (seeded
#: sample). Placing costs one (rows x REFERENCE_ROWS) product per batch.
REFERENCE_ROWS = 2048
#: A later row lands at the weighted mean of this many nearest references (umap-learn's
#: transform uses the graph's n_neighbors, 15): measured on docstrings8 fitted on 80 %,
#: the share of held-out rows whose nearest fitted row on the map has their category
#: was 0.703 / 0.694 / 0.669 / 0.656 with 3 / 5 / 10 / 15 among all references (a full
#: re-run: 0.765).
PLACE_NEIGHBORS = 5
# No optimisation after the mean: 10-30 epochs of UMAP's objective against the fixed
# references (umap-learn's transform) measured worse on docstrings8 (same category
# 0.61-0.69 vs 0.690, same cluster 0.66-0.81 vs 0.871; learning rates 0.1-0.25).
#: Minimum distance of the map's layout (umap-learn's default for pictures; the
#: clustering reduction uses 0, which packs clusters into dots).
MAP_MIN_DIST = 0.1
#: a, b of UMAP's curve 1 / (1 + a d^2b) for spread 1 and :data:`MAP_MIN_DIST` (what
#: ``preprocess._ab_params`` fits; constants here so a map does not import scipy.optimize)
MAP_AB = (1.5769434602697652, 0.8950608778515733)
#: Above this many rows the map's layout runs on every core (the clustering's UMAP step
#: switches at the same count, ``preprocess.PARALLEL_LAYOUT_MIN_ROWS``; a test pins them)
MAP_PARALLEL_MIN_ROWS = 20_000
#: Learning rate the map's layout starts at: it starts from the clustering embedding,
#: already close, so half of umap-learn's 1.0 (measured: higher trustworthiness at
#: the same epochs on docstrings8, bench/maps.py).
MAP_ALPHA = 0.5


def map_epochs(n: int) -> int:
    """Layout epochs of a graph map: 20 up to 20k rows, then ``20 * 20k / n``, never
    under 5 (each epoch costs one pass over the graph's edges; the layout starts from
    the clustering embedding, which already holds the structure: bench/maps.py)."""
    return int(max(5, min(20, round(20 * 20_000 / max(n, 1)))))


def graph_layout(graph, embedding: np.ndarray, dimensions: int, seed: int,
                 n_epochs: int | None = None) -> np.ndarray:
    """A ``dimensions``-D layout (float32, n x dimensions) of the neighbour ``graph``
    (UMAP's pruned fuzzy graph) started from the PCA of the clustering ``embedding``
    that graph produced; deterministic for a seed."""
    from .preprocess.layout import optimize_layout  # not .preprocess: it imports this module

    E = np.asarray(embedding, dtype=np.float32)
    n = E.shape[0]
    k = min(dimensions, E.shape[1], max(n - 1, 0))
    init = np.zeros((n, dimensions), dtype=np.float32)
    if k >= 1:
        mean, comps, _, _ = principal_components(E, k)
        init[:, :k] = (E - mean.astype(np.float32)) @ comps.T.astype(np.float32)
    if k < dimensions:  # an embedding narrower than the map: small seeded spread
        rng = np.random.default_rng(random_state(seed))
        init[:, k:] = rng.normal(scale=0.01, size=(n, dimensions - k))
    if n < 3 or graph.nnz == 0:
        return init
    init *= 10.0 / max(float(np.abs(init).max()), 1e-12)
    a, b = MAP_AB
    epochs = n_epochs if n_epochs is not None else map_epochs(n)
    out = optimize_layout(np.ascontiguousarray(init), graph, epochs, a, b, seed,
                          initial_alpha=MAP_ALPHA, parallel=n > MAP_PARALLEL_MIN_ROWS)
    return np.asarray(out, dtype=np.float32)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _membership(dist: np.ndarray, n_iter: int = 16) -> np.ndarray:
    """UMAP's fuzzy membership of a row to its k nearest references (``dist`` (n, k),
    ascending): ``exp(-(d - rho) / sigma)`` with rho the nearest distance and sigma
    such that the memberships sum to log2(k) (umap-learn's ``smooth_knn_dist``,
    local_connectivity 1), vectorized: bisection on log sigma in [-14, 1.5] (cosine
    distances are at most 2), 16 steps, to 2.4e-4 in log sigma."""
    n, k = dist.shape
    d = np.asarray(dist, dtype=np.float32)
    gap = np.maximum(d - d[:, 0:1], 0.0)
    rest = gap[:, 1:]
    target = np.float32(np.log2(max(k, 2)))
    lo = np.full(n, -14.0, dtype=np.float32)
    hi = np.full(n, 1.5, dtype=np.float32)
    for _ in range(n_iter):
        mid = (lo + hi) * np.float32(0.5)
        over = np.exp(-rest / np.exp(mid)[:, None]).sum(axis=1) > target
        hi = np.where(over, mid, hi)
        lo = np.where(over, lo, mid)
    sigma = np.exp((lo + hi) * np.float32(0.5))
    return np.exp(-gap / sigma[:, None])


class GraphMap:
    """A graph layout's map: reference rows (unit vectors) and their map positions;
    :meth:`transform` places any row among them."""

    kind = "graph"

    def __init__(self, references: np.ndarray, positions: np.ndarray, dimensions: int,
                 info: dict | None = None):
        self.references = _unit(references)
        self.positions = np.asarray(positions, dtype=np.float32)
        self.dimensions = int(dimensions)
        self.info = dict(info or {})

    @classmethod
    def from_layout(cls, X_fit: np.ndarray, layout: np.ndarray, seed: int,
                    info: dict | None = None) -> "GraphMap":
        """References: a seeded sample of at most :data:`REFERENCE_ROWS` fitted rows."""
        n = X_fit.shape[0]
        keep = np.arange(n)
        if n > REFERENCE_ROWS:
            rng = np.random.default_rng([random_state(seed), 0x4D4150])
            keep = np.sort(rng.choice(n, size=REFERENCE_ROWS, replace=False))
        return cls(X_fit[keep], layout[keep], layout.shape[1], info)

    @property
    def input_dims(self) -> int | None:
        return int(self.references.shape[1]) if len(self.references) else None

    def describe(self) -> dict:
        return {"kind": "graph", "dimensions": self.dimensions, **self.info,
                "reference_rows": int(len(self.references)),
                "placing": f"weighted mean of the {PLACE_NEIGHBORS} nearest references "
                           "by the row's nearest centroid"}

    def transform(self, X: np.ndarray, centroids: np.ndarray | None = None) -> np.ndarray:
        """Map positions of rows (n, d): the weighted mean of the positions of their
        :data:`PLACE_NEIGHBORS` nearest references. With the run's ``centroids`` (k, d),
        a row's neighbours are looked for among the references nearest the same
        centroid (the row lands in its cluster's region, and the search costs about
        ``k + 2,048 / k`` dot products a row instead of 2,048). In chunks of
        :data:`_CHUNK_ROWS` rows: memory stays bounded whatever ``n``."""
        m = len(self.references)
        out = np.zeros((X.shape[0], self.dimensions), dtype=np.float32)
        if m == 0 or X.shape[0] == 0:
            return out
        grouped = centroids is not None and len(centroids) >= 2
        groups = self._groups(centroids) if grouped else [(np.arange(m), self.references)]
        for s in range(0, X.shape[0], _CHUNK_ROWS):
            part = np.asarray(X[s:s + _CHUNK_ROWS], dtype=np.float32)
            # rankings need no unit rows; the similarities are divided by the norms after
            norms = np.sqrt(np.einsum("ij,ij->i", part, part))
            norms[norms == 0] = 1.0
            near = np.argmax(part @ centroids.T, axis=1) if grouped else \
                np.zeros(len(part), dtype=np.int64)
            for g in np.unique(near):
                rows = np.flatnonzero(near == g)
                idx, R = groups[g] if len(groups[g][0]) >= PLACE_NEIGHBORS else \
                    (np.arange(m), self.references)
                out[s + rows] = self._place(part[rows], norms[rows], idx, R)
        return out

    def _groups(self, C: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(indices, rows) of the references by their nearest centroid (cached for the
        last ``C``)."""
        key = (id(C), C.shape)
        if getattr(self, "_group_key", None) != key:
            near = np.argmax(self.references @ np.asarray(C, dtype=np.float32).T, axis=1)
            self._group_key = key
            self._group_list = [(i, np.ascontiguousarray(self.references[i]))
                                for i in (np.flatnonzero(near == g) for g in range(len(C)))]
        return self._group_list

    def _place(self, Xq: np.ndarray, norms: np.ndarray, idx: np.ndarray, R: np.ndarray
               ) -> np.ndarray:
        S = Xq @ R.T
        k = min(PLACE_NEIGHBORS, len(idx))
        rows = np.arange(S.shape[0])
        # the k best by repeated argmax: k passes over S beat argpartition's per-row
        # selection (5.2 s -> about 2 s for 16k rows x 2,048 references, busy machine)
        best = np.empty((S.shape[0], k), dtype=np.int64)
        sims = np.empty((S.shape[0], k), dtype=np.float32)
        for j in range(k):
            best[:, j] = np.argmax(S, axis=1)
            sims[:, j] = S[rows, best[:, j]]
            S[rows, best[:, j]] = -np.inf
        w = _membership(np.maximum(1.0 - sims / norms[:, None], 0.0))
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        return np.einsum("nk,nkd->nd", w, self.positions[idx[best]])

    def as_row(self) -> dict:
        """As ``duckcluster.projections`` + ``duckcluster.map_references`` rows."""
        return {"kind": "graph", "dimensions": self.dimensions, "mean": [],
                "components": [], "references": self.references,
                "positions": self.positions}


def graph_map(X_fit: np.ndarray, graph, embedding: np.ndarray, dimensions: int,
              seed: int) -> tuple[GraphMap, np.ndarray]:
    """The map of a graph pipeline: (the :class:`GraphMap`, the fitted rows' positions)."""
    epochs = map_epochs(X_fit.shape[0])
    layout = graph_layout(graph, embedding, dimensions, seed, epochs)
    info = {"from": f"the clustering's neighbour graph ({graph.shape[0]:,} rows)",
            "init": f"PCA of the {embedding.shape[1]}-D clustering embedding",
            "n_epochs": epochs, "min_dist": MAP_MIN_DIST}
    return GraphMap.from_layout(X_fit, layout, seed, info), layout


@dataclass(frozen=True)
class Scores:
    """x -> ((x - mean) @ components.T) / scale: (k,) standardized component scores."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal, PC1 first
    scale: np.ndarray  # (k,) standard deviation of each component over the fitted rows
    explained_variance_ratio: np.ndarray  # (k,)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T) / self.scale


def fit_scores(X: np.ndarray, n_components: int) -> Scores:
    """Standardized scores of the first ``n_components`` of the exact PCA of ``X`` (n, d)."""
    k = max(1, min(n_components, X.shape[1], X.shape[0] - 1))
    mean, comps, var, total = principal_components(X, k, exact=True)
    scale = np.sqrt(var)
    return Scores(mean=mean, components=comps, scale=np.where(scale > 0, scale, 1.0),
                  explained_variance_ratio=var / total if total > 0 else np.zeros(k))
