"""Preprocessing chain (whitening, umap, pca) and plotting coordinates (_reduce)."""

from __future__ import annotations

import numpy as np
import pytest

import duckcluster.core.projection as reduce_mod
from duckcluster._errors import DataError, SpecError, UnknownNameError
from duckcluster.core.preprocess import PREPROCESSORS, run_preprocessing, validate_steps
from duckcluster.core.projection import reduce_coordinates


def correlated(n=2000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ A + 3.0).astype(np.float32)


# ------------------------------------------------------------------ validate_steps


def test_validate_steps_fills_defaults_in_order():
    steps = validate_steps(
        [{"method": "whitening"}, {"method": "umap", "n_components": 10, "metric": None}]
    )
    assert steps == (
        ("whitening", {"regularization": 1e-5}),
        ("umap", {"n_components": 10, "n_neighbors": 30, "min_dist": 0.0, "metric": "cosine",
                  "n_epochs": None}),
    )
    assert validate_steps(None) == ()
    assert validate_steps([]) == ()
    assert validate_steps(["pca"]) == (("pca", {"n_components": 50, "whiten": False}),)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        validate_steps([{"method": "umapp"}])
    assert str(err.value) == (
        "Unknown preprocessing method 'umapp'. Did you mean 'umap'? "
        "Valid values: 'none', 'pca', 'umap', 'whitening'."
    )


def test_bad_step_params_and_shapes():
    with pytest.raises(SpecError) as err:
        validate_steps([{"method": "umap", "n_components": 0}])
    assert str(err.value) == (
        "The 'n_components' parameter of umap preprocessing must be an int in the range "
        "[1, inf). Got 0 instead."
    )
    with pytest.raises(SpecError, match="Unknown parameter 'n_component' for pca preprocessing. "
                       "Did you mean 'n_components'?"):
        validate_steps([{"method": "pca", "n_component": 3}])
    with pytest.raises(SpecError, match=r"'regularization' parameter of whitening preprocessing "
                       r"must be a float in the range \(0, inf\)"):
        validate_steps([{"method": "whitening", "regularization": 0}])
    with pytest.raises(SpecError, match="Preprocessing step 2 has no 'method'"):
        validate_steps([{"method": "pca"}, {"n_components": 3}])
    with pytest.raises(SpecError, match="preprocessing must be a list of steps"):
        validate_steps({"method": "pca"})
    with pytest.raises(SpecError, match="Preprocessing step 1 must be a mapping"):
        validate_steps([3])


# ------------------------------------------------------------------ whitening


def test_whitening_decorrelates_to_identity_covariance():
    X = correlated()
    (step,) = validate_steps([{"method": "whitening"}])
    Y = run_preprocessing(X, (step,), seed=0)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    np.testing.assert_allclose(Y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(Y, rowvar=False), np.eye(8), atol=1e-3)


def test_whitening_is_zca_symmetric_map_in_original_coordinates():
    """ZCA: Y = (X - mean) @ W with W symmetric (PCA whitening would rotate)."""
    X = correlated(n=500, d=5, seed=1).astype(np.float64)
    Y = run_preprocessing(X, validate_steps(["whitening"]), seed=0).astype(np.float64)
    W, *_ = np.linalg.lstsq(X - X.mean(axis=0), Y, rcond=None)
    np.testing.assert_allclose(W, W.T, atol=1e-4)


def test_whitening_regularization_shrinks():
    """With regularization 1e6 >> every eigenvalue, W ~ I / 1000."""
    X = correlated(n=300, d=4, seed=2) / 100.0  # eigenvalues well below 1e6
    Y = run_preprocessing(X, validate_steps([{"method": "whitening", "regularization": 1e6}]), 0)
    np.testing.assert_allclose(Y * 1000.0, X - X.mean(axis=0), rtol=1e-3, atol=1e-5)


def test_whitening_with_fewer_rows_than_dimensions_stays_finite():
    X = np.random.default_rng(3).normal(size=(5, 20)).astype(np.float32)
    Y = run_preprocessing(X, validate_steps(["whitening"]), seed=0)
    assert np.isfinite(Y).all() and Y.shape == (5, 20)


# ------------------------------------------------------------------ pca


def test_pca_shape_and_agreement_with_svd():
    X = correlated(n=200, d=10, seed=4)
    Y = run_preprocessing(X, validate_steps([{"method": "pca", "n_components": 3}]), seed=0)
    assert Y.shape == (200, 3) and Y.dtype == np.float32
    Xc = X.astype(np.float64) - X.mean(axis=0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(Y), np.abs(U[:, :3] * S[:3]), rtol=1e-3, atol=1e-3)


