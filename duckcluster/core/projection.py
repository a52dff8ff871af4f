"""The one PCA (:func:`principal_components`) and the two projections built on it.

- :class:`Projection`: low-dimensional coordinates (x, y[, z]) of embeddings, for
  plotting. Fitted on at most :data:`FIT_SAMPLE` seeded rows and applied to all rows
  in chunks, so memory stays bounded on millions of rows. Inputs with fewer rows or
  dimensions than asked are zero-padded.
- :class:`Scores`: standardized principal-component scores, on which the drift
  methods ``energy``, ``wasserstein`` and ``kl`` compare two sides (and the drift
  report draws them).

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

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((X.shape[0], self.dimensions), dtype=np.float32)
        if self.W is not None:
            shift = self.mean @ self.W  # (x - mean) W without an (n, d) temporary
            for start in range(0, X.shape[0], _CHUNK_ROWS):
                part = np.asarray(X[start:start + _CHUNK_ROWS], dtype=np.float32)
                out[start:start + _CHUNK_ROWS, : self.k] = part @ self.W - shift
        return out


    def as_row(self) -> dict:
        """The projection as a ``duckcluster.projections`` row (without run and name)."""
        return {"dimensions": self.dimensions,
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
