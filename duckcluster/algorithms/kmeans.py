"""k-means (scikit-learn ``KMeans``): k centroids, every row in a cluster."""

from __future__ import annotations

import numpy as np

from .._params import Param
from ._base import Algorithm, random_state, relabeled

PARAMS = {
    "n_clusters": Param(int, 8, low=1, doc="number of clusters k"),
    "n_init": Param(int, 1, low=1, doc="restarts; the best inertia wins ('auto' = 1 with k-means++)"),
    "max_iter": Param(int, 300, low=1, doc="iterations per restart"),
    "tol": Param(float, 1e-4, low=0.0, doc="relative tolerance on centroid movement"),
    "init": Param(str, "k-means++", choices=("k-means++", "random"), doc="seeding"),
}


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    model = KMeans(
        n_clusters=p["n_clusters"],
        n_init=p["n_init"],
        max_iter=p["max_iter"],
        tol=p["tol"],
        init=p["init"],
        random_state=random_state(seed),
    )
    return model.fit_predict(X)


KMEANS = Algorithm(
    name="kmeans",
    params=PARAMS,
    fit_predict=relabeled(_fit),
    min_rows=lambda p: p["n_clusters"],
    noise=False,
    doc="k-means: n_clusters centroids, every row assigned; fast, assumes round clusters.",
)
