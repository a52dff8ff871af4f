"""k-means (scikit-learn's Lloyd algorithm, in numpy): k centroids, every row in a cluster.

Like faiss, the centroids are trained on a seeded sample of at most
``max_points_per_centroid`` rows per centroid (256 by default, faiss's value),
then every row goes to its nearest centroid. Lloyd iterations over 100k rows
cost O(n k d) each; 256 rows per centroid estimate a centroid to well within
its cluster's spread. Measured (bench/kmeans.py, 100k x 384, 30 clusters): the
same ARI against the truth as fitting every row, several times faster. Set
``max_points_per_centroid`` to 0 to fit on every row.

**Warm start** (a scheduled re-run, ``engine/lineage.py``): the fit's params carry
:data:`WARM` (the previous full run's cluster of every input row, -1 for rows it did not
have or left as noise); :func:`warm_init` then starts Lloyd from the means of the previous
clusters' rows still present (the largest ``k`` of them) plus, when ``k`` is larger, new
centres seeded by k-means++ among the rows those means fit poorly. When no centre is
added, the fresh k-means++ start(s) run too, and the warm one is kept unless a fresh one
fits the rows more than :data:`WARM_TOLERANCE` better (the rows moved: a cluster split,
two merged). Seeded.
"""

from __future__ import annotations

import numpy as np

from ..._params import Param
from . import _choose_k
from ._base import Algorithm, Fitted, explained, labels_of, random_state

PARAMS = {
    "n_clusters": Param(int, 8, low=1, auto=True, doc="number of clusters k; 'auto' = chosen by silhouette over 2..30 (cluster_runs.choices)"),
    "n_init": Param(int, 1, low=1, doc="restarts; the best inertia wins ('auto' = 1 with k-means++)"),
    "max_iter": Param(int, 300, low=1, doc="iterations per restart"),
    "tol": Param(float, 1e-4, low=0.0, doc="relative tolerance on centroid movement"),
    "init": Param(str, "k-means++", choices=("k-means++", "random"), doc="seeding"),
    "max_points_per_centroid": Param(
        int, 256, low=0,
        doc="train on a seeded sample of at most this many rows per centroid, then assign "
            "every row (faiss's default); 0 = train on every row"),
}


#: Key of the params a warm-started fit receives (not a user parameter): (n,) int64, the
#: previous run's cluster of each input row, -1 where it had none.
WARM = "_warm_labels"
#: A warm start is kept unless a fresh k-means++ start reaches an inertia this much lower
#: (relative): then the rows moved (a cluster split, two merged) and the fresh fit wins.
WARM_TOLERANCE = 0.05
#: Rows farther from every previous centre than this quantile of the previous members'
#: own distances are *poorly fitted*: new centres are seeded among them.
WARM_POOR_QUANTILE = 0.9
#: New centres are seeded among new rows only when at least this many are poorly fitted.
WARM_MIN_ROWS = 10


def warm_init(X: np.ndarray, prev: np.ndarray, k: int, seed: int
              ) -> tuple[np.ndarray, int, int]:
    """``k`` starting centres (k, d) float64 for ``X`` (n, d) from the previous run's
    clusters ``prev`` (n,) (-1: none), and how many were kept and added.

    Kept: the means of the rows of the ``k`` largest previous clusters still present
    (largest first). Added (when ``k`` is larger than that): the centres of a k-means
    (k-means++ seeded) of the poorly fitted rows alone: those the previous run did not
    have whose squared distance to the nearest kept centre is above the
    :data:`WARM_POOR_QUANTILE` quantile of the previous members' own (the old rows too
    when fewer than :data:`WARM_MIN_ROWS` are; every row when too few are).

    >>> X = np.array([[0, 0], [0, 1], [10, 0], [10, 1], [50, 50]], float)
    >>> C, kept, added = warm_init(X, np.array([3, 3, 7, 7, -1]), 3, 0)
    >>> C.tolist(), kept, added
    ([[0.0, 0.5], [10.0, 0.5], [50.0, 50.0]], 2, 1)
    """
    X64 = np.asarray(X, dtype=np.float64)
    prev = np.asarray(prev, dtype=np.int64)
    have = prev >= 0
    ids, inv, counts = np.unique(prev[have], return_inverse=True, return_counts=True)
    order = np.lexsort((ids, -counts))[:k]  # largest first, ties by id
    kept = len(order)
    sums = np.zeros((len(ids), X64.shape[1]))
    np.add.at(sums, inv, X64[have])
    centers = np.empty((k, X64.shape[1]))
    centers[:kept] = sums[order] / counts[order][:, None]
    if kept == k:
        return centers, kept, 0
    if kept == 0:
        return kmeans_plusplus(X, k, seed).astype(np.float64), 0, k
    closest = nearest(X64, centers[:kept], np.einsum("ij,ij->i", X64, X64))[1]
    own = closest[have & np.isin(prev, ids[order])]
    far = closest > np.quantile(own, WARM_POOR_QUANTILE) if own.size else \
        np.ones(len(X64), dtype=bool)
    poor = np.flatnonzero(far & ~have)  # new rows first: old rows have their clusters
    if poor.size < max(k - kept, WARM_MIN_ROWS):
        poor = np.flatnonzero(far)
    if poor.size < k - kept:
        poor = np.arange(len(X64))
    # the new centres: k-means of the poorly fitted rows alone (a new topic's rows are
    # most of them; an outlier seed alone would start a cluster of outliers)
    P = X64[poor]
    m = k - kept
    init = kmeans_plusplus(P, m, seed).astype(np.float64)
    pm = P.mean(axis=0)
    _, Cp, _ = lloyd(P - pm, init - pm, 100, 1e-4)
    centers[kept:] = Cp + pm
    return centers, kept, k - kept


