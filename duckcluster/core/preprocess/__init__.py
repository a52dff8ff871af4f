"""Preprocessing before clustering: an ordered chain of array -> array steps.

A chain is data: ``(("whitening", {...}), ("umap", {...}))``, validated once by
:func:`validate_steps` and applied by :func:`run_preprocessing`. Every step
takes float32 rows of shape (n, d) and returns float32 rows of shape (n, d').

Methods (defaults follow the seed's recommendations for clustering):

- ``whitening``: soft ZCA, ``X_c @ U diag((s + regularization)^-1/2) U^T``; it
  decorrelates dimensions but stays in the original coordinates. With fewer rows
  than dimensions it is computed in the rows' span (an n x d SVD, the same result)
  instead of from the d x d covariance.
- ``umap``: UMAP to ``n_components`` (50), ``n_neighbors`` 30, ``min_dist`` 0.0,
  metric cosine, ``n_epochs`` umap-learn's count (:func:`umap_epochs`; ``algorithm
  'auto'`` passes its own, :func:`auto_epochs`). umap-learn's method
  (fuzzy simplicial set, spectral init, its layout objective) computed here
  without importing umap-learn: kNN graph exact up to
  :data:`EXACT_KNN_MAX_ROWS` rows, then IVF-style (:func:`_ivf_knn`, its recall
  checked on seeded rows: :func:`_checked_ivf_knn`) up to
  :data:`IVF_KNN_MAX_ROWS`, then pynndescent; inputs wider than
  :data:`UMAP_PCA_DIMS` are first reduced to that many with PCA above
  :data:`EXACT_KNN_MAX_ROWS`. The layout (:mod:`._layout`) is seeded and the
  same run after run, and runs on every core above
  :data:`PARALLEL_LAYOUT_MIN_ROWS` rows.
- ``pca``: PCA to ``n_components`` (50), optional whitening.
- ``none``: returns the rows unchanged.

Clamping to what the data allows (documented, not an error):
``pca``: ``n_components <= min(n, d)``; ``umap``: ``n_components <= min(d, n - 2)``
(spectral initialisation needs ``n_components + 1 < n``) and
``n_neighbors <= n - 1``. UMAP needs at least 4 rows; fewer raise DataError.

>>> steps = validate_steps([{"method": "pca", "n_components": 2}])
>>> run_preprocessing(np.eye(4, dtype=np.float32), steps, seed=0).shape
(4, 2)
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._errors import DataError, SpecError, unknown_name
from ..._params import Param, validate_params
from ..algorithms._base import random_state

UMAP_MIN_ROWS = 4
#: Up to this many rows UMAP gets an exact kNN graph computed here with
#: vectorized brute force. umap-learn would otherwise call its numba metric once
#: per pair from Python below 4,096 rows (6.8 s for 2k rows) or compile
#: pynndescent above; measured first-fit time in a fresh process for 2k x 64:
#: 17 s -> 6 s.
EXACT_KNN_MAX_ROWS = 20_000
#: Above :data:`EXACT_KNN_MAX_ROWS` rows, inputs wider than this are reduced to
#: this many dimensions with PCA before UMAP builds its (NNDescent) kNN graph.
#: Measured at 100k x 384 after whitening (busy machine): kNN graph 163 s -> 28 s,
#: ARI against the generating clusters 0.92 -> 1.00 (that run also had 100
#: epochs; whitening spreads weight over noise directions, the leading
#: components keep the cluster structure).
UMAP_PCA_DIMS = 50


@dataclass(frozen=True)
class Preprocessor:
    """One preprocessing method: params as data and a pure transform."""

    name: str
    params: Mapping[str, Param]
    fit_transform: Callable[[np.ndarray, dict, int], np.ndarray]
    doc: str


def _none(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    return X


def _whitening(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    n, d = X.shape
    if n == 0:
        return X
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    Xc = X64 - mean
    if n < d:
        # Fewer rows than dimensions: the same soft ZCA in the rows' span. With
        # Xc = P S V^T, cov = V (S^2 / (n - 1)) V^T and Xc has no part outside V, so
        # Xc @ W = P S (S^2 / (n - 1) + reg)^-1/2 V^T: an n x d SVD, O(n^2 d), instead
        # of a d x d covariance and its O(d^3) eigh (20 rows of 20,000-d: > 14 minutes
        # and 6.6 GB before).
        P, sv, Vt = np.linalg.svd(Xc, full_matrices=False)
        scale = sv / np.sqrt(sv ** 2 / max(n - 1, 1) + p["regularization"])
        return ((P * scale) @ Vt).astype(np.float32)
    cov = (Xc.T @ Xc) / max(n - 1, 1)
    s, U = np.linalg.eigh(cov)
    s = np.clip(s, 0.0, None)  # eigh can return tiny negatives for singular cov
    W = (U * (1.0 / np.sqrt(s + p["regularization"]))) @ U.T
    return (Xc @ W).astype(np.float32)


def _pca(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    """``PCA(n_components, whiten)`` scores by the numpy PCA of core/projection.py
    (exact; signs by svd_flip's convention; scikit-learn's PCA took its randomized
    solver for e.g. 2,000 x 384 rows). Importing scikit-learn for it cost 1-1.2 s of a
    fresh process (4-7 s on the busy machine): the UMAP step's PCA initialisation made
    the default pipeline import it."""
    from ..projection import principal_components

    n, d = X.shape
    k = min(p["n_components"], n, d)
    if k < 1:
        return np.zeros((n, max(k, 0)), dtype=np.float32)
    X = np.asarray(X, dtype=np.float64 if X.dtype == np.float64 else np.float32)
    mean, comps, var, _ = principal_components(X, k, exact=n < 10 * d)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # whiten=True divides by zero variance on rank-deficient input
        warnings.simplefilter("ignore", RuntimeWarning)
        out = (np.asarray(X, dtype=np.float64) - mean) @ comps.T
        if p["whiten"]:
            out = out / np.sqrt(var)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _umap(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    return umap_with_graph(X, p, seed)[0]


def umap_with_graph(X: np.ndarray, p: dict, seed: int):
    """The ``umap`` step's layout and the neighbour graph it laid out.

    ``p``: the step's validated params (``validate_steps([{"method": "umap", ...}])``).
    Returns ``(Z, graph)``: float32 (n, n_components) rows and the symmetric fuzzy
    graph over the n rows (scipy CSR, float32; the edges too weak to be sampled
    once in the layout's epochs removed, as umap-learn does). ``algorithm := 'auto'``
    chooses its k by the modularity of the candidates on this graph.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    X_in = X  # the rows the graph is over, as given (for the map: capture_graphs)
    n, d = X.shape
    if n < UMAP_MIN_ROWS:
        raise DataError(
            f"umap preprocessing needs at least {UMAP_MIN_ROWS} rows. Got {n}; "
            "remove the umap step or cluster more rows."
        )
    if n > EXACT_KNN_MAX_ROWS and d > UMAP_PCA_DIMS:
        X = _pca(X, {"n_components": UMAP_PCA_DIMS, "whiten": False}, seed)
        d = X.shape[1]
    n_neighbors = min(p["n_neighbors"], n - 1)
    n_components = min(p["n_components"], d, n - 2)
    n_epochs = p["n_epochs"] if p["n_epochs"] is not None else umap_epochs(n)
    if n <= EXACT_KNN_MAX_ROWS:
        idx, dist = _exact_knn(X, n_neighbors, p["metric"])
    elif n <= IVF_KNN_MAX_ROWS and p["metric"] != "manhattan":
        idx, dist = _checked_ivf_knn(X, n_neighbors, p["metric"], seed)
    else:
        idx, dist = _nndescent_knn(X, n_neighbors, p["metric"], seed)
    graph = fuzzy_graph(idx, dist)
    # umap-learn drops edges too weak to be sampled once in n_epochs
    graph.data[graph.data < graph.data.max() / float(n_epochs)] = 0.0
    graph.eliminate_zeros()
    rng = np.random.RandomState(random_state(seed))
    init = _spectral_init(graph, n_components) if n <= SPECTRAL_INIT_MAX_ROWS else None
    if init is None:
        init = _pca(X, {"n_components": n_components, "whiten": False}, seed)
        if init.shape[1] < n_components:  # rank-deficient input: pad
            init = np.hstack([init, np.zeros((n, n_components - init.shape[1]), np.float32)])
    init = init * (10.0 / max(float(np.abs(init).max()), 1e-12))
    init = init + rng.normal(scale=0.0001, size=init.shape)
    span = init.max(0) - init.min(0)
    init = 10.0 * (init - init.min(0)) / np.where(span > 0, span, 1.0)
    a, b = _ab_params(1.0, p["min_dist"])
    from .layout import optimize_layout

    out = optimize_layout(init.astype(np.float32), graph, n_epochs, a, b, seed,
                          parallel=n > PARALLEL_LAYOUT_MIN_ROWS)
    sink = _GRAPHS.get()
    if sink is not None:  # core/projection.py lays the map out on this same graph
        sink.append((graph, out, X_in))
    return np.asarray(out, dtype=np.float32), graph


_GRAPHS: contextvars.ContextVar[list | None] = contextvars.ContextVar("umap_graphs",
                                                                      default=None)


@contextlib.contextmanager
def capture_graphs() -> Iterator[list]:
    """Within it, every ``umap`` step appends ``(graph, embedding, rows)`` to the list it
    yields: the pruned fuzzy graph (scipy CSR, n x n), the layout it produced and the
    (n, d) rows it was given (the plotting map of :mod:`..projection` reuses them instead
    of building a graph again; ``rows`` tells which rows a sampled fit's graph covers)."""
    sink: list = []
    token = _GRAPHS.set(sink)
    try:
        yield sink
    finally:
        _GRAPHS.reset(token)


#: Above this many rows the layout runs on every core (see :mod:`._layout`: each
#: epoch reads the other rows from a snapshot, reproducible whatever the thread
#: count). Up to it, it is umap-learn's single-threaded in-place update: on
#: digits (1.8k rows) the snapshot variant lost 0.04 ARI (0.81 -> 0.77, mean of
#: 10 seeds) while the in-place one matched umap-learn (0.81); at 20k and 100k
#: rows of the benchmark's clusters both gave ARI 1.000.
PARALLEL_LAYOUT_MIN_ROWS = 20_000


#: Above this many rows UMAP's layout starts from PCA, not the spectral
#: embedding of the graph (an eigensolve of the n x n Laplacian: 11.5 s at
#: 100k on a busy machine, same ARI on the benchmark's clusters).
SPECTRAL_INIT_MAX_ROWS = EXACT_KNN_MAX_ROWS


def umap_epochs(n: int) -> int:
    """The ``umap`` step's layout epochs when ``n_epochs`` is not given: umap-learn's
    500 up to 10k rows, then ``500 * 10k / n`` (the same epochs x rows), never under
    50 (250 at 20k rows, 100 at 50k, 50 from 100k).

    Each epoch samples every edge in proportion to its weight, so the layout costs
    ``epochs * edges``. HDBSCAN after the step needs the epochs: it reaches
    umap-learn's ARI with 500 and falls short with 100, while the layout is the
    same algorithm (``python -m bench.umap_parity --cross 500``: either graph into
    either optimiser from the same start, leaf cut within 0.016, k-means within
    0.006). Mean ARI of HDBSCAN's leaf cut over 5-8 seeds (``bench/umap_parity.py``):
    docstrings8 umap(5, 15) 0.241 at 100 epochs, 0.245 at 200, 0.258 at 300 and 500
    (10 seeds: 0.262, umap-learn 0.261); umap(50, 30) 0.253 at 100, 0.262 at 500,
    umap-learn 0.264; packages10 umap(5, 15) 0.148 at 100, 0.161 at 500, umap-learn
    0.160. Above 10k rows (not
    measured against umap-learn, which runs 200 there) the budget stays that of 10k
    rows; from 100k rows it is the 50 epochs with which the benchmark's clusters
    gave ARI 1.000 at 20k and 100k rows, as 200 did.
    """
    return int(max(50, min(500, round(500 * 10_000 / max(n, 1)))))


def auto_epochs(n: int) -> int:
    """``algorithm 'auto'``'s UMAP epochs (it passes them to the ``umap`` step): 100
    up to 10k rows, then ``100 * 10k / n``, never under 50 (so 50 from 20k rows).

    auto clusters the layout with k-means, which does not need the tight islands
    that more epochs make (and HDBSCAN does): k-means told the true k after
    umap(5, 15), mean ARI of 8 seeds, docstrings8 0.567 at 100 epochs, 0.554 at
    200, 0.549 at 300 and 500 (umap-learn 0.558); packages10 0.309 at 100, 0.303
    at 500 (umap-learn 0.306). Digits: HDBSCAN 0.848 at 200 epochs and 0.850 at 100
    (mean of 6 seeds). The layout is 65 % of auto's UMAP at 5k x 384, so 500
    epochs would make the default pipeline several times slower.
    """
    return int(max(50, min(100, round(100 * 10_000 / max(n, 1)))))


#: ``_ab_params``' own curve_fit result for the (spread, min_dist) the defaults use (umap
#: steps and auto: min_dist 0), so a default run does not import scipy.optimize (0.17 s of
#: CPU, about 0.5 s of wall on the busy machine, of every fresh process's first result);
#: tests/test_preprocess.py checks it against curve_fit.
AB_FITTED = {(1.0, 0.0): (1.93280839734315, 0.7904949732233831)}


def _ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """umap-learn's ``find_ab_params``: fit 1 / (1 + a x^2b) to the target curve."""
    known = AB_FITTED.get((float(spread), float(min_dist)))
    return known if known is not None else _fit_ab(spread, min_dist)


def _fit_ab(spread: float, min_dist: float) -> tuple[float, float]:
    from scipy.optimize import curve_fit

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), xv, yv)
    return float(a), float(b)


