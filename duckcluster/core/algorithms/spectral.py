"""Spectral clustering: k-means on the eigenvectors of a similarity graph."""

from __future__ import annotations

import warnings

import numpy as np

from ..._params import Param
from . import _choose_k
from ._base import Algorithm, labels_of, random_state

PARAMS = {
    "n_clusters": Param(int, 8, low=1, auto=True, doc="number of clusters; 'auto' = chosen by silhouette over 2..30 (cluster_runs.choices)"),
    "affinity": Param(
        str, "nearest_neighbors", choices=("nearest_neighbors", "rbf"), doc="similarity graph"
    ),
    "n_neighbors": Param(int, 10, low=1, doc="graph degree for affinity='nearest_neighbors'"),
    "gamma": Param(float, 1.0, low=0.0, low_open=True, doc="kernel width for affinity='rbf'"),
    "assign_labels": Param(
        str, "kmeans", choices=("kmeans", "discretize", "cluster_qr"),
        doc="how labels are read off the embedding",
    ),
}


def _min_rows(p: dict) -> int:
    if p["affinity"] == "nearest_neighbors":
        return max(_choose_k.count(p, "n_clusters"), p["n_neighbors"] + 1)
    return _choose_k.count(p, "n_clusters")


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters=p["n_clusters"],
        affinity=p["affinity"],
        n_neighbors=p["n_neighbors"],
        gamma=p["gamma"],
        assign_labels=p["assign_labels"],
        random_state=random_state(seed),
    )
    with warnings.catch_warnings():
        # "Graph is not fully connected": expected with well-separated clusters.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return model.fit_predict(X)


_explain = _choose_k.with_auto_k("spectral", _fit)

SPECTRAL = Algorithm(
    name="spectral",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=_min_rows,
    noise=False,
    doc="Spectral: clusters of a k-nearest-neighbour graph; finds non-convex shapes.",
    quadratic_memory=True,
    explain=_explain,
)
