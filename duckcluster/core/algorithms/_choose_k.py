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
    0.7639
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
    best = _pick(cands, "silhouette")
    k = cands[best]["n_clusters"]
    labels = fits[best] if rows.size == n else np.asarray(fit_k(Z, k), dtype=np.int64)
    return labels, k, cands


def _pick(cands: list[dict], score: str, tolerance: float = 0.0) -> int:
    """Index of the chosen candidate: the guards pass candidates over (marked in
    place), then the smallest k whose ``score`` is within ``tolerance`` of the best."""
    pool = list(range(len(cands)))
    for test, why in (
        (lambda c: c["clusters"] > MIN_CHOSEN, f"<= {MIN_CHOSEN} clusters"),
        (lambda c: c["largest_share"] <= MAX_LARGEST_SHARE,
         f"largest cluster > {MAX_LARGEST_SHARE:.0%} of rows"),
        (lambda c: c[score] is not None, f"{score} undefined"),
    ):
        left = [i for i in pool if test(cands[i])]
        if left:
            for i in set(pool) - set(left):
                cands[i]["passed_over"] = why
            pool = left
    value = {i: cands[i][score] if cands[i][score] is not None else -2.0 for i in pool}
    top = max(value.values())
    best = min((i for i in pool if value[i] >= top - tolerance),
               key=lambda i: (cands[i]["n_clusters"], i))
    for i, c in enumerate(cands):
        c["chosen"] = i == best
    return best


#: ``algorithm := 'auto'`` after its UMAP: the smallest k whose modularity is within
#: this much of the best candidate's (a parsimony rule; modularity lies in [-0.5, 1]).
MODULARITY_TOLERANCE = 0.01

GRAPH_CRITERION = (f"modularity on the UMAP neighbour graph (all rows): the smallest k "
                   f"within {MODULARITY_TOLERANCE} of the best; candidates with <= "
                   f"{MIN_CHOSEN} clusters or a cluster of more than "
                   f"{MAX_LARGEST_SHARE:.0%} of the rows are passed over while others remain")


def modularity(graph, labels: np.ndarray) -> float:
    """Newman's modularity of ``labels`` on a symmetric weighted ``graph`` (scipy
    sparse): the share of edge weight inside clusters minus its expectation when
    edges are rewired keeping degrees. Noise (-1) counts as one more group.

    >>> import scipy.sparse
    >>> G = scipy.sparse.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0],
    ...                                       [0, 0, 0, 1], [0, 0, 1, 0]], float))
    >>> modularity(G, np.array([0, 0, 1, 1])), modularity(G, np.array([0, 1, 0, 1]))
    (0.5, -0.5)
    """
    coo = graph.tocoo()
    total = float(coo.data.sum())
    if total <= 0:
        return 0.0
    lab = np.unique(labels, return_inverse=True)[1]
    inside = float(coo.data[lab[coo.row] == lab[coo.col]].sum())
    deg = np.bincount(coo.row, weights=coo.data, minlength=lab.size)
    K = np.bincount(lab, weights=deg)
    return inside / total - float((K ** 2).sum()) / total ** 2


def choose_k_on_graph(Z: np.ndarray, graph, fit_k: Callable[[np.ndarray, int], np.ndarray],
                      ks: Sequence[int], tolerance: float = MODULARITY_TOLERANCE
                      ) -> tuple[np.ndarray, int, list[dict]]:
    """Sweep ``fit_k(Z, k)`` over ``ks`` on every row; keep the smallest k whose
    modularity on ``graph`` (the neighbour graph over the rows of ``Z``) is within
    ``tolerance`` (:data:`MODULARITY_TOLERANCE`) of the best, after the guards of
    :func:`choose_k`.

    Measured (bench/auto.py's sets after auto's UMAP, 3 seeds) against the silhouette
    in the reduced space: the silhouette rewards splitting the tight islands UMAP
    makes of near-duplicate texts (it chose 15-20 clusters for 6 and 10 categories);
    the modularity of the same partitions is flat once the categories are separated,
    so the parsimony rule stops there. Candidates: ``n_clusters``, ``clusters``,
    ``modularity``, ``largest_share``, ``noise_ratio``, ``chosen``, ``passed_over``.
    """
    fits: list[np.ndarray] = []
    cands: list[dict] = []
    for k in ks:
        labels = np.asarray(fit_k(Z, int(min(k, Z.shape[0]))), dtype=np.int64)
        kept = labels[labels >= 0]
        fits.append(labels)
        cands.append({"n_clusters": int(k), "clusters": int(np.unique(kept).size),
                      "modularity": round(modularity(graph, labels), 4),
                      "largest_share": round(float(np.bincount(kept).max() / labels.size)
                                             if kept.size else 0.0, 4),
                      "noise_ratio": round(float(np.mean(labels < 0)), 4)})
    best = _pick(cands, "modularity", tolerance)
    return fits[best], cands[best]["n_clusters"], cands


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
