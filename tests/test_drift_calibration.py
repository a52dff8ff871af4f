"""Calibration on real data: scikit-learn's 1,797 handwritten digits (64-d, L2-normalized).

- Null: 20 random half/half splits of all digits. Each method with a p-value must
  flag drift at a rate consistent with alpha = 0.05 (at most 4 of 20; P(>= 5) is
  0.3% for a calibrated test), and over all methods together at most 10%.
- Power: 20 trials where the baseline has 800 digits of nine classes and the
  current side 720 more of those plus 80 (10%) of the tenth class (each class
  in turn). The default method (knn) and mmd must catch nearly every one; the others'
  bounds are loose floors below their measured power (bench/drift_methods.py
  --calibration prints the exact figures; the README quotes them).
"""

from __future__ import annotations

import numpy as np
import pytest

from duckcluster.core.assign import normalize_rows
from duckcluster.drift import DEFAULT_METHOD, DRIFT_METHODS, run_method

N_SPLITS = 20
# measured power at these settings is well above each floor (see the module docstring)
POWER_FLOOR = {"knn": 18, "mmd": 18, "mean_shift": 12, "classifier": 8, "energy": 6, "wasserstein": 6,
               "kl": 3, "cluster": 5}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return normalize_rows(X), y


def null_split(X, s):
    p = np.random.default_rng(1000 + s).permutation(len(X))
    return X[p[: len(X) // 2]], X[p[len(X) // 2:]]


def new_class_split(X, y, s, n=800, frac=0.1):
    rng = np.random.default_rng(2000 + s)
    c = s % 10
    others = rng.permutation(np.flatnonzero(y != c))
    new = rng.permutation(np.flatnonzero(y == c))
    k = round(n * frac)
    return X[others[:n]], np.concatenate([X[others[n:2 * n - k]], X[new[:k]]])


def params(name):
    return {"n_permutations": 200} if "n_permutations" in DRIFT_METHODS[name].params else {}


@pytest.fixture(scope="module")
def p_values(digits):
    X, y = digits
    out = {}
    for name in DRIFT_METHODS:
        null = [run_method(name, *null_split(X, s), params(name), seed=s).p_value
                for s in range(N_SPLITS)]
        shift = [run_method(name, *new_class_split(X, y, s), params(name), seed=s).p_value
                 for s in range(N_SPLITS)]
        out[name] = (np.array(null), np.array(shift))
    return out


@pytest.mark.parametrize("name", list(DRIFT_METHODS))
def test_false_positive_rate_is_consistent_with_alpha(p_values, name):
    null, _ = p_values[name]
    assert (null < 0.05).sum() <= 4, f"{name}: {(null < 0.05).sum()} of {N_SPLITS} null splits flagged"
    assert 0.3 <= null.mean() <= 0.7, f"{name}: null p-values not uniform-like (mean {null.mean():.2f})"


def test_false_positive_rate_over_all_methods(p_values):
    flagged = sum(int((null < 0.05).sum()) for null, _ in p_values.values())
    assert flagged <= 0.10 * N_SPLITS * len(DRIFT_METHODS)


@pytest.mark.parametrize("name", list(DRIFT_METHODS))
def test_power_on_a_ten_percent_new_class(p_values, name):
    _, shift = p_values[name]
    assert (shift < 0.05).sum() >= POWER_FLOOR[name], \
        f"{name}: caught {(shift < 0.05).sum()} of {N_SPLITS} new-class shifts"


def test_the_default_method_catches_a_new_class_nearly_always(p_values):
    assert DEFAULT_METHOD == "knn"
    assert (p_values["knn"][1] < 0.05).mean() >= 0.9


# -- identical and overlapping sides (issue 14) -----------------------------------------

def _high_dim_blobs(n, seed):
    """Sentence-embedding-like rows: 8 directions in 384-d, noise on every dimension."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, 384))
    return normalize_rows(centers[rng.integers(0, 8, n)] + 0.6 * rng.normal(size=(n, 384)))


#: methods that fit something (k-means centroids, a PCA projection) before testing
FITTED = ("cluster", "energy", "wasserstein", "kl")


@pytest.mark.parametrize("method", FITTED)
@pytest.mark.parametrize("kind", ["digits", "blobs384", "gauss384"])
def test_fitted_methods_never_flag_identical_sides(digits, kind, method):
    """embedding_drift(X, X) at 30-230 rows: the k-means reference (cluster) or the PCA
    (energy, wasserstein, kl) was fitted on baseline rows that the current side also held,
    and up to 20 of 21 sizes of 384-d rows were flagged (p down to 0.0005). Fitted on a
    pooled sample, both sides look identical: nothing to flag."""
    X, _ = digits
    flagged, low = 0, 1.0
    for n in range(30, 231, 10):
        rng = np.random.default_rng(n)
        A = X[rng.permutation(len(X))[:n]] if kind == "digits" else \
            _high_dim_blobs(n, n) if kind == "blobs384" else normalize_rows(rng.normal(size=(n, 384)))
        p = run_method(method, A, A.copy(), {"n_permutations": 200}, seed=n).p_value
        flagged += p < 0.05
        low = min(low, p)
    assert flagged == 0, f"{method} on {kind}: {flagged} of 21 identical pairs flagged " \
                         f"(lowest p {low})"


@pytest.mark.parametrize("method", FITTED)
@pytest.mark.parametrize("kind", ["digits", "blobs384"])
def test_fitted_methods_false_alarm_rate_on_small_and_overlapping_null_splits(digits, kind,
                                                                              method):
    """60 null comparisons of 30-220 rows: half of them with a current side that also holds
    every baseline row (a table compared with a superset of itself). Flagged at most
    alpha + 0.06 (two binomial standard deviations at n = 60)."""
    X = digits[0] if kind == "digits" else _high_dim_blobs(1000, 1)
    p_values = []
    for s in range(60):
        n = 30 + (s % 20) * 10
        perm = np.random.default_rng(3000 + s).permutation(len(X))
        B, C = X[perm[:n]], X[perm[n:2 * n]]
        if s % 2:
            C = np.concatenate([B, C])
        p_values.append(run_method(method, B, C, {"n_permutations": 200}, seed=s).p_value)
    p_values = np.array(p_values)
    assert (p_values < 0.05).mean() <= 0.05 + 0.06, (method, np.sort(p_values)[:8])
