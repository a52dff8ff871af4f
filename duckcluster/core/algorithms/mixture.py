"""Gaussian mixture model: soft clusters, each row gets its most likely component."""

from __future__ import annotations

import numpy as np

from ..._params import Param
from . import _choose_k
from ._base import Algorithm, labels_of, random_state

PARAMS = {
    "n_components": Param(int, 8, low=1, auto=True,
                          doc="number of mixture components (clusters); 'auto' = chosen by silhouette over 2..30 (cluster_runs.choices)"),
    "covariance_type": Param(
        str, "diag", choices=("full", "tied", "diag", "spherical"),
        doc="shape of each component; 'full' costs O(d^2) per component",
    ),
    "max_iter": Param(int, 100, low=1, doc="EM iterations"),
    "tol": Param(float, 1e-3, low=0.0, doc="convergence threshold on the likelihood gain"),
    "n_init": Param(int, 1, low=1, doc="restarts; the best likelihood wins"),
    "reg_covar": Param(float, 1e-6, low=0.0, doc="added to covariance diagonals"),
    "init_params": Param(
        str, "kmeans", choices=("kmeans", "k-means++", "random", "random_from_data"),
        doc="how responsibilities are initialised",
    ),
}


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(
        n_components=p["n_components"],
        covariance_type=p["covariance_type"],
        max_iter=p["max_iter"],
        tol=p["tol"],
        n_init=p["n_init"],
        reg_covar=p["reg_covar"],
        init_params=p["init_params"],
        random_state=random_state(seed),
    )
    return model.fit_predict(X)


_explain = _choose_k.with_auto_k("gaussian_mixture", _fit, "n_components")

GAUSSIAN_MIXTURE = Algorithm(
    name="gaussian_mixture",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=lambda p: _choose_k.count(p, "n_components"),
    noise=False,
    doc="Gaussian mixture (EM): n_components ellipsoidal clusters; rows take the likeliest.",
    explain=_explain,
)
