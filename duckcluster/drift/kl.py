"""``kl``: KL divergence of binned projections, smoothed ("KL with care").

Each of the first principal components of a seeded sample of both sides pooled
(drawn without looking at the sides, so the test stays exact when the sides
share rows) is cut into ``bins`` bins at that sample's quantiles (open-ended at
both ends, so no row falls outside); counts get
``smoothing`` pseudo-counts per bin so an empty bin does not make the divergence
infinite; the statistic is the mean over components of KL(current || baseline)
in nats. The care: the raw number depends on bins, smoothing and sample size
(it is biased upward on small samples and never exactly 0), so compare it only
between runs with the same settings; the permutation p-value accounts for all
of that and is what the decision uses. Like every projection it misses changes
outside the first components.
"""

from __future__ import annotations

import numpy as np

from .._params import Param
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
    "bins": Param(int, 10, low=2, high=1000, doc="bins per component (quantiles of the fitted sample)"),
    "smoothing": Param(float, 0.5, low=0.0, low_open=True,
                       doc="pseudo-count added to every bin (additive smoothing)"),
    **PROJECTION_PARAMS,
}


def kl_batch(codes: np.ndarray, bins: int, Z: np.ndarray, smoothing: float) -> np.ndarray:
    """KL(current || baseline) of binned ``codes`` (N,) for each labelling column of ``Z``."""
    onehot = np.zeros((bins, codes.size), dtype=np.float64)
    onehot[codes, np.arange(codes.size)] = 1.0
    cb = onehot @ Z.astype(np.float64)  # baseline counts per bin, per labelling
    cc = onehot.sum(axis=1, keepdims=True) - cb
    pb = (cb + smoothing) / (cb.sum(axis=0) + bins * smoothing)
    pc = (cc + smoothing) / (cc.sum(axis=0) + bins * smoothing)
    return (pc * np.log(pc / pb)).sum(axis=0)


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    pr = projected(B, C, p, p["max_samples"], rng)
    PB, PC, details = pr.baseline, pr.current, pr.details
    pooled = np.concatenate([PB, PC])
    bins = p["bins"]
    codes = []
    for j in range(pooled.shape[1]):
        # edges from the fitting rows' quantiles: a function of the pool, so the same
        # edges serve every relabelling without biasing the test
        edges = np.quantile(pr.fit[:, j], np.linspace(0, 1, bins + 1)[1:-1])
        codes.append(np.searchsorted(edges, pooled[:, j], side="right"))
    per = np.concatenate([
        np.stack([kl_batch(c, bins, Zb, p["smoothing"]) for c in codes])
        for Zb in permutation_blocks(PB.shape[0], PC.shape[0], p["n_permutations"], rng)],
        axis=1)
    stats = per.mean(axis=0)
    p_value = permutation_p_value(stats)
    details.update({"per_component": [round(float(x), 6) for x in per[:, 0]],
                    "bins": bins, "smoothing": p["smoothing"], "unit": "nats",
                    "direction": "KL(current || baseline)", "n_permutations": p["n_permutations"]})
    return DriftResult("kl", float(stats[0]), p_value, ctx.alpha, decide(p_value, ctx.alpha),
                       details)


KL = DriftMethod(name="kl", params=PARAMS, compute=compute, min_rows=10,
                 doc=__doc__.split("\n\n", 1)[1],
                 statistic=("mean over principal components of the smoothed binned KL divergence "
                            "of current from baseline, in nats: above 0 even without drift "
                            "(compare only runs with the same settings)"))