def fuzzy_graph(idx: np.ndarray, dist: np.ndarray, n_iter: int = 64):
    """UMAP's fuzzy simplicial set from a kNN graph (each row first), vectorized.

    umap-learn's ``smooth_knn_dist`` (local_connectivity 1, bandwidth 1) and
    ``compute_membership_strengths`` for all rows at once, then the fuzzy union
    ``G + G^T - G * G^T``. Same arithmetic as umap-learn, no numba.
    """
    import scipy.sparse

    n, k = idx.shape
    dist = dist.astype(np.float64)
    pos = np.where(dist > 0.0, dist, np.inf)
    rho = pos.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    target = np.log2(k)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    rest = dist[:, 1:]
    active = np.ones(n, dtype=bool)
    for _ in range(n_iter):
        gap = np.maximum(rest[active] - rho[active, None], 0.0)
        psum = np.exp(-gap / mid[active, None]).sum(axis=1)
        done = np.abs(psum - target) < 1e-5
        over = psum > target
        a_idx = np.flatnonzero(active)
        h = hi[a_idx]
        h = np.where(over, mid[a_idx], h)
        low = np.where(over, lo[a_idx], mid[a_idx])
        m = np.where(np.isinf(h), mid[a_idx] * 2.0, (low + h) / 2.0)
        keep = ~done
        hi[a_idx] = h
        lo[a_idx] = low
        mid[a_idx[keep]] = m[keep]
        active[a_idx[done]] = False
        if not active.any():
            break
    mean_row = dist.mean(axis=1)
    floor = np.where(rho > 0.0, 1e-3 * mean_row, 1e-3 * dist.mean())
    sigma = np.maximum(mid, floor)
    vals = np.exp(-np.maximum(dist - rho[:, None], 0.0) / sigma[:, None])
    vals[idx == np.arange(n)[:, None]] = 0.0
    vals[idx < 0] = 0.0
    rows = np.repeat(np.arange(n), k)
    G = scipy.sparse.coo_matrix((vals.ravel(), (rows, np.maximum(idx, 0).ravel())),
                                shape=(n, n)).tocsr()
    G.eliminate_zeros()
    P = G.multiply(G.T)
    return (G + G.T - P).tocsr().astype(np.float32)


