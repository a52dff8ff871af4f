"""Cluster quality metrics and the ``should_recluster`` recommendation.

Metrics (computed on the L2-normalized embeddings, not on preprocessed ones):

- ``silhouette_score`` (-1..1, cosine metric, non-noise rows): exact up to
  :data:`SILHOUETTE_EXACT_MAX` rows (and :data:`SILHOUETTE_BUDGET` row-cluster
  pairs), above that on a seeded sample of that many non-noise rows
  (``silhouette_sample_size`` says how many rows were used). On unit rows the
  mean cosine distance from a row to a cluster is ``1 - x . sum(cluster) / size``,
  so the exact value costs O(n k d) instead of sklearn's O(n^2 d): 1M rows x 30
  clusters in about a second; float32 BLAS for the dot products, equal to
  sklearn's float64 value to ~1e-7 (measured 9e-8 at 20k rows, d=384).
- ``mean_cosine_to_centroid`` (0..1 in practice): mean similarity of members to
  their own centroid.
- ``noise_ratio``: fraction of rows labelled -1.
- ``cluster_size_entropy`` (0..1): Shannon entropy of the non-noise cluster
  sizes divided by ``log(k)``; 1 is perfectly balanced.
- ``davies_bouldin`` (lower is better) and ``calinski_harabasz`` (higher is
  better), euclidean on the unit sphere, non-noise rows.

Metrics that need two or more clusters are None when undefined; nothing here
raises on zero or one cluster.

``should_recluster`` is True when any of these thresholds (:data:`THRESHOLDS`)
is crossed, each crossing adding a reason:

- ``silhouette_score < 0.1``: clusters barely separated (0.5+ is good; text
  embeddings typically score 0.05-0.3, so only the bottom is flagged);
- ``noise_ratio > 0.5``: most rows are noise, density params too strict;
- ``mean_cosine_to_centroid < 0.3``: members hardly resemble their centroid;
- ``n_clusters < 2``: nothing was grouped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {
        "min_silhouette_score": 0.1,
        "max_noise_ratio": 0.5,
        "min_mean_cosine_to_centroid": 0.3,
        "min_n_clusters": 2,
    }
)

SILHOUETTE_EXACT_MAX = 1_000_000
#: Most (rows x clusters) pairs the exact silhouette evaluates; beyond it (many
#: clusters) the rows are sampled, never below 10,000 rows.
SILHOUETTE_BUDGET = 100_000_000
_SILHOUETTE_MIN_SAMPLE = 10_000


@dataclass(frozen=True)
class Quality:
    """Quality of one clustering; see the module docstring for each metric."""

    silhouette_score: float | None
    mean_cosine_to_centroid: float | None
    noise_ratio: float
    cluster_size_entropy: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
    n_clusters: int
    should_recluster: bool
    reasons: tuple[str, ...]
    silhouette_sample_size: int | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (``reasons`` as a list), ready for a table row or JSON."""
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _entropy(counts: np.ndarray) -> float | None:
    k = counts.size
    if k < 2:
        return None
    p = counts / counts.sum()
    return float(min(1.0, -(p * np.log(p)).sum() / math.log(k)))


