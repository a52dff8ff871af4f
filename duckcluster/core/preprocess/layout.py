"""UMAP's layout optimisation, reproducible and parallel (imported lazily: numba).

umap-learn's epoch kernel moves both ends of every edge in place while other
threads read the same rows (Hogwild), so it is reproducible only single
threaded, which is what ``random_state`` forces. Here each epoch reads the
positions of the *other* rows from a snapshot taken at the start of the epoch
and writes only the row it owns (the graph is symmetric, so every edge is seen
from both ends), and negative samples come from a per-row random stream. No row
is read and written by two threads within an epoch, so the result is the same
whatever the number of threads and however numba schedules them.

The objective, the attractive/repulsive gradients, their clipping, the
per-edge sampling schedule (``epochs_per_sample``) and the learning-rate decay
are umap-learn's (``umap.layouts._optimize_layout_euclidean_single_epoch``).
Each endpoint of an edge gets the attractive step of both directions, as with
umap-learn's ``move_other=True``.

Kernels are compiled with ``cache=True`` (numba's on-disk cache, next to this
file or under ``NUMBA_CACHE_DIR``), so only the first process after installing
pays their compilation.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import progress


@numba.njit(inline="always", fastmath=True)
def _clip(v):
    if v > 4.0:
        return 4.0
    if v < -4.0:
        return -4.0
    return v


@numba.njit(inline="always")
def _next(state, i):
    # xorshift64*: one independent stream per row, seeded from (seed, row)
    x = state[i]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[i] = x
    return x * np.uint64(2685821657736338717)


@numba.njit(inline="always", fastmath=True)
def _sq_dist(u, v):
    d2 = np.float32(0.0)
    for d in range(u.shape[0]):
        diff = u[d] - v[d]
        d2 += diff * diff
    return d2


@numba.njit(inline="always", fastmath=True)
def _move_vertex(i, emb, snap, indptr, indices, epochs_per_sample, epoch_of_next_sample,
                 epochs_per_negative_sample, epoch_of_next_negative_sample, rng, a, b, gamma,
                 alpha, n, move_other):
    dim = emb.shape[1]
    nv = np.uint64(emb.shape[0])
    cur = emb[i]
    for e in range(indptr[i], indptr[i + 1]):
        if epoch_of_next_sample[e] > n:
            continue
        j = indices[e]
        other = snap[j]
        d2 = _sq_dist(cur, other)
        if d2 > 0.0:
            pb = d2 ** b  # d2^(b-1) = d2^b / d2: one pow instead of two
            gc = np.float32(-2.0) * a * b * (pb / d2) / (a * pb + np.float32(1.0))
            for d in range(dim):
                g = _clip(gc * (cur[d] - other[d])) * alpha
                if move_other:
                    cur[d] += g
                    emb[j, d] -= g
                else:
                    cur[d] += np.float32(2.0) * g
        epoch_of_next_sample[e] += epochs_per_sample[e]
        n_neg = int((n - epoch_of_next_negative_sample[e]) / epochs_per_negative_sample[e])
        for _ in range(n_neg):
            k = np.int64(_next(rng, i) % nv)
            if k == i:
                continue
            other = snap[k]
            d2 = _sq_dist(cur, other)
            if d2 > 0.0:
                gc = np.float32(2.0) * gamma * b / (
                    (np.float32(0.001) + d2) * (a * d2 ** b + np.float32(1.0)))
                for d in range(dim):
                    cur[d] += _clip(gc * (cur[d] - other[d])) * alpha
        epoch_of_next_negative_sample[e] += n_neg * epochs_per_negative_sample[e]


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _epoch_parallel(emb, snap, indptr, indices, eps, next_s, eps_neg, next_neg, rng, a, b,
                    gamma, alpha, n):
    for i in numba.prange(emb.shape[0]):
        _move_vertex(i, emb, snap, indptr, indices, eps, next_s, eps_neg, next_neg, rng, a, b,
                     gamma, alpha, n, False)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _epoch_serial(emb, indptr, indices, eps, next_s, eps_neg, next_neg, rng, a, b, gamma,
                  alpha, n):
    for i in range(emb.shape[0]):
        _move_vertex(i, emb, emb, indptr, indices, eps, next_s, eps_neg, next_neg, rng, a, b,
                     gamma, alpha, n, True)


def optimize_layout(emb: np.ndarray, graph, n_epochs: int, a: float, b: float, seed: int,
                    gamma: float = 1.0, initial_alpha: float = 1.0,
                    negative_sample_rate: int = 5, parallel: bool = True) -> np.ndarray:
    """Optimise ``emb`` (float32, n x dim, modified in place) against ``graph``.

    ``graph``: the symmetric fuzzy simplicial set (scipy sparse, n x n), edges
    already pruned below ``max / n_epochs`` as umap-learn does.
    """
    csr = graph.tocsr()
    csr.sort_indices()
    weights = csr.data.astype(np.float64)
    n_samples = n_epochs * (weights / weights.max())
    eps = np.full(weights.shape[0], -1.0)
    eps[n_samples > 0] = float(n_epochs) / n_samples[n_samples > 0]
    eps_neg = eps / negative_sample_rate
    next_neg = eps_neg.copy()
    next_s = eps.copy()
    indptr = csr.indptr.astype(np.int64)
    indices = csr.indices.astype(np.int64)
    n = emb.shape[0]
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x4C41594F])
    rng = ss.generate_state(n, dtype=np.uint64) | np.uint64(1)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    snap = np.empty_like(emb) if parallel else emb
    a, b, gamma = np.float32(a), np.float32(b), np.float32(gamma)
    for epoch in range(n_epochs):
        alpha = np.float32(initial_alpha * (1.0 - epoch / n_epochs))
        if parallel:
            snap[...] = emb
            _epoch_parallel(emb, snap, indptr, indices, eps, next_s, eps_neg, next_neg, rng,
                            a, b, gamma, alpha, epoch)
        else:
            _epoch_serial(emb, indptr, indices, eps, next_s, eps_neg, next_neg, rng,
                          a, b, gamma, alpha, epoch)
        progress.step("UMAP layout epochs", epoch + 1, n_epochs)
    return emb


@numba.njit(inline="always")
def _worst(vals, cols, k):
    """Slot of the weakest of the ``k`` kept: the smallest value, of equal values the
    largest column (the order umap's neighbours keep: value, then column)."""
    w = 0
    for j in range(1, k):
        if vals[j] < vals[w] or (vals[j] == vals[w] and cols[j] > cols[w]):
            w = j
    return w


@numba.njit(parallel=True, cache=True, nogil=True)
def top_k_rows(S, k):
    """The ``k`` largest entries of every row of ``S`` (n x m, ``k <= m``), ordered by
    value descending, then column ascending: the same as ``np.lexsort((cols, -vals))``
    over an ``argpartition``, without it (argpartition was half of a 5k x 384 kNN graph
    on a busy machine: one pass keeping k candidates is a few milliseconds).
    (The kNN graph's kernel; it lives here so numba is imported by one module.)"""
    n, m = S.shape
    cols = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k), dtype=S.dtype)
    for i in numba.prange(n):
        v = vals[i]
        c = cols[i]
        for j in range(k):
            v[j] = S[i, j]
            c[j] = j
        w = _worst(v, c, k)
        for j in range(k, m):
            x = S[i, j]
            if x > v[w]:
                v[w] = x
                c[w] = j
                w = _worst(v, c, k)
        for a in range(1, k):  # insertion sort: value descending, column ascending
            xv = v[a]
            xc = c[a]
            b = a - 1
            while b >= 0 and (v[b] < xv or (v[b] == xv and c[b] > xc)):
                v[b + 1] = v[b]
                c[b + 1] = c[b]
                b -= 1
            v[b + 1] = xv
            c[b + 1] = xc
    return cols, vals
