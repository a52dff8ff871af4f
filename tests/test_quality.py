"""Quality metrics: hand-checkable values, undefined cases, the silhouette sample path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

import duckcluster.core.quality as quality_mod
from duckcluster.core.assign import centroids_from_labels, normalize_rows, similarity_to_own
from duckcluster.core.quality import THRESHOLDS, compute_quality


def blobs(k=4, n_per=100, d=16, sigma=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.normal(size=(k, d)))
    y = np.repeat(np.arange(k), n_per)
    return normalize_rows(centres[y] + sigma * rng.normal(size=(y.size, d))), y


def quality_of(X, labels, seed=0):
    ids, C = centroids_from_labels(X, labels)
    return compute_quality(X, labels, similarity_to_own(X, C, labels, ids), seed)


def test_thresholds_are_documented_values():
    assert dict(THRESHOLDS) == {
        "min_silhouette_score": 0.1,
        "max_noise_ratio": 0.5,
        "min_mean_cosine_to_centroid": 0.3,
        "min_n_clusters": 2,
    }


def test_two_tight_orthogonal_pairs_are_perfect():
    """Cosine silhouette of identical pairs on orthogonal axes is exactly 1."""
    X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    q = quality_of(X, np.array([0, 0, 1, 1]))
    assert q.silhouette_score == pytest.approx(1.0)
    assert q.mean_cosine_to_centroid == pytest.approx(1.0)
    assert q.cluster_size_entropy == pytest.approx(1.0)
    assert q.noise_ratio == 0.0 and q.n_clusters == 2
    assert q.davies_bouldin == pytest.approx(0.0)
    assert q.should_recluster is False and q.reasons == ()
    assert q.silhouette_sample_size == 4


def test_entropy_of_unbalanced_sizes():
    """Sizes 3 and 1: H = -(.75 ln .75 + .25 ln .25) / ln 2 = 0.8113."""
    X = normalize_rows([[1, 0], [1, 0.1], [1, -0.1], [0, 1]])
    q = quality_of(X, np.array([0, 0, 0, 1]))
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert q.cluster_size_entropy == pytest.approx(expected)
    assert q.cluster_size_entropy == pytest.approx(0.8113, abs=1e-4)


def test_balanced_blobs_agree_with_sklearn():
    X, y = blobs()
    q = quality_of(X, y)
    assert q.silhouette_score == pytest.approx(silhouette_score(X, y, metric="cosine"), abs=1e-6)
    assert q.cluster_size_entropy == pytest.approx(1.0)
    assert q.silhouette_score > 0.8 and q.mean_cosine_to_centroid > 0.95
    assert q.calinski_harabasz > 100 and 0 < q.davies_bouldin < 0.5
    assert not q.should_recluster


def test_noise_rows_are_excluded_from_metrics_but_counted():
    X, y = blobs(k=3, n_per=50)
    labels = y.copy()
    labels[::10] = -1
    q = quality_of(X, labels)
    assert q.noise_ratio == pytest.approx(15 / 150)
    kept = labels >= 0
    assert q.silhouette_score == pytest.approx(
        silhouette_score(X[kept], labels[kept], metric="cosine"), abs=1e-6
    )
    assert q.silhouette_sample_size == 135


def test_one_cluster_leaves_two_cluster_metrics_undefined():
    """One cluster: silhouette/DB/CH/entropy None, no exception, recluster advised."""
    X, _ = blobs(k=1, n_per=20)
    q = quality_of(X, np.zeros(20, dtype=np.int64))
    assert q.n_clusters == 1
    assert q.silhouette_score is None and q.silhouette_sample_size is None
    assert q.davies_bouldin is None and q.calinski_harabasz is None
    assert q.cluster_size_entropy is None
    assert q.mean_cosine_to_centroid > 0.9
    assert q.should_recluster and q.reasons == ("n_clusters 1 < 2",)


def test_all_noise():
    X, _ = blobs(k=2, n_per=5)
    sims = np.full(10, np.nan, dtype=np.float32)
    q = compute_quality(X, np.full(10, -1), sims, seed=0)
    assert q.noise_ratio == 1.0 and q.n_clusters == 0
    assert q.mean_cosine_to_centroid is None and q.silhouette_score is None
    assert q.reasons == ("n_clusters 0 < 2", "noise_ratio 1.000 > 0.5")


def test_empty_input_does_not_raise():
    q = compute_quality(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0), 0)
    assert q.n_clusters == 0 and q.noise_ratio == 0.0 and q.should_recluster


def test_poor_clustering_gives_reasons():
    """Random labels on random directions: low silhouette and low cosine in 64-d."""
    rng = np.random.default_rng(3)
    X = normalize_rows(rng.normal(size=(200, 64)))
    q = quality_of(X, rng.integers(0, 4, size=200))
    assert q.should_recluster
    assert [r.split()[0] for r in q.reasons] == ["silhouette_score", "mean_cosine_to_centroid"]


def test_silhouette_sample_path_above_the_exact_max(monkeypatch):
    monkeypatch.setattr(quality_mod, "SILHOUETTE_EXACT_MAX", 60)
    X, y = blobs(k=3, n_per=100, sigma=0.3, seed=5)
    q1 = quality_of(X, y, seed=7)
    q2 = quality_of(X, y, seed=7)
    assert q1.silhouette_sample_size == 60
    assert q1.silhouette_score == q2.silhouette_score  # seeded sample
    exact = silhouette_score(X, y, metric="cosine")
    assert q1.silhouette_score == pytest.approx(exact, abs=0.1)
    # other metrics still use every row
    monkeypatch.setattr(quality_mod, "SILHOUETTE_EXACT_MAX", 10_000)
    q_exact = quality_of(X, y, seed=7)
    assert q_exact.silhouette_sample_size == 300
    assert q_exact.calinski_harabasz == pytest.approx(q1.calinski_harabasz)


def test_as_dict_is_plain():
    X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    d = quality_of(X, np.array([0, 0, 1, 1])).as_dict()
    assert list(d) == [
        "silhouette_score", "mean_cosine_to_centroid", "noise_ratio", "cluster_size_entropy",
        "davies_bouldin", "calinski_harabasz", "n_clusters", "should_recluster", "reasons",
        "silhouette_sample_size",
    ]
    assert d["reasons"] == [] and isinstance(d["silhouette_score"], float)