def _spectral_init(graph, dim: int) -> np.ndarray | None:
    """umap-learn's spectral initialisation for a connected graph; None otherwise
    (several components, or the eigensolver did not converge: start from PCA)."""
    import scipy.sparse
    import scipy.sparse.csgraph
    import scipy.sparse.linalg

    n = graph.shape[0]
    n_comp, _ = scipy.sparse.csgraph.connected_components(graph, directed=False)
    if n_comp > 1 or dim + 1 >= n:
        return None
    deg = np.asarray(graph.sum(axis=0)).ravel()
    Dm = scipy.sparse.diags(1.0 / np.sqrt(deg))
    L = scipy.sparse.identity(n, format="csr") - Dm @ graph.astype(np.float64) @ Dm
    k = dim + 1
    try:
        vals, vecs = scipy.sparse.linalg.eigsh(
            L, k, which="SM", ncv=max(2 * k + 1, int(np.sqrt(n))), tol=1e-4,
            v0=np.ones(n), maxiter=n * 5)
    except (scipy.sparse.linalg.ArpackError, ValueError):
        return None
    order = np.argsort(vals)[1:k]
    return vecs[:, order].astype(np.float32)


def _nndescent_knn(X: np.ndarray, k: int, metric: str, seed: int):
    """Approximate kNN with pynndescent, umap-learn's settings, all threads.

    pynndescent splits its work by thread index and applies the updates in a
    fixed order, so with a given thread count the graph is the same run after
    run; the thread count is pinned to :data:`NNDESCENT_THREADS` so it is also
    the same on machines with different core counts.
    """
    import numba
    from pynndescent import NNDescent

    n = X.shape[0]
    before = numba.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = NNDescent(
                X, n_neighbors=k, metric=metric, random_state=np.random.RandomState(
                    random_state(seed)),
                n_trees=min(64, 5 + round(n ** 0.5 / 20.0)),
                n_iters=max(5, round(np.log2(n))), max_candidates=60,
                low_memory=True, n_jobs=NNDESCENT_THREADS, compressed=False)
            idx, dist = index.neighbor_graph
    finally:
        numba.set_num_threads(before)
    return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32)


