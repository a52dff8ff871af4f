"""``mean_shift``: cosine distance between the mean embeddings of the two sides.

The cheapest signal: 1 - cos(mean(baseline), mean(current)). It sees a shift of
the centre of mass and nothing else (a change of spread, or content that moves
in and out symmetrically, leaves it at ~0). The p-value is a permutation test of
the distance; the permuted means come from one (N x d)' (N x P) product.
"""

from __future__ import annotations

import numpy as np

from ._base import (
    PERMUTATIONS,
    Context,
    DriftMethod,
    DriftResult,
    decide,
    permutation_labels,
    permutation_p_value,
    sample_details,
    sample_param,
    subsample,
)

PARAMS = {
    "max_samples": sample_param(10000),
    "n_permutations": PERMUTATIONS,
}


def cosine_distance_batch(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """1 - cos(mean of rows labelled 1, mean of rows labelled 0) per column of ``Z``."""
    X = np.asarray(X, dtype=np.float64)
    Zd = Z.astype(np.float64)
    n = Zd[:, 0].sum()
    m = X.shape[0] - n
    sb = Zd.T @ X  # (P, d) baseline sums
    sc = X.sum(axis=0)[None, :] - sb
    mb, mc = sb / n, sc / m
    num = np.einsum("ij,ij->i", mb, mc)
    den = np.linalg.norm(mb, axis=1) * np.linalg.norm(mc, axis=1)
    return 1.0 - np.divide(num, den, out=np.ones_like(num), where=den > 0)


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    Bs, Cs = subsample(B, p["max_samples"], rng), subsample(C, p["max_samples"], rng)
    X = np.concatenate([Bs, Cs])
    Z = permutation_labels(Bs.shape[0], Cs.shape[0], p["n_permutations"], rng)
    stats = np.concatenate([cosine_distance_batch(X, Z[:, s:s + 128])
                            for s in range(0, Z.shape[1], 128)])
    p_value = permutation_p_value(stats)
    details = {**sample_details(B, C, Bs, Cs, p["max_samples"]),
               "n_permutations": p["n_permutations"]}
    return DriftResult("mean_shift", float(stats[0]), p_value, ctx.alpha,
                       decide(p_value, ctx.alpha), details)


MEAN_SHIFT = DriftMethod(name="mean_shift", params=PARAMS, compute=compute, min_rows=2,
                         doc=__doc__.split("\n\n", 1)[1])
