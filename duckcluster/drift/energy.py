"""``energy``: energy distance on the first principal components of both sides.

The sides are projected on the first ``n_components`` principal components of a
seeded sample of both sides pooled (PC1 first, each scaled to unit spread; the
sample is drawn without looking at the sides, so the test stays exact when the
sides share rows),
then compared with the multivariate energy distance
2 E|X - Y| - E|X - X'| - E|Y - Y'| and a permutation p-value. ``details`` adds
the energy distance of PC1 alone. Every row is tested: up to ``exact_max_rows``
(4,000) tested rows with the exact pairwise distances (the unbiased
statistic), above with the sliced form, which needs no pairwise distances: the
energy distance in k dimensions is a constant times the mean over directions of
the 1-D energy distance 2 * integral of (F_x - F_y)^2 of the projections, here over
``n_directions`` (16) seeded random directions, O(n log n) per direction
(``details`` says which). It only sees what the first components show:
content that differs along directions the data barely varies in (for
example a new class that lands mid-axis on the top components) can go unseen;
use ``knn`` or ``mmd`` to catch that.
"""

from __future__ import annotations

from math import gamma, pi, sqrt

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
from ._kernel import permutation_test, sq_distances

PARAMS = {
    "max_samples": sample_param(),
    "n_permutations": PERMUTATIONS,
    "exact_max_rows": Param(int, 4000, low=10, high=20_000,
                            doc="tested rows up to which the exact pairwise distances are used"),
    "n_directions": Param(int, 16, low=1, high=1024,
                          doc="random directions of the sliced statistic above exact_max_rows"),
    **PROJECTION_PARAMS,
}


def energy_1d_batch(v: np.ndarray, order: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """2 * integral of (F_x - F_y)^2 between the rows labelled 1 and 0 in each column of ``Z``
    (the 1-D energy distance, V-statistic form), values ``v`` sorted by ``order``."""
    gaps = np.diff(v[order]).astype(np.float32)
    Zs = Z[order]
    n = Z.sum(axis=0, dtype=np.float64)
    m = Z.shape[0] - n
    D = np.cumsum(Zs[:-1], axis=0, dtype=np.float32)
    D *= (1.0 / n + 1.0 / m).astype(np.float32)[None, :]
    D -= np.arange(1, Zs.shape[0], dtype=np.float32)[:, None] * (1.0 / m).astype(np.float32)[None, :]
    np.square(D, out=D)
    return 2.0 * (gaps @ D).astype(np.float64)


def sliced_energy(P: np.ndarray, n: int, n_permutations: int, n_directions: int,
                  rng: np.random.Generator) -> tuple[float, float]:
    """(statistic, permutation p-value) of the sliced energy distance of rows ``P``."""
    k = P.shape[1]
    U = rng.normal(size=(k, n_directions))
    U /= np.linalg.norm(U, axis=0, keepdims=True)
    V = P @ U
    orders = [np.argsort(V[:, j], kind="stable") for j in range(n_directions)]
    kappa = sqrt(pi) * gamma((k + 1) / 2) / gamma(k / 2)  # |z| = kappa E_theta |theta'z|
    stats = np.concatenate([
        kappa * np.mean([energy_1d_batch(V[:, j], orders[j], Zb) for j in range(n_directions)],
                        axis=0)
        for Zb in permutation_blocks(n, P.shape[0] - n, n_permutations, rng)])
    return float(stats[0]), permutation_p_value(stats)


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    from scipy.stats import (
        energy_distance,  # scipy.stats takes ~3 s to import: only here
    )

    rng = np.random.default_rng(ctx.seed)
    pr = projected(B, C, p, p["max_samples"], rng)
    PB, PC, details = pr.baseline, pr.current, pr.details
    pooled = np.concatenate([PB, PC])
    if pooled.shape[0] <= p["exact_max_rows"]:
        K = -np.sqrt(sq_distances(pooled, pooled))
        stat, p_value = permutation_test(K, PB.shape[0], p["n_permutations"], rng)
        details["statistic_form"] = "exact pairwise distances (unbiased)"
    else:
        stat, p_value = sliced_energy(pooled, PB.shape[0], p["n_permutations"],
                                      p["n_directions"], rng)
        details["statistic_form"] = (f"sliced over {p['n_directions']} random directions "
                                     "(V-statistic)")
    details.update({"pc1_energy_distance": float(energy_distance(PB[:, 0], PC[:, 0])),
                    "n_permutations": p["n_permutations"]})
    return DriftResult("energy", stat, p_value, ctx.alpha, decide(p_value, ctx.alpha), details)


ENERGY = DriftMethod(name="energy", params=PARAMS, compute=compute, min_rows=10,
                     doc=__doc__.split("\n\n", 1)[1],
                     statistic=("energy distance on the first principal components (each "
                                "scaled to unit spread): 0 without drift, grows with the shift"
                                " in standard deviations"))
