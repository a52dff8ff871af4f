"""Drift methods as pure numeric cores: known answers, agreement with references, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import energy_distance, wasserstein_distance

from duckcluster import DataError, SpecError, UnknownNameError
from duckcluster.drift.monitor import reservoir_slots
from duckcluster.drift import DRIFT_METHODS, Reference, js_divergence, run_method, share_test
from duckcluster.drift._base import permutation_labels, permutation_p_value
from duckcluster.drift._kernel import permutation_test, sq_distances, unbiased_statistic
from duckcluster.core.projection import fit_scores
from duckcluster.drift.kl import kl_batch
from duckcluster.drift.mean_shift import cosine_distance_batch
from duckcluster.drift.wasserstein import wasserstein_1d_batch

FAST = {"n_permutations": 99}


def gauss(n, d=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 0] += shift
    return X.astype(np.float32)


def fast(name):
    return FAST if "n_permutations" in DRIFT_METHODS[name].params else {}


@pytest.mark.parametrize("name", list(DRIFT_METHODS))
def test_every_method_flags_a_big_shift_and_not_a_copy(name):
    """A 3-sigma shift is drift for every method; two halves of one sample are not."""
    B, C = gauss(300, seed=1), gauss(300, shift=3.0, seed=2)
    r = run_method(name, B, C, fast(name), seed=0)
    assert r.drift_detected and r.p_value < 0.05 and r.method == name
    same = run_method(name, B[:150], B[150:], fast(name), seed=0)
    assert not same.drift_detected and same.p_value > 0.05
    assert r.threshold == 0.05 and r.as_row()["statistic"] == pytest.approx(r.statistic)


@pytest.mark.parametrize("name", list(DRIFT_METHODS))
def test_same_seed_same_answer(name):
    B, C = gauss(200, seed=3), gauss(200, shift=0.3, seed=4)
    a = run_method(name, B, C, fast(name), seed=7)
    b = run_method(name, B, C, fast(name), seed=7)
    assert (a.statistic, a.p_value, a.details) == (b.statistic, b.p_value, b.details)


def test_permutation_p_value_is_exact_and_never_zero():
    assert permutation_p_value([5.0, 1.0, 2.0, 3.0]) == pytest.approx(1 / 4)
    assert permutation_p_value([1.0, 1.0, 1.0]) == 1.0  # ties count against drift
    Z = permutation_labels(3, 2, 10, np.random.default_rng(0))
    assert Z.shape == (5, 11) and (Z.sum(axis=0) == 3).all() and Z[:3, 0].all()


def test_kernel_statistic_matches_the_textbook_formula():
    """Unbiased MMD^2 and the batched permutation sums equal a direct computation."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(15, 3)) + 0.5
    P = np.concatenate([X, Y])
    K = np.exp(-sq_distances(P, P) / 2)
    kxx = np.exp(-sq_distances(X, X) / 2)
    kyy = np.exp(-sq_distances(Y, Y) / 2)
    kxy = np.exp(-sq_distances(X, Y) / 2)
    want = ((kxx.sum() - 20) / (20 * 19) + (kyy.sum() - 15) / (15 * 14) - 2 * kxy.mean())
    assert unbiased_statistic(K, 20) == pytest.approx(want)
    stat, p = permutation_test(K, 20, 99, np.random.default_rng(1))
    assert stat == pytest.approx(want) and 0 < p <= 1