def test_pca_clamps_n_components_to_the_data():
    X = correlated(n=10, d=4, seed=5)
    assert run_preprocessing(X, validate_steps(["pca"]), seed=0).shape == (10, 4)
    assert run_preprocessing(X[:3], validate_steps(["pca"]), seed=0).shape == (3, 3)


def test_chain_runs_in_order_and_none_is_a_no_op():
    X = correlated(n=300, d=6, seed=6)
    steps = validate_steps(["none", "whitening", {"method": "pca", "n_components": 2}])
    Y = run_preprocessing(X, steps, seed=0)
    # PCA after whitening sees an isotropic cloud: both components have variance ~1
    assert Y.shape == (300, 2)
    np.testing.assert_allclose(Y.var(axis=0, ddof=1), 1.0, atol=1e-3)
    assert set(PREPROCESSORS) == {"none", "pca", "umap", "whitening"}


# ------------------------------------------------------------------ umap


def test_umap_shape_determinism_and_clamping():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, 16))
    y = np.repeat(np.arange(3), 40)
    X = (centres[y] + 0.05 * rng.normal(size=(120, 16))).astype(np.float32)
    steps = validate_steps([{"method": "umap", "n_components": 2, "n_neighbors": 10}])
    A = run_preprocessing(X, steps, seed=11)
    B = run_preprocessing(X, steps, seed=11)
    assert A.shape == (120, 2) and A.dtype == np.float32
    np.testing.assert_array_equal(A, B)
    # the three blobs stay apart: each row's nearest neighbour is in its own blob
    D = np.linalg.norm(A[:, None] - A[None], axis=2) + np.eye(120) * 1e9
    assert (y[D.argmin(axis=1)] == y).all()
    # n_components clamped to min(50, d=16, n-2=10) on 12 rows
    small = run_preprocessing(X[:12], validate_steps(["umap"]), seed=0)
    assert small.shape == (12, 10)


def test_umap_needs_four_rows():
    with pytest.raises(DataError, match="umap preprocessing needs at least 4 rows. Got 3"):
        run_preprocessing(np.eye(3, dtype=np.float32), validate_steps(["umap"]), seed=0)


# ------------------------------------------------------------------ reduce_coordinates


