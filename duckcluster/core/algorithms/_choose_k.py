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


#: ``algorithm := 'auto'`` after its UMAP: the smallest k whose modularity on the graph
#: is within this much of the best candidate's (a parsimony margin; modularity lies in
#: [-0.5, 1]) ...
MODULARITY_TOLERANCE = 0.005
#: ... then two clusters are merged while merging them costs less than this much
#: modularity (a cut of the graph that weak is not a boundary between groups).
MERGE_TOLERANCE = 0.0025

GRAPH_CRITERION = (f"modularity on the UMAP neighbour graph: the smallest k within "
                   f"{MODULARITY_TOLERANCE} of the best, then clusters merged pairwise while "
                   f"a merge costs less than {MERGE_TOLERANCE} modularity; candidates with <= "
                   f"{MIN_CHOSEN} clusters or a cluster of more than "
                   f"{MAX_LARGEST_SHARE:.0%} of the rows are passed over while others remain, "
                   "and merges keep to the same limits")


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
                      ks: Sequence[int]) -> tuple[np.ndarray, int, list[dict]]:
    """Sweep ``fit_k(Z, k)`` over ``ks`` on every row; keep the smallest k whose
    modularity on ``graph`` (the neighbour graph over the rows of ``Z``) is within
    :data:`MODULARITY_TOLERANCE` of the best (warm-started sweeps too), after the
    guards of :func:`choose_k`. :func:`merge_weak` then joins the clusters a weak cut
    separates.

    Measured (bench/auto.py's sets after auto's UMAP, 3 seeds) against the silhouette
    in the reduced space: the silhouette rewards splitting the tight islands UMAP
    makes of near-duplicate texts (it chose 15-20 clusters for 6 and 10 categories);
    modularity does not. Candidates: ``n_clusters``, ``clusters``,
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
    best = _pick(cands, "modularity", MODULARITY_TOLERANCE)
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


def merge_weak(graph, labels: np.ndarray, tolerance: float = MERGE_TOLERANCE,
               min_clusters: int = MIN_CHOSEN + 1,
               max_share: float = MAX_LARGEST_SHARE) -> tuple[np.ndarray, list[dict]]:
    """Merge clusters of ``labels`` pairwise, the cheapest merge first, while merging
    costs less than ``tolerance`` modularity on ``graph`` (a merge that raises it is
    taken too), keeping at least ``min_clusters`` clusters and none over ``max_share``
    of the rows. Returns the labels (0..k'-1, in order of first appearance of the
    kept clusters' smallest original label) and the merges as
    ``{"clusters": [a, b], "modularity_change": dQ}`` in the original labels.

    Merging clusters a and b changes Newman's modularity by ``2 (e_ab - a_a a_b)``,
    with ``e_ab`` the share of edge weight between them and ``a_a`` the share of
    degree in a. Measured (``python -m bench.auto_rules``, medians of 5 seeds, ARI /
    #clusters per seed) after the smallest k within 0.005 of the best modularity:
    docstrings8 0.551 / 10-12 -> 0.561 / 9-10, packages10 0.352 / 12-15 -> 0.347 / 10-12,
    digits 0.914 / 12-13 -> 0.918 / 11, demo_docs 0.534 / 10-11 (unchanged).

    >>> import scipy.sparse
    >>> A = np.kron(np.eye(4), np.ones((3, 3))) - np.eye(12)   # four triangles ...
    >>> A[2, 3] = A[3, 2] = A[8, 9] = A[9, 8] = 2.0            # ... joined in two pairs
    >>> lab, merges = merge_weak(scipy.sparse.csr_matrix(A), np.repeat([0, 1, 2, 3], 3),
    ...                          min_clusters=1, max_share=1.0)
    >>> lab.tolist(), [m["clusters"] for m in merges]
    ([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [[0, 1], [2, 3]])
    """
    import scipy.sparse

    lab = np.unique(labels, return_inverse=True)[1]
    k = int(lab.max()) + 1 if lab.size else 0
    coo = graph.tocoo()
    total = float(coo.data.sum())
    if k <= min_clusters or total <= 0:
        return lab, []
    H = scipy.sparse.csr_matrix((np.ones(lab.size), (np.arange(lab.size), lab)),
                                shape=(lab.size, k))
    E = np.asarray((H.T @ graph @ H).todense(), dtype=np.float64) / total
    size = np.bincount(lab, minlength=k).astype(np.float64)
    alive = list(range(k))          # cluster ids still standing (original labels)
    owner = np.arange(k)            # original label -> the cluster it was merged into
    merges: list[dict] = []
    while len(alive) > min_clusters:
        a = E.sum(axis=1)
        gain = 2.0 * (E - np.outer(a, a))
        np.fill_diagonal(gain, -np.inf)
        too_big = (size[:, None] + size[None, :]) > max_share * lab.size
        gain[too_big] = -np.inf
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if not gain[i, j] > -tolerance:
            break
        i, j = min(i, j), max(i, j)
        merges.append({"clusters": [int(alive[i]), int(alive[j])],
                       "modularity_change": round(float(gain[i, j]), 5)})
        owner[owner == alive[j]] = alive[i]
        E[i, :] += E[j, :]
        E[:, i] += E[:, j]
        E = np.delete(np.delete(E, j, axis=0), j, axis=1)
        size[i] += size[j]
        size = np.delete(size, j)
        del alive[j]
    return np.unique(owner, return_inverse=True)[1][lab], merges