def test_energy_on_one_dimension_matches_scipy():
    """With K = -|x - y|, the kernel statistic is the energy distance E = 2E|X-Y| - ...;
    scipy's energy_distance is sqrt(E) in one dimension."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=30) + 1.0
    P = np.concatenate([x, y])[:, None]
    K = -np.sqrt(sq_distances(P, P))
    # the unbiased form differs from the V-statistic by the diagonal weights
    n, m = 40, 30
    v_stat = 2 * np.abs(x[:, None] - y[None, :]).mean() - np.abs(x[:, None] - x).sum() / (n * (n - 1)) \
        - np.abs(y[:, None] - y).sum() / (m * (m - 1))
    assert unbiased_statistic(K, n) == pytest.approx(v_stat)
    v_biased = 2 * np.abs(x[:, None] - y).mean() - np.abs(x[:, None] - x).mean() - np.abs(y[:, None] - y).mean()
    assert np.sqrt(v_biased) == pytest.approx(energy_distance(x, y))


def test_batched_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(size=50), rng.exponential(size=70)])
    Z = permutation_labels(50, 70, 5, rng)
    got = wasserstein_1d_batch(v, Z)
    for j in range(Z.shape[1]):
        z = Z[:, j].astype(bool)
        assert got[j] == pytest.approx(wasserstein_distance(v[z], v[~z]), rel=1e-5)


def test_batched_kl_and_mean_shift_known_answers():
    codes = np.array([0, 0, 1, 1, 0, 1, 1, 1])  # baseline rows 0-3: 2/2; current rows 4-7: 1/3
    Z = np.zeros((8, 1), dtype=np.float32)
    Z[:4, 0] = 1
    pb, pc = np.array([2.5, 2.5]) / 5, np.array([1.5, 3.5]) / 5
    assert kl_batch(codes, 2, Z, 0.5)[0] == pytest.approx((pc * np.log(pc / pb)).sum())
    X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    Z = np.array([[1], [1], [0], [0]], dtype=np.float32)
    assert cosine_distance_batch(X, Z)[0] == pytest.approx(1.0)  # orthogonal means


def test_js_divergence_and_share_test_known_answers():
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert js_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    t = share_test(np.array([50, 50, 0]), np.array([50, 50, 0]), 999, np.random.default_rng(0))
    assert t.js_divergence == pytest.approx(0.0) and t.p_value == 1.0 and t.chi2_dof == 1
    t = share_test(np.array([90, 10]), np.array([10, 90]), 999, np.random.default_rng(0))
    assert t.p_value == pytest.approx(1 / 1000) and t.chi2_p_value < 1e-20


def test_projection_is_deterministic_and_standardized():
    X = gauss(500, d=6, seed=5) * np.array([5, 3, 1, 1, 1, 1], dtype=np.float32)
    a, b = fit_scores(X, 3), fit_scores(X[::-1].copy(), 3)
    np.testing.assert_allclose(a.components, b.components, atol=1e-6)  # sign fixed
    Z = a(X)
    np.testing.assert_allclose(Z.std(axis=0, ddof=1), 1.0, atol=1e-6)
    assert abs(a.components[0, 0]) > 0.99  # PC1 is the widest axis


def test_large_inputs_are_sampled_and_say_so():
    B, C = gauss(3000, seed=1), gauss(2500, seed=2)
    r = run_method("mmd", B, C, {"max_samples": 200, "n_permutations": 99})
    assert r.details["sampled"] is True
    assert (r.details["n_tested_baseline"], r.details["n_tested_current"]) == (200, 200)
    small = run_method("mmd", B[:100], C[:100], FAST)
    assert small.details["sampled"] is False


def test_cluster_method_with_a_reference_counts_new_content():
    """Rows far from every reference centroid land in -1: the new-content share."""
    C0 = np.eye(4, 8, dtype=np.float32)
    ref = Reference(cluster_ids=np.arange(4), centroids=C0, source="test")
    rng = np.random.default_rng(0)
    B = C0[rng.integers(0, 4, 400)] + 0.05 * rng.normal(size=(400, 8)).astype(np.float32)
    new = np.zeros((100, 8), dtype=np.float32)
    new[:, 6] = 1
    C = np.concatenate([B[:300], new + 0.05 * rng.normal(size=(100, 8)).astype(np.float32)])
    r = run_method("cluster", B, C, {"n_permutations": 999}, reference=ref)
    assert r.drift_detected and r.details["new_content_share"] == pytest.approx(0.25)
    assert r.details["baseline_unassigned_share"] == 0.0
    assert r.details["assignment_threshold"] == 0.5 and r.details["reference"] == "test"
    shares = {c["cluster_id"]: c for c in r.details["clusters"]}
    assert shares[-1]["current_count"] == 100 and sum(c["baseline_count"] for c in shares.values()) == 400


def test_reservoir_slots_follow_algorithm_r():
    """Over many seeds every arriving row is kept with probability R / n."""
    R, n = 20, 200
    kept = np.zeros(n)
    for s in range(400):
        rng = np.random.default_rng(s)
        owner = np.full(R, -1)
        seen = 0
        for size in (7, 50, 3, 140):  # batches of uneven size
            slots = reservoir_slots(seen, R, size, rng)
            for i, sl in enumerate(slots):
                if sl >= 0:
                    owner[sl] = seen + i
            seen += size
        assert (owner >= 0).all() and len(set(owner)) == R
        kept[owner] += 1
    rate = kept / 400
    assert abs(rate.mean() - R / n) < 1e-9
    assert rate[:20].mean() == pytest.approx(R / n, abs=0.03)  # early rows not favoured
    assert rate[-20:].mean() == pytest.approx(R / n, abs=0.03)


# -- errors ----------------------------------------------------------------------------

def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        run_method("mmdd", gauss(20), gauss(20))
    msg = str(info.value)
    assert "Did you mean 'mmd'?" in msg
    for name in DRIFT_METHODS:
        assert repr(name) in msg


def test_bad_params_name_the_param_and_range():
    with pytest.raises(SpecError, match="'n_permutations' parameter of drift method mmd must be"):
        run_method("mmd", gauss(20), gauss(20), {"n_permutations": 3})
    with pytest.raises(SpecError, match="Unknown parameter 'bins' for drift method mmd"):
        run_method("mmd", gauss(20), gauss(20), {"bins": 3})
    with pytest.raises(SpecError, match="alpha must be a float in the range"):
        run_method("mmd", gauss(20), gauss(20), alpha=1.5)


def test_data_errors_say_what_and_how_to_fix():
    with pytest.raises(DataError, match="baseline embeddings have 8 dimensions but the current ones have 4"):
        run_method("mmd", gauss(20), gauss(20, d=4))
    with pytest.raises(DataError, match="needs at least 10 rows on each side; the current has 3"):
        run_method("energy", gauss(20), gauss(3))
    bad = gauss(20)
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN or Inf"):
        run_method("mmd", gauss(20), bad)


def test_every_statistic_is_described_and_listed_for_triggers():
    """A trigger's when_drift_above compares a method's statistic, whose scale differs per
    method: each method says what it is, and docs/operations.md lists that text."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    for name, method in DRIFT_METHODS.items():
        assert method.statistic, name
        assert f"| `{name}` | {method.statistic} |" in doc, name


