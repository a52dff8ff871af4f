"""k-means (scikit-learn ``KMeans``): k centroids, every row in a cluster.

Like faiss, the centroids are trained on a seeded sample of at most
``max_points_per_centroid`` rows per centroid (256 by default, faiss's value),
then every row goes to its nearest centroid. Lloyd iterations over 100k rows
cost O(n k d) each; 256 rows per centroid estimate a centroid to well within
its cluster's spread. Measured (bench/kmeans.py, 100k x 384, 30 clusters): the
same ARI against the truth as fitting every row, several times faster. Set
``max_points_per_centroid`` to 0 to fit on every row.
"""

from __future__ import annotations

import numpy as np

from ..._params import Param
from . import _choose_k
from ._base import Algorithm, labels_of, random_state

PARAMS = {
    "n_clusters": Param(int, 8, low=1, auto=True, doc="number of clusters k; 'auto' = chosen by silhouette over 2..30 (cluster_runs.choices)"),
    "n_init": Param(int, 1, low=1, doc="restarts; the best inertia wins ('auto' = 1 with k-means++)"),
    "max_iter": Param(int, 300, low=1, doc="iterations per restart"),
    "tol": Param(float, 1e-4, low=0.0, doc="relative tolerance on centroid movement"),
    "init": Param(str, "k-means++", choices=("k-means++", "random"), doc="seeding"),
    "max_points_per_centroid": Param(
        int, 256, low=0,
        doc="train on a seeded sample of at most this many rows per centroid, then assign "
            "every row (faiss's default); 0 = train on every row"),
}


def training_rows(n: int, p: dict, seed: int) -> np.ndarray | None:
    """Sorted positions of the seeded training sample, or None to train on all ``n`` rows."""
    cap = p["max_points_per_centroid"] * p["n_clusters"]
    if not cap or n <= cap:
        return None
    rng = np.random.default_rng(random_state(seed))
    return np.sort(rng.choice(n, size=cap, replace=False))


def kmeans_plusplus(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeding (scikit-learn's method: 2 + log(k) candidates per
    step, the one that lowers the potential most wins), vectorized.

    scikit-learn's own took 0.3-0.38 s on 7,680 x 384 rows with k = 30, more than
    its 7 Lloyd iterations; this takes a few milliseconds. Its small products run
    on one BLAS thread (on the busy 2-core machine: 0.08 s vs 0.25-0.29 s with
    OpenBLAS's two). Returns (k, d) float32.
    """
    from ..threads import limited

    with limited(1):
        return _kmeans_plusplus(X, k, seed)


def _kmeans_plusplus(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(random_state(seed))
    n = X.shape[0]
    X64 = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X64, X64)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    first = int(rng.integers(n))
    centers[0] = X64[first]
    closest = np.maximum(sq - 2.0 * X64 @ X64[first] + sq[first], 0.0)
    for c in range(1, k):
        pot = closest.sum()
        if pot <= 0:  # fewer distinct rows than k: any row will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * pot)
            cand = np.minimum(cand, n - 1)
        d = np.maximum(sq[cand][:, None] - 2.0 * X64[cand] @ X64.T + sq[None, :], 0.0)
        np.minimum(d, closest, out=d)
        best = int(np.argmin(d.sum(axis=1)))
        centers[c] = X64[cand[best]]
        closest = d[best]
    return centers.astype(np.float32)


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    rows = training_rows(X.shape[0], p, seed)
    X_train = X if rows is None else X[rows]
    init = p["init"]
    if init == "k-means++" and p["n_init"] == 1:
        init = kmeans_plusplus(X_train, p["n_clusters"], seed)
    model = KMeans(
        n_clusters=p["n_clusters"],
        n_init=p["n_init"],
        max_iter=p["max_iter"],
        tol=p["tol"],
        init=init,
        random_state=random_state(seed),
    )
    if rows is None:
        return model.fit_predict(X)
    model.fit(X_train)
    return model.predict(X)


_explain = _choose_k.with_auto_k("kmeans", _fit)

KMEANS = Algorithm(
    name="kmeans",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=lambda p: _choose_k.count(p, "n_clusters"),
    noise=False,
    doc="k-means: n_clusters centroids, every row assigned; fast, assumes round clusters.",
    explain=_explain,
)
