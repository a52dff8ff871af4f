"""A projection fitted on both sides pooled: their first principal components.

``energy``, ``wasserstein`` and ``kl`` compare the two sides on the first
principal components (PC1 and a few more), standardized by their spread so the
components weigh alike.

Why a pooled sample: a PCA fitted on rows it then tests overstates their spread
along the top components (it picked those directions for them). Fitting on part
of the baseline and testing the rest against the current side is exact only when
the current side holds none of those rows: on the same table twice, overlapping
windows or a current side that contains the baseline it flagged drift on
identical data (issue 14). So the projection is fitted on a uniform seeded sample
of the pooled rows (``fit_fraction``, at most :data:`FIT_MAX_ROWS`), chosen
without looking at the sides, and every row of both sides is tested: which rows
are in the sample is independent of the side labels, the projection is a
function of the pool, and under "no drift" every relabelling of the pooled rows
stays as likely as the real one, so the permutation p-value is exact. The same
rows and seed always give the same projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._params import Param
from ._base import FIT_MAX_ROWS

PARAMS = {
    "n_components": Param(int, 5, low=1, high=256,
                          doc="principal components of the pooled rows to compare (PC1 first)"),
    "fit_fraction": Param(float, 0.5, low=0.1, high=0.9,
                          doc="share of the pooled rows of both sides the projection is "
                              "fitted on (at most 5,000); every row is tested"),
}


@dataclass(frozen=True)
class Projection:
    """x -> ((x - mean) @ components.T) / scale: (k,) standardized scores."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal, PC1 first
    scale: np.ndarray  # (k,) standard deviation of each component over the fitted rows
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


def pooled_sample(B: np.ndarray, C: np.ndarray, fit_fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A uniform seeded sample of the pooled rows (at most :data:`FIT_MAX_ROWS`), in a
    shuffled order: neither which rows are picked nor their order depends on the sides."""
    n = B.shape[0] + C.shape[0]
    n_fit = min(max(2, round(n * fit_fraction)), FIT_MAX_ROWS, n)
    pick = rng.choice(n, size=n_fit, replace=False)
    nb = B.shape[0]
    out = np.empty((n_fit, B.shape[1]), dtype=np.float64)
    in_b = pick < nb
    out[in_b] = B[pick[in_b]]
    out[~in_b] = C[pick[~in_b] - nb]
    return out


@dataclass(frozen=True)
class Projected:
    """Both sides on the pooled components, plus the rows the projection was fitted on."""

    baseline: np.ndarray  # (n_b, k) tested baseline rows
    current: np.ndarray  # (n_c, k)
    fit: np.ndarray  # (n_fit, k) the fitting rows (a seeded sample of the pool)
    projection: Projection
    details: dict


def projected(B: np.ndarray, C: np.ndarray, params: dict, max_samples: int | None,
              rng: np.random.Generator) -> Projected:
    """Sample each side to ``max_samples`` rows (if given); fit on a pooled sample of them."""
    from ._base import sample_details, subsample

    Bs, Cs = subsample(B, max_samples, rng), subsample(C, max_samples, rng)
    fit = pooled_sample(Bs, Cs, params["fit_fraction"], rng)
    proj = fit_projection(fit, params["n_components"])
    details = {**sample_details(B, C, Bs, Cs, max_samples),
               **projection_details(proj, int(fit.shape[0]))}
    return Projected(proj(Bs), proj(Cs), proj(fit), proj, details)


def projection_details(proj: Projection, n_fit: int) -> dict:
    return {"projection": "PCA of a seeded sample of both sides pooled",
            "n_components": int(proj.components.shape[0]),
            "projection_fit_rows": n_fit,
            "explained_variance_ratio": [round(float(r), 6) for r in proj.explained_variance_ratio]}
