"""The algorithm record and the helpers every algorithm module shares.

Kept apart from ``algorithms/__init__.py`` so that algorithm modules can import
it without a circular import through the registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._params import Param

FitPredict = Callable[[np.ndarray, dict, int], np.ndarray]


@dataclass(frozen=True)
class Fitted:
    """Labels of a fit and, for algorithms that choose (``'auto'``, ``n_clusters
    'auto'``), what they chose and the scores of the candidates they compared
    (JSON-ready; stored as ``cluster_runs.choices``)."""

    labels: np.ndarray
    choices: dict | None = None


Explain = Callable[[np.ndarray, dict, int], Fitted]


@dataclass(frozen=True)
class Algorithm:
    """One clustering algorithm: its parameters as data and a pure fit function.

    ``fit_predict(X, params, seed)`` takes float32 rows of shape (n, d) and
    validated params and returns int64 labels of shape (n,): -1 is noise and
    clusters are numbered 0..k-1 by decreasing size (ties: smallest member index).
    ``min_rows(params)`` is the fewest rows the algorithm accepts with those
    params. ``noise`` is True when the algorithm can label rows -1. ``check``
    runs cross-field checks after per-field validation: it receives the filled
    params and the mapping the user gave, and returns the params to use.
    ``quadratic_memory`` is True when fitting holds an n x n matrix (the memory
    check of a run accounts for it). ``explain``, when set, is the fit that also
    reports its choices (:class:`Fitted`); ``fit_predict`` is then its labels.
    """

    name: str
    params: Mapping[str, Param]
    fit_predict: FitPredict
    min_rows: Callable[[dict], int]
    noise: bool
    doc: str
    check: Callable[[dict, Mapping[str, Any]], dict] | None = None
    quadratic_memory: bool = False
    explain: Explain | None = None

    def fit_explained(self, X: np.ndarray, params: dict, seed: int) -> Fitted:
        """Labels and choices of fitting ``X`` (choices None for a plain fit)."""
        if self.explain is not None:
            return self.explain(X, params, seed)
        return Fitted(self.fit_predict(X, params, seed))


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by decreasing size, ties by smallest member index.

    Any negative label becomes -1 (noise).

    >>> relabel_by_size(np.array([7, 3, 3, -1, 7, 5])).tolist()
    [0, 1, 1, -1, 0, 2]
    """
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    out = np.full(labels.shape, -1, dtype=np.int64)
    kept = np.flatnonzero(labels >= 0)
    if kept.size == 0:
        return out
    uniq, first, inverse, counts = np.unique(
        labels[kept], return_index=True, return_inverse=True, return_counts=True
    )
    # lexsort: last key is primary -> size descending, then first member index.
    order = np.lexsort((kept[first], -counts))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size, dtype=np.int64)
    out[kept] = rank[inverse.ravel()]
    return out


def relabeled(fit: FitPredict) -> FitPredict:
    """Wrap a raw fit function: float32 input, canonical int64 labels out."""

    @functools.wraps(fit)
    def fit_predict(X: np.ndarray, params: dict, seed: int) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        return relabel_by_size(fit(X, params, seed))

    return fit_predict


def explained(fit: Explain) -> Explain:
    """Wrap a raw explaining fit: float32 input, canonical int64 labels out."""

    @functools.wraps(fit)
    def fit_explained(X: np.ndarray, params: dict, seed: int) -> Fitted:
        X = np.ascontiguousarray(X, dtype=np.float32)
        r = fit(X, params, seed)
        return Fitted(relabel_by_size(r.labels), r.choices)

    return fit_explained


def labels_of(explain: Explain) -> FitPredict:
    """The ``fit_predict`` of an explaining fit: its labels only."""

    @functools.wraps(explain)
    def fit_predict(X: np.ndarray, params: dict, seed: int) -> np.ndarray:
        return explain(X, params, seed).labels

    return fit_predict


def random_state(seed: int) -> int:
    """Map any int seed into the range numpy/sklearn accept, [0, 2**32)."""
    return int(seed) % (2**32)
