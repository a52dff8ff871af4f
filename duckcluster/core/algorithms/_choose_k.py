"""Choosing the number of clusters: fit every k of a sweep, keep the best by silhouette.

Shared by ``algorithm := 'auto'`` (k-means in its reduced space) and by
``n_clusters := 'auto'`` of kmeans, agglomerative, spectral and gaussian_mixture.

The criterion is the mean silhouette (euclidean, in the space the algorithm
clustered) on one seeded sample of at most :data:`SAMPLE_ROWS` rows, the same rows
for every k, so the comparison is fair and cheap: the sample's distance matrix is
computed once and each k costs one (rows x rows) x (rows x k) product. Two guards
keep a sweep from collapsing (silhouette alone often peaks at 2 on text, where one
broad topic splits from the rest):

- a candidate with at most :data:`MIN_CHOSEN` clusters is passed over when a larger k
  is available;
- a candidate whose largest cluster holds more than :data:`MAX_LARGEST_SHARE` of the
  rows is passed over when another is not.

Every candidate is reported with its score, its largest share and, when passed
over, why (``cluster_runs.choices``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._base import random_state

#: Rows of the seeded sample the silhouette of every candidate is computed on.
SAMPLE_ROWS = 2000
#: Candidates with this many clusters or fewer are passed over while larger ones remain.
MIN_CHOSEN = 2
#: Candidates whose largest cluster holds more than this share of rows are passed over.
MAX_LARGEST_SHARE = 0.5
#: Largest k of a sweep when none is given, and the fewest rows per cluster on average.
MAX_CLUSTERS = 30
MIN_ROWS_PER_CLUSTER = 5

CRITERION = (f"highest mean silhouette (euclidean, in the clustered space) on a seeded "
             f"sample of at most {SAMPLE_ROWS} rows; candidates with <= {MIN_CHOSEN} clusters "
             f"or a cluster of more than {MAX_LARGEST_SHARE:.0%} of the rows are passed "
             "over while others remain")


def sweep_range(n: int, max_clusters: int = MAX_CLUSTERS) -> list[int]:
    """The k values swept for ``n`` rows: 2..max_clusters, at most n / 5 (at least 2).

    >>> sweep_range(1000)[:3], sweep_range(1000)[-1], sweep_range(20)
    ([2, 3, 4], 30, [2, 3, 4])
    """
    top = min(max_clusters, max(2, n // MIN_ROWS_PER_CLUSTER), max(n - 1, 1))
    return list(range(2, top + 1)) if top >= 2 else [1]


def sample_distances(Z: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sample rows of ``Z`` and their euclidean distance matrix (float64)."""
    n = Z.shape[0]
    rng = np.random.default_rng(random_state(seed))
    rows = np.sort(rng.choice(n, size=min(n, SAMPLE_ROWS), replace=False))
    S = np.asarray(Z[rows], dtype=np.float64)
    sq = np.einsum("ij,ij->i", S, S)
    D = np.sqrt(np.maximum(sq[:, None] - 2.0 * S @ S.T + sq[None, :], 0.0))
    np.fill_diagonal(D, 0.0)
    return rows, D


