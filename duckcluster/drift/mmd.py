"""``mmd``: maximum mean discrepancy with an RBF kernel and a permutation p-value.

It compares the full embedding distributions (every dimension, not a
projection), so a new kind of content that lands between existing ones still
moves it. The bandwidth follows the median heuristic: ``bandwidth_scale`` (0.5)
times the median pairwise distance of (a seeded sample of) the pooled rows,
unless ``bandwidth`` is given. Half the median was chosen on measurements: on
scikit-learn's digits with 5% of the current rows from an unseen class it
detected the shift in 52% of trials against 35% for the plain median (false
positives stayed at alpha), because a narrower kernel sees local structure such
as one new cluster. The statistic is the unbiased MMD^2 (about 0 without drift,
can be slightly negative). Every row is tested: up to ``exact_max_rows``
(4,000) pooled rows with the exact kernel matrix, above with ``n_features``
(512) random Fourier features of the same kernel (an O(n) statistic; the
features are drawn from the seed alone, so the p-value stays an exact
permutation p-value; ``details`` says which). ``max_samples`` samples the
sides first if asked.
"""

from __future__ import annotations

import numpy as np

from .._params import Param
from ._base import (
    PERMUTATIONS,
    check_groups_unsampled,
    Context,
    DriftMethod,
    DriftResult,
    decide,
    sample_details,
    sample_param,
    subsample,
)
from ._kernel import (
    feature_permutation_test,
    median_distance,
    permutation_test,
    random_fourier_features,
    sq_distances,
)

PARAMS = {
    "max_samples": sample_param(),
    "exact_max_rows": Param(int, 4000, low=10, high=20_000,
                            doc="pooled rows up to which the exact kernel matrix is used"),
    "n_features": Param(int, 512, low=16, high=8192,
                        doc="random Fourier features of the kernel above exact_max_rows"),
    "n_permutations": PERMUTATIONS,
    "bandwidth": Param(float, None, low=0.0, low_open=True, nullable=True,
                       doc="RBF kernel width sigma; default bandwidth_scale x median distance"),
    "bandwidth_scale": Param(float, 0.5, low=0.0, low_open=True,
                             doc="sigma = this x the median pairwise distance (median heuristic)"),
}


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    Bs, Cs = subsample(B, p["max_samples"], rng), subsample(C, p["max_samples"], rng)
    check_groups_unsampled("mmd", ctx, B, C, Bs, Cs)
    pooled = np.concatenate([Bs, Cs])
    sigma = p["bandwidth"] or p["bandwidth_scale"] * median_distance(pooled, rng)
    if sigma <= 0:  # every row identical: no spread to measure, no drift
        sigma = 1.0
    details = {**sample_details(B, C, Bs, Cs, p["max_samples"]), "kernel": "rbf",
               "bandwidth": sigma, "bandwidth_rule": "given" if p["bandwidth"]
               else f"{p['bandwidth_scale']:g} x median pairwise distance",
               "n_permutations": p["n_permutations"]}
    if pooled.shape[0] <= p["exact_max_rows"]:
        X64 = pooled.astype(np.float64)
        K = np.exp(-sq_distances(X64, X64) / (2.0 * sigma * sigma))
        stat, p_value = permutation_test(K, Bs.shape[0], p["n_permutations"], rng, ctx.groups)
        details["kernel_matrix"] = "exact"
    else:
        F = random_fourier_features(pooled, sigma, p["n_features"], rng)
        stat, p_value = feature_permutation_test(F, Bs.shape[0], p["n_permutations"], rng,
                                                 ctx.groups)
        details["kernel_matrix"] = f"{p['n_features']} random Fourier features"
    if ctx.groups is not None:
        details["permutation_unit"] = "group"
    return DriftResult("mmd", stat, p_value, ctx.alpha, decide(p_value, ctx.alpha), details)


MMD = DriftMethod(name="mmd", params=PARAMS, compute=compute, min_rows=5,
                  doc=__doc__.split("\n\n", 1)[1], group_by=True,
                  statistic=("unbiased squared maximum mean discrepancy of the RBF kernel: "
                             "about 0 without drift (slightly negative possible), at most 2; a"
                             " size of the change"))
