"""Nearest-centroid assignment: hand-computed cases, thresholds, chunking, ties."""

from __future__ import annotations

import numpy as np
import pytest

from duckcluster.core.assign import assign, centroids_from_labels, normalize_rows, similarity_to_own
from duckcluster._errors import DataError

S = np.float32(np.sqrt(0.5))


def test_normalize_rows_copies_and_keeps_zero_rows():
    X = np.array([[3, 4], [0, 0], [0, -2]], dtype=np.float64)
    Y = normalize_rows(X)
    assert Y.dtype == np.float32
    np.testing.assert_allclose(Y, [[0.6, 0.8], [0, 0], [0, -1]], atol=1e-7)
    assert X[0, 0] == 3  # input untouched
    F = np.array([[2.0, 0.0]], dtype=np.float32)
    assert normalize_rows(F) is not F and F[0, 0] == 2.0


def test_centroids_are_normalized_member_means_sorted_without_noise():
    X = normalize_rows([[1, 0], [0, 1], [1, 0], [0, 3], [5, 5]])
    ids, C = centroids_from_labels(X, np.array([4, 4, -1, 1, 1]))
    assert ids.tolist() == [1, 4] and ids.dtype == np.int64
    assert C.dtype == np.float32
    # cluster 1: mean of [0,1] and [s,s] ; cluster 4: mean of [1,0] and [0,1]
    m1 = np.array([S, 1 + S]) / np.linalg.norm([S, 1 + S])
    np.testing.assert_allclose(C, [m1, [S, S]], atol=1e-6)


def test_centroids_of_opposite_rows_are_zero_and_no_clusters_is_empty():
    X = normalize_rows([[1, 0], [-1, 0]])
    ids, C = centroids_from_labels(X, np.array([0, 0]))
    assert ids.tolist() == [0] and (C == 0).all()
    ids, C = centroids_from_labels(X, np.array([-1, -1]))
    assert ids.shape == (0,) and C.shape == (0, 2)


def test_assign_hand_computed():
    C = np.array([[1, 0], [0, 1]], dtype=np.float32)
    X = np.array([[0.6, 0.8], [0.8, 0.6], [-1, 0]], dtype=np.float32)
    idx, sims = assign(X, C)
    assert idx.tolist() == [1, 0, 1] and idx.dtype == np.int64
    np.testing.assert_allclose(sims, [0.8, 0.8, 0.0], atol=1e-7)
    assert sims.dtype == np.float32


def test_threshold_marks_weak_matches_as_noise_but_keeps_similarity():
    C = np.array([[1, 0], [0, 1]], dtype=np.float32)
    X = np.array([[0.6, 0.8], [0.8, 0.6], [-1, 0], [S, S]], dtype=np.float32)
    idx, sims = assign(X, C, threshold=0.75)
    assert idx.tolist() == [1, 0, -1, -1]  # sqrt(.5) = 0.707 < 0.75
    np.testing.assert_allclose(sims, [0.8, 0.8, 0.0, S], atol=1e-7)
    idx, _ = assign(X, C, threshold=0.8)  # equal to the threshold is kept
    assert idx.tolist()[:2] == [1, 0]


def test_ties_go_to_the_lowest_centroid_index():
    C = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    X = np.array([[S, S], [1, 0], [0, 0]], dtype=np.float32)
    idx, sims = assign(X, C)
    assert idx.tolist() == [0, 0, 0]  # zero row: all similarities 0 -> first
    np.testing.assert_allclose(sims, [S, 1, 0], atol=1e-7)


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 100, 101])
def test_chunked_equals_unchunked(batch_rows):
    rng = np.random.default_rng(0)
    X = normalize_rows(rng.normal(size=(100, 16)))
    C = normalize_rows(rng.normal(size=(7, 16)))
    ref_idx = np.argmax(X @ C.T, axis=1)
    idx, sims = assign(X, C, threshold=0.1, batch_rows=batch_rows)
    full_idx, full_sims = assign(X, C, threshold=0.1)
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_array_equal(sims, full_sims)
    np.testing.assert_array_equal(np.where(full_sims >= 0.1, ref_idx, -1), full_idx)


def test_no_centroids_and_dimension_mismatch():
    X = normalize_rows(np.eye(3))
    idx, sims = assign(X, np.zeros((0, 3), dtype=np.float32))
    assert idx.tolist() == [-1, -1, -1] and np.isnan(sims).all()
    with pytest.raises(DataError, match="Embeddings have 3 dimensions but the centroids have 4"):
        assign(X, np.ones((2, 4), dtype=np.float32))


def test_similarity_to_own_centroid():
    X = normalize_rows([[1, 0], [0, 1], [0.6, 0.8], [1, 1]])
    labels = np.array([5, 5, 2, -1])
    ids, C = centroids_from_labels(X, labels)
    sims = similarity_to_own(X, C, labels, ids)
    assert sims.dtype == np.float32
    np.testing.assert_allclose(sims[:3], [S, S, 1.0], atol=1e-6)
    assert np.isnan(sims[3])
    with pytest.raises(DataError, match=r"Labels \[7\] have no centroid"):
        similarity_to_own(X, C, np.array([7, 5, 2, -1]), ids)


def test_assign_roundtrip_on_blobs_matches_labels():
    """Rows of well-separated blobs are assigned back to their own centroid."""
    rng = np.random.default_rng(1)
    centres = normalize_rows(rng.normal(size=(4, 32)))
    y = np.repeat(np.arange(4), 50)
    X = normalize_rows(centres[y] + 0.05 * rng.normal(size=(200, 32)))
    ids, C = centroids_from_labels(X, y)
    idx, sims = assign(X, C, threshold=0.5, batch_rows=33)
    np.testing.assert_array_equal(ids[idx], y)
    np.testing.assert_allclose(sims, similarity_to_own(X, C, y, ids), atol=1e-6)


def test_nearest_reuses_its_block_and_matches_assign_raw():
    """Nearest.raw (the assign UDF's per-batch path) gives assign_raw's answer for
    batches of any size in any order, and refuses the same bad rows."""
    from duckcluster.core.assign import Nearest, assign_raw

    rng = np.random.default_rng(3)
    C = normalize_rows(rng.normal(size=(7, 16)))
    near = Nearest(C)
    for n in (5, 2048, 1, 3000, 17):  # grows and shrinks the per-thread block
        X = (rng.normal(size=(n, 16)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32)
        idx, sims = near.raw(X)
        want_idx, want_sims = assign_raw(X, C)
        assert idx.tolist() == want_idx.tolist()
        np.testing.assert_allclose(sims, want_sims, rtol=1e-6)
        assert sims.dtype == np.float32 and sims.shape == (n,)
    near.KEEP_BYTES = 7 * 4 * 100  # blocks above 100 rows are made per call, not kept
    for n in (3000, 50, 200):
        X = rng.normal(size=(n, 16)).astype(np.float32)
        assert near.raw(X)[0].tolist() == assign_raw(X, C)[0].tolist()
    X = rng.normal(size=(4, 16)).astype(np.float32)
    tiny = X.copy()
    tiny[1] *= 1e-30  # squares underflow float32: redone in float64, still assigned
    assert near.raw(tiny)[0].tolist() == assign_raw(X, C)[0].tolist()
    X[2] = 0.0
    with pytest.raises(DataError, match="zero vector"):
        near.raw(X)
    X[2] = np.nan
    with pytest.raises(DataError, match="NaN or Inf"):
        near.raw(X)
