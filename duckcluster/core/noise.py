"""The noise policy: what happens to rows a density algorithm leaves as -1.

``noise := 'keep'`` leaves them as -1. ``noise := 'assign'`` gives each one its
nearest cluster (cosine to the centroids of the clusters the algorithm found) when
that similarity is at least the noise threshold; the rest stay -1. Centroids are then
recomputed from every member, so ``cosine_similarity_to_centroid`` is the truth about
the stored centroid, and members say which rows were assigned after the fact
(``noise_assigned``).

The threshold: ``noise_threshold`` when given, else taken from the data: the
:data:`QUANTILE` quantile of the similarity of the algorithm's own members to their own
centroid, so a noise row joins a cluster only when it is as close to it as all but the
loosest 10 % of the cluster's real members. A fixed 0.5 suits well-separated vectors but
not sentence embeddings (measured with all-MiniLM-L6-v2: only 23 % and 43 % of the rows
of two real sets reach 0.5 to their own centroid). The value used is recorded in
``cluster_runs.choices`` (``noise``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .assign import assign, centroids_from_labels, similarity_to_own

#: Quantile of members' own-centroid similarity that is the default noise threshold.
QUANTILE = 0.10
#: The most a run's own assignment threshold asks (:func:`assign_threshold`).
ASSIGN_CEILING = 0.5


@dataclass(frozen=True)
class NoiseOutcome:
    labels: np.ndarray           # (n,) int64 after the policy
    assigned: np.ndarray         # (n,) bool: was -1, now in a cluster
    report: dict | None          # JSON-ready: policy, threshold, where it came from, counts


def data_threshold(X: np.ndarray, labels: np.ndarray) -> float | None:
    """The :data:`QUANTILE` quantile of members' similarity to their own centroid."""
    ids, C = centroids_from_labels(X, labels)
    if not len(ids):
        return None
    sims = similarity_to_own(X, C, labels, ids)
    sims = sims[labels >= 0]
    return float(np.quantile(sims, QUANTILE)) if sims.size else None


def apply(X: np.ndarray, labels: np.ndarray, policy: str,
          threshold: float | None = None) -> NoiseOutcome:
    """Apply ``policy`` ('keep' or 'assign') to the -1 rows of ``labels`` (rows of ``X``
    L2-normalized). ``threshold``: the user's noise_threshold, None = from the data."""
    labels = np.asarray(labels, dtype=np.int64)
    none = np.zeros(labels.shape, dtype=bool)
    noise = labels < 0
    if policy != "assign" or not noise.any() or noise.all():
        report = None if policy != "assign" else {
            "policy": "assign", "noise_rows": int(noise.sum()), "assigned": 0}
        return NoiseOutcome(labels, none, report)
    given = threshold is not None
    thr = float(threshold) if given else data_threshold(X, labels)
    ids, C = centroids_from_labels(X, labels)
    idx, best = assign(X[noise], C)
    take = best >= thr
    out = labels.copy()
    rows = np.flatnonzero(noise)[take]
    out[rows] = ids[idx[take]]
    assigned = none.copy()
    assigned[rows] = True
    report = {
        "policy": "assign",
        "threshold": round(thr, 4),
        "threshold_from": "noise_threshold given" if given else
        f"{QUANTILE:.0%} quantile of members' cosine similarity to their own centroid",
        "noise_rows": int(noise.sum()),
        "assigned": int(take.sum()),
        "left_as_noise": int(noise.sum() - take.sum()),
    }
    return NoiseOutcome(out, assigned, report)



def assign_threshold(choices: dict | None, labels: np.ndarray,
                     sims: np.ndarray) -> float | None:
    """A full run's own assignment threshold, stored as its ``assignment_threshold``
    (``cluster_runs``) and used by ``assign_cluster`` when no threshold is given: the
    noise policy's threshold when it used one (``choices['noise']``: ``noise_threshold``
    or the data-derived one, so a new row is placed as a noise row of the fit was), else
    the :data:`QUANTILE` quantile of the final members' cosine similarity to their own
    centroid (``labels`` (n,), -1 noise; ``sims`` (n,)), but never above
    :data:`ASSIGN_CEILING` (0.5, the fixed default of earlier versions). A fixed 0.5 suits
    well-separated vectors, not sentence embeddings: on the demo's MiniLM texts only 39 %
    of held-back rows of known topics reach it (the run's own threshold is 0.28). On
    well-separated vectors the quantile is high (0.9 and more) and would leave out a tenth
    of each cluster's own rows, so 0.5 stays the most it asks. None for a run without
    members.

    >>> assign_threshold(None, np.array([0, 0, 1, -1]), np.array([.9, .3, .4, .1]))
    0.32
    >>> assign_threshold(None, np.array([0, 0, 1]), np.array([.99, .97, .98]))
    0.5
    """
    noise = (choices or {}).get("noise") or {}
    if noise.get("threshold") is not None:
        return float(noise["threshold"])
    labels = np.asarray(labels)
    sims = np.asarray(sims, dtype=np.float64)
    ok = (labels >= 0) & np.isfinite(sims)
    if not ok.any():
        return None
    return round(min(ASSIGN_CEILING, float(np.quantile(sims[ok], QUANTILE))), 4)