def test_knn_statistic_is_minus_log10_of_the_smallest_component_p_value():
    B, C = gauss(150, seed=1), gauss(150, shift=0.6, seed=2)
    r = run_method("knn", B, C, seed=3)
    comp = r.details["component_p_values"]
    assert r.statistic == pytest.approx(-np.log10(min(comp.values())))
    assert r.statistic <= np.log10(501) + 1e-9  # 500 permutations: p >= 1/501
    assert r.p_value >= min(comp.values())  # the min-p combination is calibrated after


@pytest.mark.parametrize("flat_cells", [1024, 8])
def test_approximate_neighbours_stay_in_their_blob_flat_or_two_level_cells(monkeypatch,
                                                                           flat_cells):
    """Above 12,000 pooled rows knn searches an inverted file; above FLAT_CELLS cells its
    cells come from a two-level k-means (1M + 1M rows: 10,000 cells). Either way a row's
    neighbours are rows of its own well-separated blob."""
    from conftest import blobs

    from duckcluster.drift import _graph

    monkeypatch.setattr(_graph, "FLAT_CELLS", flat_cells)
    X, y = blobs(n_per=700, k=20, d=16, spread=0.05, seed=5)
    g = _graph.pooled_graph(X / np.linalg.norm(X, axis=1, keepdims=True), 10, seed=1)
    assert g.details["neighbours"] == "approximate"
    assert (y[g.idx] == y[:, None]).mean() > 0.99
    assert (g.idx != np.arange(len(X))[:, None]).all()  # never itself