def test_reduce_coordinates_matches_svd_and_is_deterministic():
    X = correlated(n=300, d=12, seed=8)
    Y = reduce_coordinates(X, 3, seed=1)
    assert Y.shape == (300, 3) and Y.dtype == np.float32
    Xc = X.astype(np.float64) - X.mean(axis=0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(Y), np.abs(U[:, :3] * S[:3]), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(Y, reduce_coordinates(X, 3, seed=1))


def test_reduce_coordinates_zero_pads_small_inputs():
    """Fewer dimensions or rows than asked: missing components are zeros."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    Y = reduce_coordinates(X, 3, seed=0)
    assert Y.shape == (3, 3) and (Y[:, 2] == 0).all() and (Y[:, :2] != 0).any()
    two = reduce_coordinates(X[:2], 3, seed=0)  # 2 rows span one direction
    assert (two[:, 1:] == 0).all() and abs(two[0, 0]) == pytest.approx(np.sqrt(0.5), rel=1e-5)
    assert reduce_coordinates(X[:1], 2, seed=0).tolist() == [[0.0, 0.0]]
    assert reduce_coordinates(X[:0], 2, seed=0).shape == (0, 2)


def test_reduce_coordinates_fits_on_a_sample_of_big_inputs(monkeypatch):
    monkeypatch.setattr(reduce_mod, "FIT_SAMPLE", 100)
    X = correlated(n=1000, d=6, seed=9)
    Y = reduce_coordinates(X, 2, seed=3)
    assert Y.shape == (1000, 2)
    # the first direction from 100 rows is close to the one from all rows
    full = correlated(n=1000, d=6, seed=9)
    monkeypatch.setattr(reduce_mod, "FIT_SAMPLE", 10_000)
    Z = reduce_coordinates(full, 2, seed=3)
    assert abs(np.corrcoef(Y[:, 0], Z[:, 0])[0, 1]) > 0.99


def test_umap_large_path_is_reproducible_and_thread_independent(monkeypatch):
    """Above the thresholds: IVF kNN, PCA init, parallel snapshot layout."""
    import numba

    import duckcluster.core.preprocess as pre

    monkeypatch.setattr(pre, "EXACT_KNN_MAX_ROWS", 100)
    monkeypatch.setattr(pre, "SPECTRAL_INIT_MAX_ROWS", 100)
    monkeypatch.setattr(pre, "PARALLEL_LAYOUT_MIN_ROWS", 100)
    rng = np.random.default_rng(12)
    centres = rng.normal(size=(4, 64))
    y = np.repeat(np.arange(4), 100)
    X = (centres[y] + 0.05 * rng.normal(size=(400, 64))).astype(np.float32)
    steps = validate_steps([{"method": "umap", "n_components": 3, "n_neighbors": 10}])
    A = run_preprocessing(X, steps, seed=5)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        B = run_preprocessing(X, steps, seed=5)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(A, B)
    D = np.linalg.norm(A[:, None] - A[None], axis=2) + np.eye(400) * 1e9
    assert (y[D.argmin(axis=1)] == y).all()


def test_ivf_knn_finds_the_exact_neighbours_of_clustered_rows():
    from duckcluster.core.preprocess import _exact_knn, _ivf_knn

    rng = np.random.default_rng(13)
    centres = rng.normal(size=(20, 16))
    X = (centres[rng.integers(0, 20, 2000)] + 0.1 * rng.normal(size=(2000, 16))).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        ei, ed = _exact_knn(X, 15, metric)
        ii, idist = _ivf_knn(X, 15, metric, seed=0)
        assert (ii[:, 0] == np.arange(2000)).all() and (ei[:, 0] == np.arange(2000)).all()
        recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(ii, ei)])
        assert recall > 0.95
        np.testing.assert_array_equal(ii, _ivf_knn(X, 15, metric, seed=0)[0])


def test_ivf_knn_probes_more_cells_until_its_recall_is_checked():
    """On rows with no cluster structure the inverted-file search misses many true
    neighbours; the checked version measures that on a seeded sample and probes
    more cells until the recall holds, deterministically."""
    from duckcluster.core.preprocess import IVF_MIN_RECALL, _checked_ivf_knn, _exact_knn, _ivf_knn

    X = np.random.default_rng(4).normal(size=(4000, 30)).astype(np.float32)
    exact, _ = _exact_knn(X, 15, "cosine")

    def recall(idx):
        return np.mean([len(set(a[1:]) & set(b[1:])) / 14 for a, b in zip(idx, exact)])

    plain, _ = _ivf_knn(X, 15, "cosine", seed=0)
    checked, dist = _checked_ivf_knn(X, 15, "cosine", seed=0)
    assert recall(plain) < 0.8
    assert recall(checked) >= IVF_MIN_RECALL - 0.03  # measured on 256 rows, checked on all
    assert (checked[:, 0] == np.arange(4000)).all() and (dist[:, 0] == 0).all()
    np.testing.assert_array_equal(checked, _checked_ivf_knn(X, 15, "cosine", seed=0)[0])


def test_top_k_rows_keeps_the_largest_by_value_then_column():
    """The kNN graph's top-k kernel: the same rows as a full sort by (-value, column),
    ties (exact duplicates of real texts have equal similarities) included."""
    from duckcluster.core.preprocess.layout import top_k_rows

    rng = np.random.default_rng(0)
    for (n, m), k in (((40, 30), 30), ((200, 700), 15), ((64, 300), 1)):
        S = rng.normal(size=(n, m)).astype(np.float32)
        S[:, 5:25] = S[:, 3:4]
        S[np.arange(n), np.arange(n) % m] = np.inf
        cols = np.broadcast_to(np.arange(m), S.shape)
        want = np.lexsort((cols, -S), axis=1)[:, :k]
        got, vals = top_k_rows(S, k)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(vals, np.take_along_axis(S, want, axis=1))


def test_umap_curve_params_of_the_defaults_are_curve_fits_own():
    """The (a, b) kept for min_dist 0 are what curve_fit gives, and a default umap step
    uses them without importing scipy.optimize (a fresh process's first result)."""
    import subprocess
    import sys

    from duckcluster.core.preprocess import AB_FITTED, _ab_params, _fit_ab

    for (spread, min_dist), ab in AB_FITTED.items():
        assert ab == pytest.approx(_fit_ab(spread, min_dist), rel=1e-9)
        assert _ab_params(spread, min_dist) == ab
    assert _ab_params(1.0, 0.25) == pytest.approx(_fit_ab(1.0, 0.25))  # others: fitted
    code = ("import sys, numpy as np; from duckcluster.core.preprocess import run_preprocessing, "
            "validate_steps; X = np.random.default_rng(0).normal(size=(60, 8)).astype('float32'); "
            "run_preprocessing(X, validate_steps([{'method': 'umap', 'n_components': 2, "
            "'n_epochs': 10}]), 0); print('scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
