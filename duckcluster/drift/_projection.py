"""A stable projection fitted on the baseline: its first principal components.

``energy``, ``wasserstein`` and ``kl`` compare the two sides on the baseline's
first principal components (PC1 and a few more), standardized by the baseline's
spread so the components weigh alike. The same baseline and seed always give the
same projection, so a series of windows is scored on one fixed axis system.

Why the baseline is split: a PCA fitted on rows it then tests overstates their
spread along the top components (it picked those directions for them), so a
permutation test on the same rows would flag drift too often. The projection is
therefore fitted on a seeded part of the baseline (``fit_fraction``, at most
:data:`FIT_MAX_ROWS` rows) and the test uses the remaining baseline rows: the
fitted axes are then independent of every tested row and the permutation
p-value stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._params import Param
from ._base import FIT_MAX_ROWS

PARAMS = {
    "n_components": Param(int, 5, low=1, high=256,
                          doc="principal components of the baseline to compare (PC1 first)"),
    "fit_fraction": Param(float, 0.5, low=0.1, high=0.9,
                          doc="share of the baseline rows the projection is fitted on; "
                              "the test uses the rest"),
}


@dataclass(frozen=True)
class Projection:
    """x -> ((x - mean) @ components.T) / scale: (k,) standardized scores."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal, PC1 first
    scale: np.ndarray  # (k,) baseline standard deviation of each component
    explained_variance_ratio: np.ndarray  # (k,)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T) / self.scale


def fit_projection(X: np.ndarray, n_components: int) -> Projection:
    """PCA of ``X`` (n, d): exact SVD of the centered rows; signs fixed so that the
    largest-magnitude loading of each component is positive (deterministic)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    Xc = X - mean
    k = max(1, min(n_components, X.shape[1], X.shape[0] - 1))
    from threadpoolctl import threadpool_limits

    # one thread: OpenBLAS's threaded SVD of a 1,500 x 384 matrix took 13 s on the busy
    # 2-core machine (load 20), single-threaded 0.1-0.3 s; same factorization
    with threadpool_limits(1):
        _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    comps = Vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2 / max(X.shape[0] - 1, 1)
    total = var.sum()
    scale = np.sqrt(var[:k])
    scale = np.where(scale > 0, scale, 1.0)
    ratio = var[:k] / total if total > 0 else np.zeros(k)
    return Projection(mean=mean, components=comps, scale=scale, explained_variance_ratio=ratio)


def split_baseline(B: np.ndarray, fit_fraction: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit the projection on, rows to test), a seeded split of ``B``."""
    n = B.shape[0]
    n_fit = min(max(2, round(n * fit_fraction)), n - 2, FIT_MAX_ROWS)
    perm = rng.permutation(n)
    return B[np.sort(perm[:n_fit])], B[np.sort(perm[n_fit:])]


@dataclass(frozen=True)
class Projected:
    """Both sides on the baseline's components, plus the rows the projection was fitted on."""

    baseline: np.ndarray  # (n_b, k) tested baseline rows
    current: np.ndarray  # (n_c, k)
    fit: np.ndarray  # (n_fit, k) the fitting rows, independent of the tested ones
    projection: Projection
    details: dict


def projected(B: np.ndarray, C: np.ndarray, params: dict, max_samples: int,
              rng: np.random.Generator) -> Projected:
    """Fit on part of ``B``; sample the rest and ``C`` to ``max_samples`` rows each."""
    from ._base import sample_details, subsample

    B_fit, B_test = split_baseline(B, params["fit_fraction"], rng)
    proj = fit_projection(B_fit, params["n_components"])
    Bs, Cs = subsample(B_test, max_samples, rng), subsample(C, max_samples, rng)
    details = {**sample_details(B_test, C, Bs, Cs, max_samples),
               **projection_details(proj, int(B_fit.shape[0]))}
    return Projected(proj(Bs), proj(Cs), proj(B_fit), proj, details)


def projection_details(proj: Projection, n_fit: int) -> dict:
    return {"projection": "baseline PCA", "n_components": int(proj.components.shape[0]),
            "projection_fit_rows": n_fit,
            "explained_variance_ratio": [round(float(r), 6) for r in proj.explained_variance_ratio]}
