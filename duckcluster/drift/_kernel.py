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

from ._base import permutation_blocks, permutation_p_value

_BLOCK = 64  # permutations per matrix product (bounds the N x block temporary)


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


def permutation_test(K: np.ndarray, n: int, n_permutations: int, rng: np.random.Generator,
                     groups: np.ndarray | None = None) -> tuple[float, float]:
    """(observed statistic, permutation p-value) for the pooled kernel matrix ``K``."""
    N = K.shape[0]
    Kf = np.ascontiguousarray(K, dtype=np.float32)
    diag = np.diag(K).astype(np.float64)
    row = K.sum(axis=1, dtype=np.float64)
    total = row.sum()
    parts = []
    for Zb in permutation_blocks(n, N - n, n_permutations, rng, groups, _BLOCK):
        R = (Kf @ Zb).astype(np.float64)
        Zd = Zb.astype(np.float64)
        nb = Zd.sum(axis=0)
        mb = N - nb
        sxx = np.einsum("ij,ij->j", Zd, R)
        sxy = Zd.T @ row - sxx
        syy = total - sxx - 2.0 * sxy
        dx = Zd.T @ diag
        dy = diag.sum() - dx
        parts.append((sxx - dx) / (nb * (nb - 1)) + (syy - dy) / (mb * (mb - 1))
                     - 2.0 * sxy / (nb * mb))
    return unbiased_statistic(K, n), permutation_p_value(np.concatenate(parts))


def feature_permutation_test(F: np.ndarray, n: int, n_permutations: int,
                             rng: np.random.Generator, groups: np.ndarray | None = None
                             ) -> tuple[float, float]:
    """The unbiased statistic for the kernel K = F F' (explicit features, (N, D)),
    never forming K: O(N D) per relabelling instead of O(N^2).

    With side sums s_x, s_y and per-row norms q_i = |F_i|^2 the unbiased MMD^2 is
    (|s_x|^2 - sum_x q) / (n(n-1)) + (|s_y|^2 - sum_y q) / (m(m-1)) - 2 s_x.s_y / (nm).
    The rows are centred first (the statistic does not change), so the float32
    products sum small numbers.
    """
    N = F.shape[0]
    mu = F.mean(axis=0, dtype=np.float64)
    Fc = (F - mu).astype(np.float32)
    q = np.einsum("ij,ij->i", Fc, Fc, dtype=np.float64)
    tot = Fc.sum(axis=0, dtype=np.float64)
    qt = q.sum()
    parts = []
    for Zb in permutation_blocks(n, N - n, n_permutations, rng, groups, _BLOCK):
        sx = (Zb.T @ Fc).astype(np.float64)  # (b, D)
        sy = tot[None, :] - sx
        nb = Zb.sum(axis=0, dtype=np.float64)
        mb = N - nb
        qx = Zb.T.astype(np.float64) @ q
        xx = (np.einsum("ij,ij->i", sx, sx) - qx) / (nb * (nb - 1))
        yy = (np.einsum("ij,ij->i", sy, sy) - (qt - qx)) / (mb * (mb - 1))
        xy = np.einsum("ij,ij->i", sx, sy) / (nb * mb)
        parts.append(xx + yy - 2.0 * xy)
    stats = np.concatenate(parts)
    return float(stats[0]), permutation_p_value(stats)


def random_fourier_features(X: np.ndarray, sigma: float, n_features: int,
                            rng: np.random.Generator) -> np.ndarray:
    """(N, n_features) float32 features whose inner products approximate the RBF
    kernel exp(-|x - y|^2 / (2 sigma^2)) (Rahimi and Recht); drawn from ``rng``
    alone, never from the rows' sides."""
    d = X.shape[1]
    W = (rng.normal(size=(d, n_features)) / sigma).astype(np.float32)
    b = rng.uniform(0, 2 * np.pi, size=n_features).astype(np.float32)
    out = np.empty((X.shape[0], n_features), dtype=np.float32)
    scale = np.float32(np.sqrt(2.0 / n_features))
    for s in range(0, X.shape[0], 65_536):
        out[s:s + 65_536] = np.cos(X[s:s + 65_536].astype(np.float32) @ W + b) * scale
    return out
