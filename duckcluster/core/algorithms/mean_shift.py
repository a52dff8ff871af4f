"""Mean shift: rows climb to density modes; the number of clusters is found."""

from __future__ import annotations

import numpy as np

from ..._params import Param
from ._base import Algorithm, random_state, relabeled

# Bandwidth estimation is O(n^2); it runs on a seeded sample of this many rows.
BANDWIDTH_SAMPLE = 1000

PARAMS = {
    "bandwidth": Param(
        float, None, low=0.0, low_open=True, nullable=True,
        doc="kernel radius; None = estimated from a seeded sample (quantile)",
    ),
    # sklearn's 0.3 merges everything once there are more than ~3 clusters
    # (5 separated blobs -> 1 cluster); 0.1 keeps any cluster above ~10% of rows.
    "quantile": Param(
        float, 0.1, low=0.0, high=1.0, low_open=True,
        doc="neighbour quantile used to estimate the bandwidth",
    ),
    "bin_seeding": Param(bool, False, doc="seed from a grid of bins (faster, coarser)"),
    "min_bin_freq": Param(int, 1, low=1, doc="rows a bin needs to seed with bin_seeding"),
    "cluster_all": Param(bool, True, doc="False labels rows outside every kernel -1"),
    "max_iter": Param(int, 300, low=1, doc="iterations per seed"),
}


def _bandwidth(X: np.ndarray, p: dict, seed: int) -> float:
    from sklearn.cluster import estimate_bandwidth

    if p["bandwidth"] is not None:
        return float(p["bandwidth"])
    n = X.shape[0]
    bw = 0.0
    if n >= 2:
        bw = float(
            estimate_bandwidth(
                X, quantile=p["quantile"], n_samples=min(n, BANDWIDTH_SAMPLE),
                random_state=random_state(seed),
            )
        )
    if not bw > 0.0:  # too few rows for the quantile, or identical rows
        spread = float(np.max(np.ptp(X, axis=0))) if n else 0.0
        bw = spread if spread > 0.0 else 1.0
    return bw


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.cluster import MeanShift

    model = MeanShift(
        bandwidth=_bandwidth(X, p, seed),
        bin_seeding=p["bin_seeding"],
        min_bin_freq=p["min_bin_freq"],
        cluster_all=p["cluster_all"],
        max_iter=p["max_iter"],
    )
    return model.fit_predict(X)


MEAN_SHIFT = Algorithm(
    name="mean_shift",
    params=PARAMS,
    fit_predict=relabeled(_fit),
    min_rows=lambda p: 1,
    noise=True,
    doc="Mean shift: rows move to density peaks; finds k itself. Labels -1 only when "
    "cluster_all is false. O(n^2): for up to ~10k rows.",
)
