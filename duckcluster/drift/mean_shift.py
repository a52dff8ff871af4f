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
    check_groups_unsampled,
    permutation_blocks,
    permutation_p_value,
    sample_details,
    sample_param,
    subsample,
)

PARAMS = {
    "max_samples": sample_param(),
    "n_permutations": PERMUTATIONS,
}


def cosine_distance_batch(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """1 - cos(mean of rows labelled 1, mean of rows labelled 0) per column of ``Z``.

    Rows are centred on the pooled mean first (float64), so the float32 product
    of labels and rows sums small numbers and keeps its precision.
    """
    mu = X.mean(axis=0, dtype=np.float64)
    return _cosine_distances((np.asarray(X, dtype=np.float64) - mu).astype(np.float32), mu, Z)


def _cosine_distances(Xc: np.ndarray, mu: np.ndarray, Z: np.ndarray) -> np.ndarray:
    Zf = np.asarray(Z, dtype=np.float32)
    n = Zf.sum(axis=0, dtype=np.float64)[:, None]  # per column: group relabellings
    m = Xc.shape[0] - n
    sb = (Zf.T @ Xc).astype(np.float64)  # (P, d) baseline sums of centred rows
    tot = Xc.sum(axis=0, dtype=np.float64)[None, :]
    mb = mu + sb / n
    mc = mu + (tot - sb) / m
    num = np.einsum("ij,ij->i", mb, mc)
    den = np.linalg.norm(mb, axis=1) * np.linalg.norm(mc, axis=1)
    return 1.0 - np.divide(num, den, out=np.ones_like(num), where=den > 0)


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    Bs, Cs = subsample(B, p["max_samples"], rng), subsample(C, p["max_samples"], rng)
    check_groups_unsampled("mean_shift", ctx, B, C, Bs, Cs)
    X = np.concatenate([Bs, Cs])
    mu = X.mean(axis=0, dtype=np.float64)
    Xc = (X - mu).astype(np.float32)
    stats = np.concatenate([_cosine_distances(Xc, mu, Zb) for Zb in permutation_blocks(
        Bs.shape[0], Cs.shape[0], p["n_permutations"], rng, ctx.groups)])
    p_value = permutation_p_value(stats)
    details = {**sample_details(B, C, Bs, Cs, p["max_samples"]),
               "n_permutations": p["n_permutations"]}
    return DriftResult("mean_shift", float(stats[0]), p_value, ctx.alpha,
                       decide(p_value, ctx.alpha), details)


MEAN_SHIFT = DriftMethod(name="mean_shift", params=PARAMS, compute=compute, min_rows=2,
                         doc=__doc__.split("\n\n", 1)[1], group_by=True,
                         statistic=("cosine distance 1 - cos between the mean embeddings: 0 to"
                                    " 2, about 0 without drift"))