def silhouette_from(D: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette of ``labels`` (noise -1 excluded) given their distance matrix.

    Equal to scikit-learn's ``silhouette_score(..., metric='precomputed')``; None
    with fewer than 2 clusters.

    >>> D = np.array([[0, 1, 4, 5], [1, 0, 4, 4], [4, 4, 0, 1], [5, 4, 1, 0]], float)
    >>> round(silhouette_from(D, np.array([0, 0, 1, 1])), 4)
    0.7625
    """
    keep = labels >= 0
    D, labels = D[np.ix_(keep, keep)], labels[keep]
    uniq, lab = np.unique(labels, return_inverse=True)
    k = uniq.size
    if k < 2:
        return None
    H = np.zeros((lab.size, k))
    H[np.arange(lab.size), lab] = 1.0
    counts = H.sum(axis=0)
    sums = D @ H
    idx = np.arange(lab.size)
    own = counts[lab]
    a = sums[idx, lab] / np.maximum(own - 1, 1)
    mean_other = sums / counts[None, :]
    mean_other[idx, lab] = np.inf
    b = mean_other.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
    s[own <= 1] = 0.0  # scikit-learn's convention for singletons
    return float(s.mean())


def choose_k(Z: np.ndarray, fit_k: Callable[[np.ndarray, int], np.ndarray],
             ks: Sequence[int], seed: int) -> tuple[np.ndarray, int, list[dict]]:
    """Sweep ``fit_k(rows, k)`` over ``ks``; return the chosen labels of all rows, k, candidates.

    ``Z``: the rows the algorithm clusters (the silhouette is computed there). The
    sweep fits the seeded sample of at most :data:`SAMPLE_ROWS` rows (the one the
    silhouette is computed on); the chosen k is then fitted on every row (the same
    fit when the sample is every row). Candidates: one dict per k with
    ``n_clusters`` (asked), ``clusters`` (found), ``silhouette``, ``largest_share``,
    ``noise_ratio`` (both on the sample), ``chosen`` and, when passed over,
    ``passed_over`` (the reason).
    """
    rows, D = sample_distances(Z, seed)
    n = Z.shape[0]
    Zs = Z if rows.size == n else Z[rows]
    fits: list[np.ndarray] = []
    cands: list[dict] = []
    for k in ks:
        labels = np.asarray(fit_k(Zs, int(min(k, rows.size))), dtype=np.int64)
        kept = labels[labels >= 0]
        found = int(np.unique(kept).size)
        share = float(np.bincount(kept).max() / rows.size) if kept.size else 0.0
        sil = silhouette_from(D, labels)
        fits.append(labels)
        cands.append({"n_clusters": int(k), "clusters": found,
                      "silhouette": None if sil is None else round(sil, 4),
                      "largest_share": round(share, 4),
                      "noise_ratio": round(float(np.mean(labels < 0)), 4)})
    pool = list(range(len(cands)))
    for test, why in (
        (lambda c: c["clusters"] > MIN_CHOSEN, f"<= {MIN_CHOSEN} clusters"),
        (lambda c: c["largest_share"] <= MAX_LARGEST_SHARE,
         f"largest cluster > {MAX_LARGEST_SHARE:.0%} of rows"),
        (lambda c: c["silhouette"] is not None, "silhouette undefined"),
    ):
        left = [i for i in pool if test(cands[i])]
        if left:
            for i in set(pool) - set(left):
                cands[i]["passed_over"] = why
            pool = left
    best = max(pool, key=lambda i: (cands[i]["silhouette"] if cands[i]["silhouette"]
                                    is not None else -2.0, -i))
    for i, c in enumerate(cands):
        c["chosen"] = i == best
    k = cands[best]["n_clusters"]
    labels = fits[best] if rows.size == n else np.asarray(fit_k(Z, k), dtype=np.int64)
    return labels, k, cands


def count(p: dict, key: str) -> int:
    """The cluster count ``p[key]`` for ``min_rows``: 1 when it is ``'auto'``."""
    return 1 if p[key] == "auto" else p[key]


def with_auto_k(name: str, fit: Callable[[np.ndarray, dict, int], np.ndarray],
                key: str = "n_clusters") -> Callable:
    """The explaining fit of an algorithm whose ``key`` may be ``'auto'``: then k is
    chosen by :func:`choose_k` over :func:`sweep_range`, and the sweep is its choices."""
    from ._base import Fitted, explained

    def explain(X: np.ndarray, p: dict, seed: int) -> Fitted:
        if p[key] != "auto":
            return Fitted(fit(X, p, seed))
        labels, k, cands = choose_k(X, lambda R, k: fit(R, {**p, key: k}, seed),
                                    sweep_range(X.shape[0]), seed)
        return Fitted(labels, {"algorithm": name, key: int(k), "n_clusters": int(k),
                               "criterion": CRITERION, "candidates": cands})

    return explained(explain)
