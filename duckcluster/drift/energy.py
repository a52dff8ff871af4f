"""``energy``: energy distance on the baseline's first principal components.

The sides are projected on a stable projection fitted on the baseline (PCA,
``n_components`` components, PC1 first, each scaled to unit baseline spread),
then compared with the multivariate energy distance
2 E|X - Y| - E|X - X'| - E|Y - Y'| and a permutation p-value. ``details`` adds
the energy distance of PC1 alone. It only sees what the first components show:
content that differs along directions the baseline barely varies in (for
example a new class that lands mid-axis on the top components) can go unseen;
use ``mmd`` or ``classifier`` to catch that.
"""

from __future__ import annotations

import numpy as np

from . import _projection
from ._base import PERMUTATIONS, Context, DriftMethod, DriftResult, decide, sample_param
from ._kernel import permutation_test, sq_distances

PARAMS = {
    "max_samples": sample_param(1000),
    "n_permutations": PERMUTATIONS,
    **_projection.PARAMS,
}


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    from scipy.stats import (
        energy_distance,  # scipy.stats takes ~3 s to import: only here
    )

    rng = np.random.default_rng(ctx.seed)
    pr = _projection.projected(B, C, p, p["max_samples"], rng)
    PB, PC, details = pr.baseline, pr.current, pr.details
    pooled = np.concatenate([PB, PC])
    K = -np.sqrt(sq_distances(pooled, pooled))
    stat, p_value = permutation_test(K, PB.shape[0], p["n_permutations"], rng)
    details.update({"pc1_energy_distance": float(energy_distance(PB[:, 0], PC[:, 0])),
                    "n_permutations": p["n_permutations"]})
    return DriftResult("energy", stat, p_value, ctx.alpha, decide(p_value, ctx.alpha), details)


ENERGY = DriftMethod(name="energy", params=PARAMS, compute=compute, min_rows=10,
                     splits_baseline=True, doc=__doc__.split("\n\n", 1)[1])
