"""Density-based algorithms: dbscan, hdbscan, optics. They label sparse rows -1."""

from __future__ import annotations

import warnings

import numpy as np

from ..._errors import MissingDependencyError
from ..._params import Param
from ._base import Algorithm, relabeled

# ---------------------------------------------------------------- dbscan

DBSCAN_PARAMS = {
    "eps": Param(float, 0.5, low=0.0, low_open=True, doc="neighbourhood radius in metric units"),
    "min_samples": Param(int, 5, low=1, doc="neighbours (incl. the row) that make a core row"),
    "metric": Param(str, "cosine", choices=("cosine", "euclidean"), doc="distance"),
}


def _fit_dbscan(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=p["eps"], min_samples=p["min_samples"], metric=p["metric"]).fit_predict(X)


DBSCAN = Algorithm(
    name="dbscan",
    params=DBSCAN_PARAMS,
    fit_predict=relabeled(_fit_dbscan),
    min_rows=lambda p: 1,
    noise=True,
    doc="DBSCAN: clusters are rows within eps of min_samples neighbours; the rest is noise.",
)

# ---------------------------------------------------------------- hdbscan

HDBSCAN_PARAMS = {
    "min_cluster_size": Param(int, 5, low=2, doc="smallest group that counts as a cluster"),
    "min_samples": Param(
        int, None, low=1, nullable=True, doc="density smoothing; None = min_cluster_size"
    ),
    "cluster_selection_epsilon": Param(
        float, 0.0, low=0.0, doc="merge clusters closer than this distance"
    ),
    "cluster_selection_method": Param(str, "eom", choices=("eom", "leaf"), doc="flat cut"),
    "metric": Param(
        str,
        "euclidean",
        choices=("euclidean", "cosine"),
        doc="distance; on L2-normalized rows euclidean orders neighbours like cosine, "
        "and 'cosine' is an O(n^2) brute-force path",
    ),
    "allow_single_cluster": Param(bool, False, doc="allow one cluster instead of noise"),
}


def _fit_hdbscan(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    # hdbscan is deterministic; the seed is not used.
    kwargs = dict(
        min_cluster_size=p["min_cluster_size"],
        min_samples=p["min_samples"],
        cluster_selection_epsilon=p["cluster_selection_epsilon"],
        cluster_selection_method=p["cluster_selection_method"],
        metric=p["metric"],
        allow_single_cluster=p["allow_single_cluster"],
    )
    # Neither implementation accepts more neighbours than rows; fewer rows than
    # min_samples simply means no dense region, i.e. all noise.
    k = p["min_samples"] or p["min_cluster_size"]
    if X.shape[0] <= k:
        return np.full(X.shape[0], -1, dtype=np.int64)
    try:
        import hdbscan
    except ImportError:
        hdbscan = None
    if hdbscan is not None:
        if p["metric"] == "cosine":
            kwargs["algorithm"] = "generic"
        return hdbscan.HDBSCAN(**kwargs).fit_predict(X)
    try:
        from sklearn.cluster import HDBSCAN as SkHDBSCAN
    except ImportError as exc:  # scikit-learn < 1.3
        raise MissingDependencyError(
            "hdbscan needs the package 'hdbscan' (or scikit-learn >= 1.3), which is not "
            "installed. Install it with: pip install hdbscan"
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return SkHDBSCAN(**kwargs).fit_predict(X)


HDBSCAN = Algorithm(
    name="hdbscan",
    params=HDBSCAN_PARAMS,
    fit_predict=relabeled(_fit_hdbscan),
    min_rows=lambda p: 1,
    noise=True,
    doc="HDBSCAN: density clusters of varying density, no k needed; sparse rows are noise.",
)

# ---------------------------------------------------------------- optics

OPTICS_PARAMS = {
    "min_samples": Param(int, 5, low=2, doc="neighbours (incl. the row) that make a core row"),
    "max_eps": Param(
        float, None, low=0.0, low_open=True, nullable=True, doc="largest radius; None = inf"
    ),
    "xi": Param(float, 0.05, low=0.0, high=1.0, doc="steepness that marks a cluster edge"),
    "min_cluster_size": Param(
        int, None, low=2, nullable=True, doc="smallest cluster; None = min_samples"
    ),
    "cluster_method": Param(str, "xi", choices=("xi", "dbscan"), doc="how to cut the ordering"),
    "eps": Param(
        float, None, low=0.0, low_open=True, nullable=True,
        doc="radius for cluster_method='dbscan'; None = max_eps",
    ),
    "metric": Param(str, "euclidean", choices=("euclidean", "cosine"), doc="distance"),
}


def _fit_optics(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import OPTICS

    model = OPTICS(
        min_samples=p["min_samples"],
        max_eps=np.inf if p["max_eps"] is None else p["max_eps"],
        xi=p["xi"],
        min_cluster_size=p["min_cluster_size"],
        cluster_method=p["cluster_method"],
        eps=p["eps"],
        metric=p["metric"],
    )
    with warnings.catch_warnings():
        # "All reachability values are inf": one dense blob, reported as noise.
        warnings.simplefilter("ignore", UserWarning)
        return model.fit_predict(X)


OPTICS = Algorithm(
    name="optics",
    params=OPTICS_PARAMS,
    fit_predict=relabeled(_fit_optics),
    min_rows=lambda p: p["min_samples"],
    noise=True,
    doc="OPTICS: density ordering cut by steepness (xi); like DBSCAN over all radii.",
)