def _silhouette(
    X: np.ndarray, labels: np.ndarray, seed: int, groups: _Groups | None = None,
) -> tuple[float | None, int | None]:
    n = labels.size
    k = np.unique(labels).size
    cap = min(SILHOUETTE_EXACT_MAX,
              max(_SILHOUETTE_MIN_SAMPLE, SILHOUETTE_BUDGET // max(k, 1)))
    if n > cap:
        rng = np.random.default_rng(int(seed) % (2**32))
        rows = np.sort(rng.choice(n, size=cap, replace=False))
        X, labels, n, groups = X[rows], labels[rows], cap, None
    k = np.unique(labels).size
    if not 2 <= k <= n - 1:
        return None, None
    return _finite(cosine_silhouette(X, labels, groups=groups, unit=True)), n


@dataclass(frozen=True)
class _Groups:
    """Per-cluster statistics of a labelled matrix: what every metric below needs."""

    inv: np.ndarray  # (n,) cluster index 0..k-1 of each row
    counts: np.ndarray  # (k,) float64 sizes
    sums: np.ndarray  # (k, d) float64 sums of the rows
    means32: np.ndarray  # (k, d) float32 means, for the BLAS passes


def _groups(X: np.ndarray, labels: np.ndarray,
            sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _Groups:
    """Cluster sizes and float64 sums in one chunked pass (no float64 copy of X);
    ``sums``: :func:`~duckcluster.core.assign.cluster_sums` of exactly these rows and
    labels, when the caller has them (no pass at all)."""
    from .assign import _cluster_sums

    labels = np.asarray(labels).ravel()
    if sums is not None:
        ids, counts, total = sums
        inv = np.searchsorted(ids, labels)
        return _Groups(inv=inv, counts=counts, sums=total,
                       means32=(total / counts[:, None]).astype(np.float32))
    _, inv = np.unique(labels, return_inverse=True)
    inv = inv.ravel()
    k = int(inv.max()) + 1 if inv.size else 0
    counts = np.bincount(inv, minlength=k).astype(np.float64)
    sums = _cluster_sums(np.asarray(X, dtype=np.float32), inv, np.ones(inv.size, dtype=bool), k)
    means32 = (sums / counts[:, None]).astype(np.float32)
    return _Groups(inv=inv, counts=counts, sums=sums, means32=means32)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """X as float32 with unit rows (zero rows stay zero); no copy when it already is."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))  # float32: ~1e-6 of rounding itself
    if np.all(np.abs(norms - 1.0) <= 1e-5):
        return X
    return (X / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)


def _scan(X: np.ndarray, g: _Groups, silhouette: bool, unit: bool, chunk: int = 16_384
          ) -> tuple[np.ndarray, float, float, np.ndarray]:
    """One chunked pass over the rows for every metric that needs them.

    Returns ``(own, silhouette_sum, intra_ss, dist_sum)``: each row's dot product with
    its own cluster's mean (float32), the sum of the rows' cosine silhouettes (0.0 unless
    ``silhouette``; rows must then be unit), the within-cluster sum of squared euclidean
    distances and each cluster's sum of distances to its mean. Distances come from the
    same dot products (``|x - m|^2 = |x|^2 - 2 x . m + |m|^2``, ``|x|^2 = 1`` when
    ``unit``): one float32 ``X @ means.T`` per chunk serves the silhouette, the own
    similarities, Davies-Bouldin and Calinski-Harabasz (before, four passes over X)."""
    from .assign import DENSE_MAX_CLUSTERS

    inv, counts, m32 = g.inv, g.counts, g.means32
    n, k = inv.size, counts.size
    msq = np.einsum("ij,ij->i", m32, m32, dtype=np.float64)
    dense = silhouette or k <= DENSE_MAX_CLUSTERS
    MT = np.ascontiguousarray(m32.T) if dense else None
    own_all = np.empty(n, dtype=np.float32)
    sil, intra_ss, dist_sum = 0.0, 0.0, np.zeros(k)
    for start in range(0, n, chunk):
        Xc = X[start:start + chunk]
        lab = inv[start:start + chunk]
        rows = np.arange(lab.size)
        if dense:
            dots = Xc @ MT  # (rows, k) x . m_c
            own = dots[rows, lab]
        else:
            dots = None
            own = np.einsum("ij,ij->i", Xc, m32[lab])
        own_all[start:start + chunk] = own
        own64 = own.astype(np.float64)
        xx = 1.0 if unit else np.einsum("ij,ij->i", Xc, Xc, dtype=np.float64)
        d2 = np.maximum(xx - 2.0 * own64 + msq[lab], 0.0)
        near = np.flatnonzero(d2 < 1e-2 * (xx + msq[lab]))  # cancellation: take these directly
        if near.size:
            diff = Xc[near] - m32[lab[near]]
            d2[near] = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
        intra_ss += float(d2.sum())
        dist_sum += np.bincount(lab, weights=np.sqrt(d2), minlength=k)
        if silhouette:
            own_n = counts[lab]
            with np.errstate(divide="ignore", invalid="ignore"):
                a = own_n * (1.0 - own64) / (own_n - 1.0)
            mean_to = 1.0 - dots.astype(np.float64)
            mean_to[rows, lab] = np.inf
            b = mean_to.min(axis=1)
            a, b = np.maximum(a, 0.0), np.maximum(b, 0.0)  # distances are >= 0 (rounding)
            denom = np.maximum(a, b)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(denom > 0, (b - a) / denom, 0.0)
            s[own_n <= 1] = 0.0
            sil += float(s.sum())
    return own_all, sil, intra_ss, dist_sum


def cosine_silhouette(X: np.ndarray, labels: np.ndarray, chunk: int = 16_384,
                      groups: _Groups | None = None, unit: bool = False) -> float:
    """Exact mean silhouette with the cosine metric, in O(n k d).

    Rows are L2-normalized here; then the cosine distance between rows is
    ``1 - x . y`` and its mean over a cluster is ``1 - x . m_c`` with ``m_c``
    the cluster's mean (the row itself excluded for its own cluster:
    ``|c| (1 - x . m_c) / (|c| - 1)``). Rows of single-member clusters score 0,
    as in scikit-learn. Sums are float64; the (rows x clusters) dot products
    run in float32 BLAS against the float64 means rounded to float32 (error
    against scikit-learn's float64 value ~1e-7 on unit rows). ``groups``: the
    statistics of exactly these rows and labels, when the caller has them;
    ``unit``: the rows are known to be unit already.

    >>> X = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    >>> round(cosine_silhouette(X, np.array([0, 0, 1, 1])), 4)
    0.9945
    """
    X = np.asarray(X, dtype=np.float32) if unit else _unit_rows(X)
    g = groups or _groups(X, labels)
    return _scan(X, g, silhouette=True, unit=True, chunk=chunk)[1] / g.inv.size


def _two_cluster_metrics(X: np.ndarray, labels: np.ndarray, groups: _Groups | None = None
                         ) -> tuple[float | None, float | None]:
    k = np.unique(labels).size
    if not 2 <= k <= labels.size - 1:
        return None, None
    db, ch = euclidean_scores(X, labels, groups=groups)
    return _finite(db), _finite(ch)


def euclidean_scores(X: np.ndarray, labels: np.ndarray, chunk: int = 16_384,
                     groups: _Groups | None = None) -> tuple[float, float]:
    """(Davies-Bouldin, Calinski-Harabasz) as scikit-learn defines them, in one
    chunked pass over the rows after the cluster sums (sklearn's own took ~2.4 s
    at 100k rows and converts X to float64 whole). Distances to the own centroid
    come from float32 dot products, summed in float64. Needs at least two clusters.

    >>> X = np.array([[0, 0], [0, 1], [4, 0], [4, 1]], dtype=np.float32)
    >>> [round(v, 3) for v in euclidean_scores(X, np.array([0, 0, 1, 1]))]
    [0.25, 32.0]
    """
    X = np.asarray(X, dtype=np.float32)
    g = groups or _groups(X, labels)
    _, _, intra_ss, dist_sum = _scan(X, g, silhouette=False, unit=False, chunk=chunk)
    return _db_ch(g, intra_ss, dist_sum)


def _db_ch(g: _Groups, intra_ss: float, dist_sum: np.ndarray) -> tuple[float, float]:
    """Davies-Bouldin and Calinski-Harabasz from the cluster sums and :func:`_scan`'s
    distance sums."""
    counts, sums = g.counts, g.sums
    k, n = counts.size, g.inv.size
    means = sums / counts[:, None]
    mean = sums.sum(axis=0) / n
    extra_ss = float((counts * ((means - mean) ** 2).sum(axis=1)).sum())
    ch = 1.0 if intra_ss == 0.0 else extra_ss * (n - k) / (intra_ss * (k - 1.0))
    intra = dist_sum / counts
    sq = (means ** 2).sum(axis=1)
    cdist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * means @ means.T, 0.0))
    np.fill_diagonal(cdist, 0.0)
    if np.allclose(intra, 0) or np.allclose(cdist, 0):
        return 0.0, ch
    cdist[cdist == 0] = np.inf
    combined = (intra[:, None] + intra[None, :]) / cdist
    np.fill_diagonal(combined, -np.inf)
    return float(combined.max(axis=1).mean()), ch


def _reasons(
    silhouette: float | None, mean_cos: float | None, noise_ratio: float, k: int
) -> tuple[str, ...]:
    t = THRESHOLDS
    out = []
    if k < t["min_n_clusters"]:
        out.append(f"n_clusters {k} < {t['min_n_clusters']:g}")
    if silhouette is not None and silhouette < t["min_silhouette_score"]:
        out.append(f"silhouette_score {silhouette:.3f} < {t['min_silhouette_score']:g}")
    if noise_ratio > t["max_noise_ratio"]:
        out.append(f"noise_ratio {noise_ratio:.3f} > {t['max_noise_ratio']:g}")
    if mean_cos is not None and mean_cos < t["min_mean_cosine_to_centroid"]:
        out.append(
            f"mean_cosine_to_centroid {mean_cos:.3f} < {t['min_mean_cosine_to_centroid']:g}"
        )
    return tuple(out)


@dataclass(frozen=True)
class _Geometry:
    """What the rows' vectors give (non-noise rows): the cluster statistics, each kept
    row's dot product with its own cluster's mean, and the geometric metrics."""

    groups: _Groups | None
    own: np.ndarray  # (n_kept,) float32
    silhouette: float | None
    sample_size: int | None
    db: float | None
    ch: float | None


def _is_unit(X: np.ndarray, probe: int = 2_048) -> bool:
    """Whether the rows are unit, judged on up to ``probe`` evenly spaced rows (the
    callers pass normalized rows; a full check was a pass over every row)."""
    if not X.shape[0]:
        return True
    Xp = X[:: max(1, X.shape[0] // probe)]
    return bool(np.all(np.abs(np.sqrt(np.einsum("ij,ij->i", Xp, Xp)) - 1.0) <= 1e-5))


def _geometry(X: np.ndarray, labels: np.ndarray, seed: int,
              sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _Geometry:
    """One :func:`_scan` over the non-noise rows after their cluster sums; the
    silhouette from the same pass when it is exact, else on its seeded sample."""
    kept = labels >= 0
    Xk, lk = (X, labels) if kept.all() else (X[kept], labels[kept])
    if not _is_unit(Xk):
        Xk, sums = _unit_rows(Xk), None  # sums of other rows than these
    if not lk.size:
        return _Geometry(None, np.zeros(0, np.float32), None, None, None, None)
    g = _groups(Xk, lk, sums)
    n, k = lk.size, g.counts.size
    cap = min(SILHOUETTE_EXACT_MAX,
              max(_SILHOUETTE_MIN_SAMPLE, SILHOUETTE_BUDGET // max(k, 1)))
    defined = 2 <= k <= n - 1
    exact = defined and n <= cap
    own, sil_sum, intra_ss, dist_sum = _scan(Xk, g, silhouette=exact, unit=True)
    if exact:
        sil, size = _finite(sil_sum / n), n
    else:
        sil, size = _silhouette(Xk, lk, seed) if defined else (None, None)
    db = ch = None
    if defined:
        db, ch = (_finite(v) for v in _db_ch(g, intra_ss, dist_sum))
    return _Geometry(g, own, sil, size, db, ch)


def evaluate(X_norm: np.ndarray, labels: np.ndarray, seed: int,
             sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, Quality]:
    """Each row's cosine similarity to its own cluster's centroid (the L2-normalized
    mean of its rows; NaN for noise) and the quality metrics, from ONE pass over the
    rows after the cluster sums: the similarity is ``x . mean_c * |c| / |sum_c|``, the
    dot product the silhouette and the distances use anyway. What
    :func:`~duckcluster.core.assign.similarity_to_own` plus :func:`compute_quality`
    give, in two passes over X instead of five; one when the caller passes ``sums``,
    :func:`~duckcluster.core.assign.cluster_sums` of these rows and labels.

    >>> X = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    >>> X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> sims, q = evaluate(X, np.array([0, 0, 1, 1]), seed=0)
    >>> bool(np.all(sims > 0.99)), q.n_clusters
    (True, 2)
    """
    X = np.asarray(X_norm, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    geo = _geometry(X, labels, seed, sums)
    sims = np.full(labels.size, np.nan, dtype=np.float32)
    if geo.groups is not None:
        g = geo.groups
        norms = np.linalg.norm(g.sums, axis=1)
        scale = np.divide(g.counts, norms, out=np.zeros_like(norms), where=norms > 0)
        own = (geo.own * scale[g.inv]).astype(np.float32)
        kept = labels >= 0
        sims[kept] = own
    return sims, _assemble(labels, sims.astype(np.float64), geo)


def _assemble(all_labels: np.ndarray, all_sims: np.ndarray, g: _Geometry) -> Quality:
    n = all_labels.size
    all_kept = all_labels >= 0
    noise_ratio = float(1.0 - all_kept.mean()) if n else 0.0
    _, counts = np.unique(all_labels[all_kept], return_counts=True)
    k = int(counts.size)
    member_sims = all_sims[all_kept]
    member_sims = member_sims[np.isfinite(member_sims)]
    mean_cos = float(member_sims.mean()) if member_sims.size else None
    reasons = _reasons(g.silhouette, mean_cos, noise_ratio, k)
    return Quality(
        silhouette_score=g.silhouette,
        mean_cosine_to_centroid=mean_cos,
        noise_ratio=noise_ratio,
        cluster_size_entropy=_entropy(counts),
        davies_bouldin=g.db,
        calinski_harabasz=g.ch,
        n_clusters=k,
        should_recluster=bool(reasons),
        reasons=reasons,
        silhouette_sample_size=g.sample_size,
    )


def compute_quality(
    X_norm: np.ndarray, labels: np.ndarray, sims: np.ndarray, seed: int,
    population: tuple[np.ndarray, np.ndarray] | None = None,
) -> Quality:
    """Quality metrics of a clustering.

    ``X_norm`` (n, d) L2-normalized rows, ``labels`` (n,) with -1 for noise,
    ``sims`` (n,) each row's cosine similarity to its own centroid (NaN for
    noise), ``seed`` for the silhouette sample. ``population``: optional
    ``(labels, sims)`` of ALL rows when ``X_norm`` is only a sample of them (runs
    with ``sample_size``); noise_ratio, mean_cosine_to_centroid, n_clusters and
    cluster_size_entropy then describe every row, the geometric metrics the sample.

    >>> X = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    >>> q = compute_quality(X, np.array([0, 0, 1, 1]), np.ones(4), seed=0)
    >>> q.n_clusters, q.cluster_size_entropy, q.should_recluster
    (2, 1.0, False)
    """
    X = np.asarray(X_norm, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    sims = np.asarray(sims, dtype=np.float64).ravel()
    all_labels, all_sims = labels, sims
    if population is not None:
        all_labels = np.asarray(population[0]).astype(np.int64, copy=False).ravel()
        all_sims = np.asarray(population[1], dtype=np.float64).ravel()
    return _assemble(all_labels, all_sims, _geometry(X, labels, seed))
