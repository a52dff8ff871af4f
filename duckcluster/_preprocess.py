"""Preprocessing before clustering: an ordered chain of array -> array steps.

A chain is data: ``(("whitening", {...}), ("umap", {...}))``, validated once by
:func:`validate_steps` and applied by :func:`run_preprocessing`. Every step
takes float32 rows of shape (n, d) and returns float32 rows of shape (n, d').

Methods (defaults follow the seed's recommendations for clustering):

- ``whitening``: soft ZCA, ``X_c @ U diag((s + regularization)^-1/2) U^T``; it
  decorrelates dimensions but stays in the original coordinates.
- ``umap``: UMAP to ``n_components`` (50), ``n_neighbors`` 30, ``min_dist`` 0.0,
  metric cosine, ``n_epochs`` 200; ``random_state`` = seed, so it is
  deterministic (and single threaded). Up to :data:`EXACT_KNN_MAX_ROWS` rows
  the kNN graph is exact and computed here (see there why); above, inputs
  wider than :data:`UMAP_PCA_DIMS` are first reduced to that many with PCA.
- ``pca``: PCA to ``n_components`` (50), optional whitening.
- ``none``: returns the rows unchanged.

Clamping to what the data allows (documented, not an error):
``pca``: ``n_components <= min(n, d)``; ``umap``: ``n_components <= min(d, n - 2)``
(spectral initialisation needs ``n_components + 1 < n``) and
``n_neighbors <= n - 1``. UMAP needs at least 4 rows; fewer raise DataError.

>>> steps = validate_steps([{"method": "pca", "n_components": 2}])
>>> run_preprocessing(np.eye(4, dtype=np.float32), steps, seed=0).shape
(4, 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import DataError, SpecError, unknown_name
from ._params import Param, validate_params
from .algorithms._base import random_state, require

UMAP_MIN_ROWS = 4
#: Up to this many rows UMAP gets an exact kNN graph computed here with
#: vectorized brute force. umap-learn would otherwise call its numba metric once
#: per pair from Python below 4,096 rows (6.8 s for 2k rows) or compile
#: pynndescent above; measured first-fit time in a fresh process for 2k x 64:
#: 17 s -> 6 s.
EXACT_KNN_MAX_ROWS = 20_000
#: Above :data:`EXACT_KNN_MAX_ROWS` rows, inputs wider than this are reduced to
#: this many dimensions with PCA before UMAP builds its (NNDescent) kNN graph.
#: Measured at 100k x 384 after whitening (busy machine): kNN graph 163 s -> 28 s,
#: ARI against the generating clusters 0.92 -> 1.00 (that run also had 100
#: epochs; whitening spreads weight over noise directions, the leading
#: components keep the cluster structure).
UMAP_PCA_DIMS = 50


@dataclass(frozen=True)
class Preprocessor:
    """One preprocessing method: params as data and a pure transform."""

    name: str
    params: Mapping[str, Param]
    fit_transform: Callable[[np.ndarray, dict, int], np.ndarray]
    doc: str


def _none(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    return X


def _whitening(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    n, d = X.shape
    if n == 0:
        return X
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    Xc = X64 - mean
    cov = (Xc.T @ Xc) / max(n - 1, 1)
    s, U = np.linalg.eigh(cov)
    s = np.clip(s, 0.0, None)  # eigh can return tiny negatives for singular cov
    W = (U * (1.0 / np.sqrt(s + p["regularization"]))) @ U.T
    return (Xc @ W).astype(np.float32)


def _pca(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n, d = X.shape
    k = min(p["n_components"], n, d)
    if k < 1:
        return np.zeros((n, max(k, 0)), dtype=np.float32)
    model = PCA(n_components=k, whiten=p["whiten"], random_state=random_state(seed))
    with warnings.catch_warnings():
        # whiten=True divides by zero variance on rank-deficient input
        warnings.simplefilter("ignore", RuntimeWarning)
        out = model.fit_transform(X)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _umap(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    n, d = X.shape
    if n < UMAP_MIN_ROWS:
        raise DataError(
            f"umap preprocessing needs at least {UMAP_MIN_ROWS} rows. Got {n}; "
            "remove the umap step or cluster more rows."
        )
    if n > EXACT_KNN_MAX_ROWS and d > UMAP_PCA_DIMS:
        X = _pca(X, {"n_components": UMAP_PCA_DIMS, "whiten": False}, seed)
        d = X.shape[1]
    umap = _import_umap()
    n_neighbors = min(p["n_neighbors"], n - 1)
    knn = _exact_knn(X, n_neighbors, p["metric"]) if n <= EXACT_KNN_MAX_ROWS else None
    model = umap.UMAP(
        n_components=min(p["n_components"], d, n - 2),
        n_neighbors=n_neighbors,
        min_dist=p["min_dist"],
        metric=p["metric"],
        n_epochs=p["n_epochs"],
        random_state=random_state(seed),
        transform_seed=random_state(seed),
        precomputed_knn=knn if knn is not None else (None, None, None),
    )
    with warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state": that is the point.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*disconnected.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        out = model.fit_transform(X)
    return np.asarray(out, dtype=np.float32)


_UMAP_CACHED = False


def _import_umap():
    """Import umap-learn with numba's on-disk cache switched on for its kernels.

    umap-learn compiles its numba functions at first call in every process and
    caches none of them: a fresh process paid ~17 s before its first 2k-row fit
    (fuzzy_simplicial_set 19.6 s of compiling, the epoch kernel 6.5 s). With
    caching the compiled code is written once (next to umap's sources, or under
    NUMBA_CACHE_DIR) and loaded by later processes: first fit 17.6 s -> 4.3 s
    (busy machine).
    """
    global _UMAP_CACHED
    umap = require("umap", "umap", "umap-learn", "umap preprocessing")
    if not _UMAP_CACHED:
        _UMAP_CACHED = True
        try:
            _enable_numba_cache(umap)
        except Exception:  # noqa: BLE001, S110 - caching is an optimisation, never a failure
            pass
    return umap


def _enable_numba_cache(umap) -> None:
    import importlib

    from numba.core.registry import CPUDispatcher

    for name in ("umap_", "layouts", "spectral", "distances", "sparse", "utils"):
        mod = importlib.import_module(f"umap.{name}")
        for fn in vars(mod).values():
            if isinstance(fn, CPUDispatcher) and fn.__module__ == mod.__name__ \
                    and fn._cache.__class__.__name__ == "NullCache":
                fn.enable_caching()


def _exact_knn(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray, None]:
    """Exact k nearest neighbours (each row first, as UMAP expects), vectorized."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
    dist, idx = nn.kneighbors(X)
    return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32), None


PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor(
            name="whitening",
            params={
                "regularization": Param(
                    float, 1e-5, low=0.0, low_open=True,
                    doc="added to each covariance eigenvalue (soft ZCA)",
                ),
            },
            fit_transform=_whitening,
            doc="Soft ZCA whitening: decorrelate dimensions, keep the coordinate space.",
        ),
        Preprocessor(
            name="umap",
            params={
                "n_components": Param(int, 50, low=1, doc="output dimensions"),
                "n_neighbors": Param(int, 30, low=2, doc="local neighbourhood size"),
                "min_dist": Param(float, 0.0, low=0.0, high=1.0, doc="0 packs clusters tight"),
                "n_epochs": Param(int, 200, low=10, high=2000,
                                  doc="optimisation epochs (umap-learn uses 500 below 10k rows)"),
                "metric": Param(
                    str, "cosine", choices=("cosine", "euclidean", "manhattan", "correlation"),
                    doc="input distance",
                ),
            },
            fit_transform=_umap,
            doc="UMAP reduction that keeps local neighbourhoods (helps HDBSCAN).",
        ),
        Preprocessor(
            name="pca",
            params={
                "n_components": Param(int, 50, low=1, doc="output dimensions"),
                "whiten": Param(bool, False, doc="scale components to unit variance"),
            },
            fit_transform=_pca,
            doc="PCA reduction to the directions of largest variance.",
        ),
        Preprocessor(
            name="none",
            params={},
            fit_transform=_none,
            doc="No-op.",
        ),
    )
}


def validate_steps(
    steps: Sequence[Mapping[str, Any] | str] | None,
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Validate an ordered list of steps; return ``((method, params), ...)``.

    Each step is a mapping with a ``'method'`` key plus that method's params
    (None values mean "not given"), or a bare method name.

    >>> validate_steps([{"method": "whitening"}, "pca"])[0]
    ('whitening', {'regularization': 1e-05})
    """
    if steps is None:
        return ()
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Sequence):
        raise SpecError(
            "preprocessing must be a list of steps such as "
            "[{'method': 'whitening'}, {'method': 'umap', 'n_components': 50}]. "
            f"Got {steps!r} instead."
        )
    out = []
    for i, step in enumerate(steps, start=1):
        if isinstance(step, str):
            step = {"method": step}
        if not isinstance(step, Mapping):
            raise SpecError(
                f"Preprocessing step {i} must be a mapping with a 'method' key "
                f"(e.g. {{'method': 'whitening'}}). Got {step!r} instead."
            )
        method = step.get("method")
        if method is None:
            raise SpecError(
                f"Preprocessing step {i} has no 'method'. Got {dict(step)!r}; "
                f"valid methods: {', '.join(repr(m) for m in sorted(PREPROCESSORS))}."
            )
        if not isinstance(method, str) or method not in PREPROCESSORS:
            raise unknown_name("preprocessing method", method, PREPROCESSORS)
        given = {k: v for k, v in step.items() if k != "method"}
        params = validate_params(
            f"{method} preprocessing", PREPROCESSORS[method].params, given
        )
        out.append((method, params))
    return tuple(out)


def run_preprocessing(
    X: np.ndarray, steps: tuple[tuple[str, dict[str, Any]], ...], seed: int
) -> np.ndarray:
    """Apply validated ``steps`` in order; float32 (n, d) in, float32 (n, d') out."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    for method, params in steps:
        X = np.ascontiguousarray(PREPROCESSORS[method].fit_transform(X, params, seed),
                                 dtype=np.float32)
    return X
