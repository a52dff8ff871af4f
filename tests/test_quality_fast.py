"""The O(n k d) quality metrics agree with scikit-learn's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from duckcluster.core.quality import cosine_silhouette, euclidean_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(6, 16))
    y = rng.integers(0, 6, 3000)
    X = (C[y] + 0.8 * rng.normal(size=(3000, 16))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y[:1] = 99  # a single-member cluster scores 0, as in sklearn
    assert cosine_silhouette(X, y, chunk=700) == pytest.approx(
        silhouette_score(X, y, metric="cosine"), abs=1e-6)
    db, ch = euclidean_scores(X, y, chunk=700)
    assert db == pytest.approx(davies_bouldin_score(X, y), rel=1e-6)
    assert ch == pytest.approx(calinski_harabasz_score(X, y), rel=1e-6)


def test_unnormalized_rows_use_cosine():
    """Rows are normalized inside: scaling a row changes nothing."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    scaled = X * rng.uniform(0.5, 3, size=(400, 1)).astype(np.float32)
    assert cosine_silhouette(scaled, y) == pytest.approx(cosine_silhouette(X, y), abs=1e-9)
    assert cosine_silhouette(X, y) == pytest.approx(silhouette_score(X, y, metric="cosine"),
                                                    abs=1e-6)
