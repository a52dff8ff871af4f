"""``wasserstein``: 1-D Wasserstein distances on the first principal components.

Both sides are projected on the first ``n_components`` principal components of
a seeded sample of both sides pooled (drawn without looking at the sides, so the
test stays exact when the sides share rows); each component is scaled to unit
spread, the Wasserstein-1 distance between the two sides is taken per
component, and the statistic is their mean (in standard deviations).
``details`` lists the distance of every component, PC1 first. The p-value is a
permutation test of that mean. Each component is a 1-D view, so it is blind to
changes that leave every marginal of the first components alike (a new class
landing mid-axis on PC1 is the classic miss); ``mmd`` and ``classifier`` see
those.
"""

from __future__ import annotations

import numpy as np

from ._base import (
    PERMUTATIONS,
    PROJECTION_PARAMS,
    Context,
    decide,
    DriftMethod,
    DriftResult,
    permutation_blocks,
    permutation_p_value,
    projected,
    sample_param,
)

PARAMS = {
    "max_samples": sample_param(),
    "n_permutations": PERMUTATIONS,
    **PROJECTION_PARAMS,
}


def wasserstein_1d_batch(v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """W1 between the rows labelled 1 and 0 in each column of ``Z``, values ``v`` (N,).

    Integrates |F_x - F_y| over the pooled sorted values: O(N log N + N P).
    """
    return _w1(v, np.argsort(v, kind="stable"), Z)


def _w1(v: np.ndarray, order: np.ndarray, Z: np.ndarray) -> np.ndarray:
    gaps = np.diff(v[order]).astype(np.float32)
    Zs = Z[order]
    n = Z.sum(axis=0, dtype=np.float64)  # per column: group relabellings change the sizes
    m = Z.shape[0] - n
    # F_x - F_y at each sorted value = cum_x / n - (i - cum_x) / m; counts are exact in float32
    D = np.cumsum(Zs[:-1], axis=0, dtype=np.float32)
    D *= (1.0 / n + 1.0 / m).astype(np.float32)[None, :]
    D -= np.arange(1, Zs.shape[0], dtype=np.float32)[:, None] * (1.0 / m).astype(np.float32)[None, :]
    np.abs(D, out=D)
    return (gaps @ D).astype(np.float64)

def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    pr = projected(B, C, p, p["max_samples"], rng)
    PB, PC, details = pr.baseline, pr.current, pr.details
    pooled = np.concatenate([PB, PC])
    orders = [np.argsort(pooled[:, j], kind="stable") for j in range(pooled.shape[1])]
    per = np.concatenate([
        np.stack([_w1(pooled[:, j], orders[j], Zb) for j in range(pooled.shape[1])])
        for Zb in permutation_blocks(PB.shape[0], PC.shape[0], p["n_permutations"], rng)],
        axis=1)
    stats = per.mean(axis=0)
    p_value = permutation_p_value(stats)
    details.update({"per_component": [round(float(x), 6) for x in per[:, 0]],
                    "pc1_wasserstein": float(per[0, 0]), "unit": "standard deviations of the pooled sample",
                    "n_permutations": p["n_permutations"]})
    return DriftResult("wasserstein", float(stats[0]), p_value, ctx.alpha,
                       decide(p_value, ctx.alpha), details)


WASSERSTEIN = DriftMethod(name="wasserstein", params=PARAMS, compute=compute, min_rows=10,
                          doc=__doc__.split("\n\n", 1)[1],
                          statistic=("mean over principal components of the 1-D Wasserstein-1 "
                                     "distance, in standard deviations: about 0 without drift"))