#: Threads of the NNDescent kNN graph (fixed, so the graph is reproducible).
NNDESCENT_THREADS = 2


#: From :data:`EXACT_KNN_MAX_ROWS` to this many rows the kNN graph comes from
#: :func:`_ivf_knn` (numpy and BLAS, nothing to compile); above, pynndescent.
#: Measured at 100k x 50 (PCA of whitened rows), busy machine: IVF 10.4 s,
#: recall 0.989 against the exact graph; NNDescent 10-15 s warm (recall
#: 0.998) plus 20-100 s compiling its kernels in every process (pynndescent
#: does not cache them). HDBSCAN on the UMAP result: ARI 1.000 either way.
IVF_KNN_MAX_ROWS = 200_000
#: Cells probed per query cell by :func:`_ivf_knn` (10: recall 0.83, 20: 0.989,
#: 30: 1.000 at 100k rows; time 7.7 s, 10.4 s, 14.3 s).
IVF_PROBES = 20


def _knn_space(X: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows in the space where a larger ``z_i . z_j - sq_j / 2`` is nearer."""
    Z = X.astype(np.float32)
    if metric == "correlation":
        Z = Z - Z.mean(axis=1, keepdims=True)
    if metric in ("cosine", "correlation"):
        norms = np.linalg.norm(Z, axis=1, keepdims=True)
        Z = Z / np.where(norms > 0, norms, 1.0)
        return Z, np.zeros(len(Z), dtype=np.float32)
    return Z, (Z * Z).sum(axis=1)


def _top_k(Zq, sq_q, Zc, sq_c, k, metric, self_cols):
    """Top ``k`` of candidates ``Zc`` for queries ``Zq`` (query r's own row is
    candidate column ``self_cols[r]``; it comes first). Returns (cols, dist)."""
    S = Zq @ Zc.T
    if metric == "euclidean":
        S -= 0.5 * sq_c[None, :]
    S[np.arange(len(Zq)), self_cols] = np.inf
    from .layout import top_k_rows

    part, sv = top_k_rows(S, min(k, Zc.shape[0]))
    d = np.sqrt(np.maximum(sq_q[:, None] - 2.0 * sv, 0.0)) if metric == "euclidean" \
        else 1.0 - sv
    d[:, 0] = 0.0
    return part, np.maximum(d, 0.0)


def _ivf_knn(X: np.ndarray, k: int, metric: str, seed: int,
             probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN, inverted-file style, in numpy: seeded k-means splits the
    rows into ``sqrt(n)`` cells; each cell's rows are compared (one BLAS
    product) with the rows of the :data:`IVF_PROBES` cells whose centroids are
    nearest its own. Deterministic for a seed; each row first."""
    n = X.shape[0]
    Z, sq = _knn_space(X, metric)
    n_cells = max(1, int(np.sqrt(n)))
    rng = np.random.default_rng(random_state(seed))
    C = Z[np.sort(rng.choice(n, n_cells, replace=False))].copy()
    assign = np.empty(n, dtype=np.int64)
    for _ in range(8):
        csq = 0.5 * (C * C).sum(axis=1) if metric == "euclidean" else 0.0
        for s in range(0, n, 16384):
            assign[s:s + 16384] = np.argmax(Z[s:s + 16384] @ C.T - csq, axis=1)
        counts = np.bincount(assign, minlength=n_cells)
        sums = np.zeros_like(C)
        np.add.at(sums, assign, Z)
        filled = counts > 0
        C[filled] = sums[filled] / counts[filled, None]
        if metric != "euclidean":
            C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    order = np.argsort(assign, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=n_cells))])
    csq = (C * C).sum(axis=1)
    near = C @ C.T - (0.5 * csq[None, :] if metric == "euclidean" else 0.0)
    np.fill_diagonal(near, -np.inf)
    n_probe = min(probes or IVF_PROBES, n_cells)
    others = np.argsort(-near, axis=1, kind="stable")[:, :n_probe - 1]
    idx = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k), dtype=np.float32)
    for c in range(n_cells):
        rows = order[bounds[c]:bounds[c + 1]]
        if rows.size == 0:
            continue
        # the cell's own rows first, so row r of the query block is column r
        cand = np.concatenate([rows] + [order[bounds[o]:bounds[o + 1]] for o in others[c]])
        kk = min(k, cand.size)
        cols, d = _top_k(Z[rows], sq[rows], Z[cand], sq[cand], kk, metric,
                         np.arange(rows.size))
        idx[rows, :kk] = cand[cols]
        dist[rows, :kk] = d
        if kk < k:  # fewer candidates than neighbours: repeat the farthest
            idx[rows, kk:] = idx[rows, kk - 1:kk]
            dist[rows, kk:] = dist[rows, kk - 1:kk]
    return idx, dist