def training_rows(n: int, p: dict, seed: int) -> np.ndarray | None:
    """Sorted positions of the seeded training sample, or None to train on all ``n`` rows."""
    cap = p["max_points_per_centroid"] * p["n_clusters"]
    if not cap or n <= cap:
        return None
    rng = np.random.default_rng(random_state(seed))
    return np.sort(rng.choice(n, size=cap, replace=False))


def kmeans_plusplus(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeding (scikit-learn's method: 2 + log(k) candidates per
    step, the one that lowers the potential most wins), vectorized.

    scikit-learn's own took 0.3-0.38 s on 7,680 x 384 rows with k = 30, more than
    its 7 Lloyd iterations; this takes a few milliseconds. Its small products run
    on one BLAS thread (on the busy 2-core machine: 0.08 s vs 0.25-0.29 s with
    OpenBLAS's two). Returns (k, d) float32.
    """
    from ..threads import limited

    with limited(1):
        return _kmeans_plusplus(X, k, seed)


def _kmeans_plusplus(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(random_state(seed))
    n = X.shape[0]
    X64 = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X64, X64)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    first = int(rng.integers(n))
    centers[0] = X64[first]
    closest = np.maximum(sq - 2.0 * X64 @ X64[first] + sq[first], 0.0)
    for c in range(1, k):
        pot = closest.sum()
        if pot <= 0:  # fewer distinct rows than k: any row will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * pot)
            cand = np.minimum(cand, n - 1)
        d = np.maximum(sq[cand][:, None] - 2.0 * X64[cand] @ X64.T + sq[None, :], 0.0)
        np.minimum(d, closest, out=d)
        best = int(np.argmin(d.sum(axis=1)))
        centers[c] = X64[cand[best]]
        closest = d[best]
    return centers.astype(np.float32)


def _fit(X: np.ndarray, p: dict, seed: int) -> np.ndarray:
    return _fit_report(X, p, seed)[0]


def _fit_report(X: np.ndarray, p: dict, seed: int) -> tuple[np.ndarray, dict | None]:
    """Labels of the fit and, warm-started, what it started from (``choices.warm_start``):
    ``kept``, ``added`` centres, the inertia from the previous clusters and from fresh
    k-means++ starts (None when centres were added: no fresh start then), and ``used``
    (False: the fresh start fitted the rows more than :data:`WARM_TOLERANCE` better, so
    the data's structure changed and it won)."""
    X = np.asarray(X)
    X = X if X.dtype == np.float64 else np.asarray(X, dtype=np.float32)
    rows = training_rows(X.shape[0], p, seed)
    X_train = X if rows is None else X[rows]
    k = p["n_clusters"]
    # centred as scikit-learn does: |c|^2 - 2 x.c loses less to rounding near the origin
    mean = X_train.mean(axis=0, dtype=np.float64).astype(X.dtype)
    Xc = X_train - mean
    rng = np.random.default_rng(random_state(seed))
    warm = p.get(WARM)
    if warm is not None and len(warm) != X.shape[0]:  # not these rows (a sweep's sample)
        warm = None
    best = report = None
    if warm is not None:  # from the previous run's clusters
        init, kept, added = warm_init(X, warm, k, seed)
        best = lloyd(Xc, np.asarray(init, dtype=X.dtype) - mean, p["max_iter"], p["tol"])
        report = {"kept": int(kept), "added": int(added), "inertia": round(best[2], 4)}
    fresh = None
    # a fresh start competes with the previous clusters kept as they were (a moved structure
    # shows there); with centres added for new rows, growth is what the start is made for
    for i in range(p["n_init"] if report is None or report["added"] == 0 else 0):
        if p["init"] == "k-means++":
            init = kmeans_plusplus(X_train, k, seed if i == 0 else int(rng.integers(2**31)))
        else:
            init = X_train[np.sort(rng.choice(X_train.shape[0], size=k, replace=False))]
        got = lloyd(Xc, np.asarray(init, dtype=X.dtype) - mean, p["max_iter"], p["tol"])
        if fresh is None or got[2] < fresh[2]:
            fresh = got
    if report is not None:
        report["fresh_inertia"] = None if fresh is None else round(fresh[2], 4)
        report["used"] = bool(fresh is None or fresh[2] >= (1.0 - WARM_TOLERANCE) * best[2])
    if best is None or not report["used"]:
        best = fresh
    labels, C, _ = best
    if rows is not None:
        labels = nearest(X, C + mean)[0]  # every row, uncentred (no copy of X)
    return labels, report


def nearest(X: np.ndarray, C: np.ndarray, xx: np.ndarray | None = None,
            chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest centre of every row by euclidean distance, by chunked ``|c|^2 - 2 x . c``
    products (ties: lowest index): (labels int64, squared distances float64, or None
    without ``xx``, the rows' squared norms)."""
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int64)
    d2 = None if xx is None else np.empty(n, dtype=np.float64)
    CT = np.ascontiguousarray(C.T)
    cc = np.einsum("ij,ij->i", C, C)
    for s in range(0, n, chunk):
        D = X[s:s + chunk] @ CT
        D *= -2.0
        D += cc
        j = np.argmin(D, axis=1)
        labels[s:s + chunk] = j
        if d2 is not None:
            d2[s:s + chunk] = np.maximum(xx[s:s + chunk] + D[np.arange(len(j)), j], 0.0)
    return labels, d2


def lloyd(X: np.ndarray, C: np.ndarray, max_iter: int, tol: float
          ) -> tuple[np.ndarray, np.ndarray, float]:
    """scikit-learn's Lloyd iterations (``_kmeans_single_lloyd``) in numpy: assign every
    row to its nearest centre, move each centre to its rows' mean (float64 sums), until
    the labels stop changing or the squared centre shift is at most ``tol`` times the
    mean per-feature variance; empty clusters take the rows farthest from their centres;
    a last assignment when it stopped on the shift. Returns (labels, centres, inertia).

    Replaces ``sklearn.cluster.KMeans``: importing scikit-learn costs 1-1.2 s of a fresh
    process (4-7 s on the busy machine), and the default pipeline needs nothing else of it;
    its products are float32 gemms, one BLAS call per 16k rows.
    """
    from ..assign import _cluster_sums

    X = np.asarray(X)
    C = np.array(C, dtype=X.dtype)
    n, k = X.shape[0], C.shape[0]
    tol_abs = float(np.mean(np.var(X, axis=0, dtype=np.float64))) * tol
    everyone = np.ones(n, dtype=bool)
    xx = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    old = None
    strict = False
    labels = d2 = None
    for _ in range(max(1, max_iter)):
        labels, d2 = nearest(X, C, xx)
        sums = _cluster_sums(X, labels, everyone, k) if X.dtype == np.float32 else \
            _sums64(X, labels, k)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # scikit-learn's _relocate_empty_clusters_dense
            far = np.argsort(-d2, kind="stable")[: empty.size]
            for e, r in zip(empty, far):
                old_c = labels[r]
                sums[old_c] -= X[r]
                counts[old_c] -= 1
                sums[e] = X[r]
                counts[e] = 1
        C_new = (sums / np.maximum(counts, 1)[:, None]).astype(X.dtype)
        C_new[counts == 0] = C[counts == 0]
        shift = float(((C_new.astype(np.float64) - C) ** 2).sum())
        C = C_new
        if old is not None and np.array_equal(labels, old):
            strict = True
            break
        if shift <= tol_abs:
            break
        old = labels
    if not strict:
        labels, d2 = nearest(X, C, xx)
    return labels, C, float(d2.sum())


def _sums64(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """float64 rows: per-cluster sums by one one-hot product per 4,096 rows."""
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    for s in range(0, X.shape[0], 4096):
        lab = labels[s:s + 4096]
        onehot = np.zeros((k, lab.size), dtype=np.float64)
        onehot[lab, np.arange(lab.size)] = 1.0
        sums += onehot @ X[s:s + 4096]
    return sums


_auto_k = _choose_k.with_auto_k("kmeans", _fit)


def _warm_fit(X: np.ndarray, p: dict, seed: int) -> Fitted:
    labels, report = _fit_report(X, p, seed)
    return Fitted(labels, None if report is None else {"warm_start": report})


_warm = explained(_warm_fit)


def _explain(X: np.ndarray, p: dict, seed: int) -> Fitted:
    """k-means's fit with its choices: the k sweep (``n_clusters 'auto'``), or the warm
    start's report."""
    if p.get(WARM) is not None and p["n_clusters"] != "auto":
        return _warm(X, p, seed)
    return _auto_k(X, p, seed)


KMEANS = Algorithm(
    name="kmeans",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=lambda p: _choose_k.count(p, "n_clusters"),
    noise=False,
    doc="k-means: n_clusters centroids, every row assigned; fast, assumes round clusters.",
    explain=_explain,
)
