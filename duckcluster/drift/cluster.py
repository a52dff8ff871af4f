"""``cluster``: cluster-share drift against baseline centroids.

Both sides are assigned to the same centroids by cosine similarity: a reference
run's centroids (``reference := 'topics'``, the same centroids ``assign_cluster``
uses) or, without one, k-means centroids (``n_clusters``) fitted on a seeded
sample of both sides pooled (``fit_fraction`` of the pooled rows, at most 5,000),
drawn without looking at which side a row came from. The clustering is then a
function of the pooled rows only, so when nothing drifted every relabelling of
the rows is as likely as the real one and the permutation p-value is exact, also
when the sides share rows (the same table twice, overlapping windows, a current
side that contains the baseline). Rows whose best similarity is below
``assignment_threshold`` count as cluster -1, "fits no cluster". The threshold
defaults, with a reference, to the reference run's own threshold (``assign_cluster``'s
default: the one the run stored, 0.5 for runs with none) and to 'auto' without one: the ``auto_quantile`` (5%) quantile of the fitting rows' similarity
to their centroid, so about 5% of unchanged rows fall below it and most rows of an
unseen kind do. ``new_content_share`` is, with a reference, the current share of
-1; without one, the current share of every category (cluster or -1) in which the
baseline has less than a tenth of the current side's share (content of a kind the
baseline barely has: an unseen kind forms its own pooled cluster).
The statistic is the Jensen-Shannon divergence (base 2, 0..1) between the two
share vectors; the p-value is an exact permutation test of it (tables drawn
from the multivariate hypergeometric distribution, i.e. every relabelling of
the rows with both margins fixed). ``details`` lists every cluster's counts,
shares and delta, the new-content share and the asymptotic chi-square p-value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._params import Param
from ..core.assign import assign, centroids_from_labels, normalize_rows
from ._base import (
    FIT_MAX_ROWS,
    Context,
    DriftMethod,
    DriftResult,
    Reference,
    decide,
    permutation_p_value,
    sample_details,
    sample_param,
    subsample,
)

PARAMS = {
    "max_samples": sample_param(),
    # tables, not relabelings, are drawn: cheap, so more of them than elsewhere
    "n_permutations": Param(int, 2000, low=19, high=1_000_000,
                            doc="permuted tables of the exact p-value"),
    "n_clusters": Param(int, 10, low=2, high=1000,
                        doc="without a reference: k-means clusters fitted on the baseline"),
    "fit_fraction": Param(float, 0.5, low=0.1, high=0.9,
                          doc="without a reference: share of the pooled rows of both sides "
                              "k-means is fitted on (at most 5,000)"),
    "assignment_threshold": Param(float, None, low=-1.0, high=1.0, nullable=True,
                                  doc="rows below this cosine similarity are cluster -1 (new); "
                                      "default: the reference run's own (assign_cluster's "
                                      "default), else 'auto'"),
    "auto_quantile": Param(float, 0.05, low=0.0, high=0.5,
                           doc="'auto' threshold: this quantile of the k-means fitting rows' "
                               "similarity to their centroid"),
}


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (log base 2) of share vectors along axis 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0)
        b = np.where(q > 0, q * np.log2(q / m), 0.0)
    return 0.5 * (a.sum(axis=0) + b.sum(axis=0))


@dataclass(frozen=True)
class ShareTest:
    js_divergence: float
    p_value: float
    chi2: float
    chi2_dof: int
    chi2_p_value: float


def share_test(counts_b: np.ndarray, counts_c: np.ndarray, n_permutations: int,
               rng: np.random.Generator) -> ShareTest:
    """Exact permutation test of two count vectors over the same categories.

    Conditional on the category totals, the baseline counts of a random
    relabelling are multivariate hypergeometric; O(P k), whatever the row count.
    """
    from scipy.stats import chi2_contingency

    cb = np.asarray(counts_b, dtype=np.int64)
    cc = np.asarray(counts_c, dtype=np.int64)
    keep = (cb + cc) > 0
    cb, cc = cb[keep], cc[keep]
    nb, nc = int(cb.sum()), int(cc.sum())
    if cb.size < 2:
        return ShareTest(0.0, 1.0, 0.0, 0, 1.0)
    tot = cb + cc
    draws = rng.multivariate_hypergeometric(tot, nb, size=n_permutations)
    tables_b = np.vstack([cb[None, :], draws]).T  # (k, P + 1)
    tables_c = tot[:, None] - tables_b
    stats = js_divergence(tables_b / nb, tables_c / nc)
    chi = chi2_contingency(np.vstack([cb, cc]), correction=False)
    return ShareTest(float(stats[0]), permutation_p_value(stats), float(chi.statistic),
                     int(chi.dof), float(chi.pvalue))


#: Threshold with a reference whose run has no threshold of its own.
REFERENCE_THRESHOLD = 0.5


def _reference(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context, rng: np.random.Generator
               ) -> tuple[Reference, float, dict]:
    """(centroids, assignment threshold, details) for the tested rows ``B`` and ``C``."""
    thr = p["assignment_threshold"]
    if ctx.reference is not None:
        if thr is None:  # assign_cluster's default: the reference run's own threshold
            thr = REFERENCE_THRESHOLD if ctx.reference.threshold is None else \
                float(ctx.reference.threshold)
        return ctx.reference, thr, {"reference": ctx.reference.source,
                                    "assignment_threshold": thr}
    from sklearn.cluster import KMeans

    # fit on a uniform sample of the pooled rows: which rows are fitted does not depend
    # on their side, so the categories are a function of the pool and the sides stay
    # exchangeable under the null (fitting on baseline rows only and testing a current
    # side that holds those same rows flagged drift on identical inputs)
    n = B.shape[0] + C.shape[0]
    n_fit = min(max(2, round(n * p["fit_fraction"])), FIT_MAX_ROWS, n)
    # unsorted: k-means' initialisation reads rows in order, which must not be side order
    pick = rng.choice(n, size=n_fit, replace=False)
    in_b = pick[pick < B.shape[0]]
    X = np.empty((n_fit, B.shape[1]), dtype=np.float32)
    X[pick < B.shape[0]] = B[in_b]
    X[pick >= B.shape[0]] = C[pick[pick >= B.shape[0]] - B.shape[0]]
    X = normalize_rows(X)
    k = max(2, min(p["n_clusters"], n_fit // 5))
    labels = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2**31 - 1))
                    ).fit_predict(X)
    ids, cents = centroids_from_labels(X, labels)
    ref = Reference(cluster_ids=ids, centroids=cents,
                    source=f"k-means (k={k}) on both sides pooled")
    rule = "given"
    if thr is None:  # fitting rows only: a function of the pool, like the centroids
        _, sims = assign(X, cents)
        thr, rule = float(np.quantile(sims, p["auto_quantile"])), \
            f"auto: {p['auto_quantile']:g} quantile of the fitting rows' similarity"
    return ref, thr, {"reference": ref.source, "reference_fit_rows": int(n_fit),
                      "reference_fit_rows_baseline": int(in_b.size),
                      "assignment_threshold": thr, "threshold_rule": rule}


#: Without a reference, a category is new content when the baseline's share of it is
#: below this fraction of the current side's.
NEW_SHARE_RATIO = 0.1


def assigned_counts(X: np.ndarray, ref: Reference, threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(categories, counts): reference cluster ids then -1, rows per category."""
    if ref.centroids.shape[0] and X.shape[1] != ref.centroids.shape[1]:
        from .._errors import DataError

        raise DataError(f"The embeddings have {X.shape[1]} dimensions but the reference "
                        f"centroids ({ref.source}) have {ref.centroids.shape[1]}. Use a "
                        "reference clustered on the same embedding.")
    idx, _ = assign(normalize_rows(X), ref.centroids, threshold)
    k = ref.centroids.shape[0]
    counts = np.bincount(np.where(idx >= 0, idx, k), minlength=k + 1)
    cats = np.r_[np.asarray(ref.cluster_ids, dtype=np.int64), -1]
    return cats, counts


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    Bs, Cs = subsample(B, p["max_samples"], rng), subsample(C, p["max_samples"], rng)
    ref, thr, ref_details = _reference(Bs, Cs, p, ctx, rng)
    cats, cb = assigned_counts(Bs, ref, thr)
    _, cc = assigned_counts(Cs, ref, thr)
    t = share_test(cb, cc, p["n_permutations"], rng)
    nb, nc = int(cb.sum()), int(cc.sum())
    if ctx.reference is not None:  # -1: fits no cluster of the reference run
        new = cats == -1
    else:  # a kind the baseline barely has: its own pooled cluster, or -1
        new = cb / nb < NEW_SHARE_RATIO * (cc / nc)
    clusters = [{"cluster_id": int(c), "baseline_count": int(b), "current_count": int(k),
                 "baseline_share": b / nb, "current_share": k / nc, "delta": k / nc - b / nb,
                 "new": bool(w)}
                for c, b, k, w in zip(cats, cb, cc, new)]
    details = {**sample_details(B, C, Bs, Cs, p["max_samples"]), **ref_details,
               "new_content_share": float(cc[new].sum() / nc),
               "baseline_unassigned_share": float(cb[-1] / nb),
               "current_unassigned_share": float(cc[-1] / nc),
               "chi2": t.chi2, "chi2_dof": t.chi2_dof, "chi2_p_value": t.chi2_p_value,
               "n_permutations": p["n_permutations"], "clusters": clusters}
    return DriftResult("cluster", t.js_divergence, t.p_value, ctx.alpha,
                       decide(t.p_value, ctx.alpha), details)


CLUSTER = DriftMethod(name="cluster", params=PARAMS, compute=compute, min_rows=10,
                      doc=__doc__.split("\n\n", 1)[1],
                      statistic=("Jensen-Shannon divergence (base 2, 0 to 1) between the "
                                 "sides' cluster shares"))