#: The inverted-file search is checked against the exact neighbours of this many
#: seeded rows; below IVF_MIN_RECALL it runs again probing twice as many cells.
IVF_CHECK_ROWS = 256
IVF_MIN_RECALL = 0.9


def _checked_ivf_knn(X: np.ndarray, k: int, metric: str, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ivf_knn`, with its recall measured on :data:`IVF_CHECK_ROWS` seeded
    rows against their exact neighbours (one BLAS product, ~50 ms at 100k rows)
    and the probes doubled until it reaches :data:`IVF_MIN_RECALL` or every cell is
    probed (exact). Clustered data pass at once (measured 0.989 at 100k); data
    with little structure (random Gaussians: 0.29-0.69) get a usable graph
    instead of a silently poor one, at the cost of more probes."""
    n = X.shape[0]
    rows = np.sort(np.random.default_rng(random_state(seed)).choice(
        n, size=min(IVF_CHECK_ROWS, n), replace=False))
    Z, sq = _knn_space(X, metric)
    truth, _ = _top_k(Z[rows], sq[rows], Z, sq, k, metric, rows)
    n_cells = max(1, int(np.sqrt(n)))
    probes = IVF_PROBES
    while True:
        idx, dist = _ivf_knn(X, k, metric, seed, probes=probes)
        found = np.mean([len(set(a[1:]) & set(b[1:])) / max(k - 1, 1)
                         for a, b in zip(idx[rows], truth)])
        if found >= IVF_MIN_RECALL or probes >= n_cells:
            return idx, dist
        probes = min(2 * probes, n_cells)


def _exact_knn(X: np.ndarray, k: int, metric: str,
               block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours, each row first (as UMAP expects), blocked BLAS.

    numpy instead of scikit-learn's NearestNeighbors: the same neighbours
    without importing sklearn.neighbors (about 1 s in a fresh process).
    Distances: cosine ``1 - cos``, euclidean, correlation ``1 - r``; manhattan
    goes through scikit-learn.
    """
    n = X.shape[0]
    if metric == "manhattan":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
        dist, idx = nn.kneighbors(X)
        return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32)
    Z, sq = _knn_space(X, metric)
    idx = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        cols, d = _top_k(Z[s:e], sq[s:e], Z, sq, k, metric, np.arange(s, e))
        idx[s:e] = cols
        dist[s:e] = d
    return idx, dist


PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor(
            name="whitening",
            params={
                "regularization": Param(
                    float, 1e-5, low=0.0, low_open=True,
                    doc="added to each covariance eigenvalue (soft ZCA)",
                ),
            },
            fit_transform=_whitening,
            doc="Soft ZCA whitening: decorrelate dimensions, keep the coordinate space.",
        ),
        Preprocessor(
            name="umap",
            params={
                "n_components": Param(int, 50, low=1, doc="output dimensions"),
                "n_neighbors": Param(int, 30, low=2, doc="local neighbourhood size"),
                "min_dist": Param(float, 0.0, low=0.0, high=1.0, doc="0 packs clusters tight"),
                "n_epochs": Param(int, None, low=10, high=2000, nullable=True,
                                  doc="optimisation epochs; None = 500 up to 10k rows "
                                  "(umap-learn's), then fewer (50 from 100k rows)"),
                "metric": Param(
                    str, "cosine", choices=("cosine", "euclidean", "manhattan", "correlation"),
                    doc="input distance",
                ),
            },
            fit_transform=_umap,
            doc="UMAP reduction that keeps local neighbourhoods (helps HDBSCAN).",
        ),
        Preprocessor(
            name="pca",
            params={
                "n_components": Param(int, 50, low=1, doc="output dimensions"),
                "whiten": Param(bool, False, doc="scale components to unit variance"),
            },
            fit_transform=_pca,
            doc="PCA reduction to the directions of largest variance.",
        ),
        Preprocessor(
            name="none",
            params={},
            fit_transform=_none,
            doc="No-op.",
        ),
    )
}


def validate_steps(
    steps: Sequence[Mapping[str, Any] | str] | None,
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Validate an ordered list of steps; return ``((method, params), ...)``.

    Each step is a mapping with a ``'method'`` key plus that method's params
    (None values mean "not given"), or a bare method name.

    >>> validate_steps([{"method": "whitening"}, "pca"])[0]
    ('whitening', {'regularization': 1e-05})
    """
    if steps is None:
        return ()
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Sequence):
        raise SpecError(
            "preprocessing must be a list of steps such as "
            "[{'method': 'whitening'}, {'method': 'umap', 'n_components': 50}]. "
            f"Got {steps!r} instead."
        )
    out = []
    for i, step in enumerate(steps, start=1):
        if isinstance(step, str):
            step = {"method": step}
        if not isinstance(step, Mapping):
            raise SpecError(
                f"Preprocessing step {i} must be a mapping with a 'method' key "
                f"(e.g. {{'method': 'whitening'}}). Got {step!r} instead."
            )
        method = step.get("method")
        if method is None:
            raise SpecError(
                f"Preprocessing step {i} has no 'method'. Got {dict(step)!r}; "
                f"valid methods: {', '.join(repr(m) for m in sorted(PREPROCESSORS))}."
            )
        if not isinstance(method, str) or method not in PREPROCESSORS:
            raise unknown_name("preprocessing method", method, PREPROCESSORS)
        given = {k: v for k, v in step.items() if k != "method"}
        params = validate_params(
            f"{method} preprocessing", PREPROCESSORS[method].params, given
        )
        out.append((method, params))
    return tuple(out)


def run_preprocessing(
    X: np.ndarray, steps: tuple[tuple[str, dict[str, Any]], ...], seed: int
) -> np.ndarray:
    """Apply validated ``steps`` in order; float32 (n, d) in, float32 (n, d') out."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    for method, params in steps:
        X = np.ascontiguousarray(PREPROCESSORS[method].fit_transform(X, params, seed),
                                 dtype=np.float32)
    return X
