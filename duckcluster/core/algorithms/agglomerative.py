"""Agglomerative (bottom-up hierarchical) clustering, cut at k or at a distance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._errors import SpecError
from ..._params import Param
from . import _choose_k
from ._base import Algorithm, labels_of

PARAMS = {
    "n_clusters": Param(
        int, 8, low=1, nullable=True, auto=True,
        doc="clusters to cut at; not with distance_threshold; 'auto' = chosen by silhouette over 2..30 (cluster_runs.choices)",
    ),
    "linkage": Param(
        str, "ward", choices=("ward", "complete", "average", "single"), doc="merge criterion"
    ),
    "metric": Param(
        str, "euclidean", choices=("euclidean", "cosine", "manhattan"),
        doc="distance; ward needs euclidean",
    ),
    "distance_threshold": Param(
        float, None, low=0.0, low_open=True, nullable=True,
        doc="cut where merges get farther than this; not with n_clusters",
    ),
}


def _check(p: dict, given: Mapping[str, Any]) -> dict:
    """Exactly one of n_clusters / distance_threshold; ward only with euclidean."""
    p = dict(p)
    if p["distance_threshold"] is not None:
        if given.get("n_clusters") is not None:
            raise SpecError(
                "agglomerative takes either 'n_clusters' or 'distance_threshold', not both. "
                f"Got n_clusters={given['n_clusters']!r} and "
                f"distance_threshold={given['distance_threshold']!r}; drop one of them."
            )
        p["n_clusters"] = None
    elif p["n_clusters"] is None:  # pragma: no cover - None means "not given" -> default
        raise SpecError("agglomerative needs 'n_clusters' or 'distance_threshold'.")
    if p["linkage"] == "ward" and p["metric"] != "euclidean":
        raise SpecError(
            f"agglomerative linkage 'ward' works only with metric 'euclidean'. "
            f"Got metric={p['metric']!r}; use linkage 'average' or 'complete' for it."
        )
    return p


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if X.shape[0] < 2:  # sklearn refuses a single row; it is its own cluster
        return np.zeros(X.shape[0], dtype=np.int64)
    model = AgglomerativeClustering(
        n_clusters=p["n_clusters"],
        linkage=p["linkage"],
        metric=p["metric"],
        distance_threshold=p["distance_threshold"],
    )
    return model.fit_predict(X)


_explain = _choose_k.with_auto_k("agglomerative", _fit)

AGGLOMERATIVE = Algorithm(
    name="agglomerative",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=lambda p: _choose_k.count(p, "n_clusters") or 1,
    noise=False,
    doc="Agglomerative: merge nearest groups bottom-up; O(n^2) memory, for up to ~20k rows.",
    check=_check,
    quadratic_memory=True,
    explain=_explain,
)
