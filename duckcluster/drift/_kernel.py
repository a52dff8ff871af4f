"""Kernel two-sample statistics and their permutation test, shared by ``mmd`` and ``energy``.

For a symmetric kernel matrix K over the pooled rows (baseline first), the
unbiased statistic is

    mean_{i != j in X} K + mean_{i != j in Y} K - 2 mean_{X x Y} K

which is MMD^2_u for an RBF kernel and the energy distance for K = -distance.
Under a relabeling z (1 = baseline) the block sums are z'Kz, z'K(1-z) and
(1-z)'K(1-z); all of them follow from R = K Z, so P permutations cost one
(N x N) @ (N x P) matrix product instead of P passes over K. The kernel matrix
is built once on at most ``2 * max_samples`` rows: O(max_samples^2) memory and
time, never O(n^2) in the input size.
"""

from __future__ import annotations

import numpy as np

from ._base import permutation_labels, permutation_p_value

_BLOCK = 128  # permutations per matrix product (bounds the N x block temporary)


def sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared euclidean distances (n_a, n_b), float64, clipped at 0."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    D = (np.einsum("ij,ij->i", A, A)[:, None] + np.einsum("ij,ij->i", B, B)[None, :]
         - 2.0 * A @ B.T)
    np.maximum(D, 0.0, out=D)
    return D


def median_distance(X: np.ndarray, rng: np.random.Generator, max_rows: int = 1000) -> float:
    """Median pairwise euclidean distance of (a seeded sample of) the rows of ``X``."""
    if X.shape[0] > max_rows:
        X = X[np.sort(rng.choice(X.shape[0], size=max_rows, replace=False))]
    D = sq_distances(X, X)
    iu = np.triu_indices(X.shape[0], k=1)
    med = float(np.sqrt(np.median(D[iu]))) if iu[0].size else 0.0
    return med


def unbiased_statistic(K: np.ndarray, n: int) -> float:
    """The unbiased two-sample statistic of the pooled kernel matrix (first n rows = X)."""
    K = np.asarray(K, dtype=np.float64)
    m = K.shape[0] - n
    Kxx, Kyy, Kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    sxx = (Kxx.sum() - np.trace(Kxx)) / (n * (n - 1))
    syy = (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * Kxy.mean())


def permutation_test(K: np.ndarray, n: int, n_permutations: int,
                     rng: np.random.Generator) -> tuple[float, float]:
    """(observed statistic, permutation p-value) for the pooled kernel matrix ``K``."""
    N = K.shape[0]
    m = N - n
    Kf = np.ascontiguousarray(K, dtype=np.float32)
    diag = np.diag(K).astype(np.float64)
    row = K.sum(axis=1, dtype=np.float64)
    total = row.sum()
    Z = permutation_labels(n, m, n_permutations, rng)
    stats = np.empty(Z.shape[1], dtype=np.float64)
    for start in range(0, Z.shape[1], _BLOCK):
        Zb = Z[:, start:start + _BLOCK]
        R = (Kf @ Zb).astype(np.float64)
        sxx = np.einsum("ij,ij->j", Zb, R, dtype=np.float64)
        sxy = Zb.T.astype(np.float64) @ row - sxx
        syy = total - sxx - 2.0 * sxy
        dx = Zb.T.astype(np.float64) @ diag
        dy = diag.sum() - dx
        stats[start:start + _BLOCK] = ((sxx - dx) / (n * (n - 1)) + (syy - dy) / (m * (m - 1))
                                       - 2.0 * sxy / (n * m))
    return unbiased_statistic(K, n), permutation_p_value(stats)
