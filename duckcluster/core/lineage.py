"""Cluster identity across runs: which new cluster continues which old one, and what happened.

Pure numpy (and scipy's ``linear_sum_assignment``); the engine supplies the two runs'
top-level centroids and the member flows between them, and stores what comes out.

Terms, for an old (previous full run) cluster ``i`` and a new cluster ``j``; *shared
rows* are ids that are members of both runs (noise included):

- ``similarity``: cosine of the two centroids.
- ``flow F[i, j]``: shared rows in old cluster ``i`` and new cluster ``j``.
- ``a[i]``: old cluster ``i``'s shared rows (wherever they are now, noise included);
  ``b[j]``: new cluster ``j``'s shared rows (wherever they were).
- ``previous_share = F / a`` (where ``i``'s rows went), ``share = F / b`` (where
  ``j``'s rows came from), ``overlap = F / (a + b - F)`` (Jaccard over shared rows).

Matching. A pair is a candidate when both clusters have shared rows and most of one
side is in the other (``previous_share >= min_share``, or ``F / size[j] >= min_share``
counting all of the new cluster's members when their number is known: a cluster that
grew by absorbing noise or new rows, or shrank, is still the same one, but a new cluster
made mostly of rows the previous run never saw is born, even when its few old rows all
came from one cluster),
or when each is the other's main counterpart (*mutual main*: more of ``i``'s shared rows
went to ``j`` than to any other new cluster or to noise, more of ``j``'s members came from
``i`` than from any other old cluster, old noise or rows the previous run never saw, and
both shares are at least ``split_share``: the main part of a cluster k-means spread over
several keeps the id),
or, when either has none (new data only, rows deleted), when ``similarity >=
min_similarity``. Among candidates one optimal assignment (maximum total ``similarity +
overlap``) pairs each new cluster with at most one old one; a paired new cluster
continues the old one (and takes its id when ids are stable).

Events (one row per cluster, or per old/new pair for splits and merges):

- ``split``: an old cluster of which at least two new clusters each got at least
  ``split_share`` of its shared rows; one row per such new cluster.
- ``merged``: a new cluster into which at least two old clusters each sent at least
  ``merge_share`` of their shared rows; one row per such old cluster.
- ``continued``: a matched pair that is not part of a split or merge.
- ``born``: a new cluster that is not matched, not a split part, not a merge result; or
  one that is not matched and most of whose members the previous run never saw (more
  than came from any one old cluster), even if it also took a part of a split or a merge
  (its ``split`` / ``merged`` rows are listed too).
- ``died``: an old cluster that is not matched, did not split and did not merge.

Splits and merges need shared rows; between runs on disjoint data only ``continued``,
``born`` and ``died`` can be seen. A ``split`` or ``merged`` row says whether that pair
was the matched one (the new cluster kept the old id).

A continued cluster keeps its label when ``similarity >= label_similarity`` and, where
rows are shared, ``overlap >= label_overlap``; otherwise it is labeled again.

>>> C_old = np.eye(3, dtype=np.float32)
>>> C_new = np.eye(3, dtype=np.float32)[[2, 0, 1]]    # the same clusters, renumbered
>>> F = flow_matrix(3, 3, [(0, 1, 50), (1, 2, 40), (2, 0, 30)])
>>> r = link(C_old, C_new, F)
>>> r.match.tolist(), [e.event for e in r.events]
([2, 0, 1], ['continued', 'continued', 'continued'])
>>> assign_ids([0, 1, 2], r.match, old_ids=[3, 5, 8], next_id=9)
([8, 3, 5], 9)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._params import Param, validate_params

#: Thresholds of the matching and the events (a definition's ``lineage := {...}``).
OPTIONS: dict[str, Param] = {
    "min_share": Param(float, 0.5, low=0.0, high=1.0, low_open=True,
                       doc="share of one cluster's shared rows in the other a pair needs "
                           "to match"),
    "min_similarity": Param(float, 0.9, low=-1.0, high=1.0,
                            doc="centroid cosine a pair needs to match when it shares no rows"),
    "split_share": Param(float, 0.25, low=0.0, high=0.5, low_open=True,
                         doc="share of an old cluster's rows each part of a split received"),
    "merge_share": Param(float, 0.5, low=0.0, high=1.0, low_open=True,
                         doc="share of its rows each old cluster of a merge sent"),
    "label_similarity": Param(float, 0.9, low=-1.0, high=1.0,
                              doc="centroid cosine a continued cluster needs to keep its label"),
    "label_overlap": Param(float, 0.5, low=0.0, high=1.0,
                           doc="member overlap a continued cluster needs to keep its label"),
    "split_new_topics": Param(bool, False,
                              doc="split off, as a new cluster, the rows of a cluster that the "
                                  "previous run never saw and that fit none of its clusters"),
    "new_topic_share": Param(float, 0.2, low=0.0, high=1.0, low_open=True,
                             doc="share of a cluster's members such rows must be to be split off"),
    "new_topic_min_size": Param(int, 10, low=2,
                                doc="rows such a new topic (and what is left of its cluster) "
                                    "needs at least"),
    "warm_start": Param(bool, True,
                        doc="k-means and auto start from the previous full run's clusters "
                            "(their rows still present) plus new centres for rows they fit "
                            "poorly, instead of re-fitting from scratch"),
}

EVENTS = ("continued", "born", "died", "split", "merged")


def validate_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The lineage thresholds with defaults filled in (SpecError naming a bad one)."""
    return validate_params("lineage", OPTIONS, dict(given or {}))


@dataclass(frozen=True)
class Event:
    """One lineage row. ``old`` / ``new``: cluster positions (-1: none)."""

    event: str
    old: int
    new: int
    matched: bool
    similarity: float | None
    overlap: float | None
    previous_share: float | None
    share: float | None
    shared: int


@dataclass(frozen=True)
class Linked:
    """Result of :func:`link`, in cluster positions of the two runs."""

    match: np.ndarray  # (k_new,) old position continued by each new cluster, -1 if none
    events: list[Event]
    keep_label: np.ndarray  # (k_new,) bool: a continued cluster that changed little


@dataclass(frozen=True)
class WarmStart:
    """What a warm-started fit starts from: ``labels`` (n,) int64, the previous full run's
    cluster id of each row of the fit (-1: a row it did not have, or noise there), and
    that run's id (``cluster_runs.choices.warm_start.from_run``)."""

    labels: np.ndarray
    from_run: str


def flow_matrix(k_old: int, k_new: int, flows: Iterable[tuple[int, int, int]]) -> np.ndarray:
    """(k_old + 1, k_new + 1) counts from (old position, new position, rows) triples;
    position -1 (noise) goes to the last row / column."""
    F = np.zeros((k_old + 1, k_new + 1), dtype=np.int64)
    for i, j, n in flows:
        F[i if i >= 0 else k_old, j if j >= 0 else k_new] += int(n)
    return F


def _similarity(C_old: np.ndarray, C_new: np.ndarray) -> np.ndarray:
    """Centroid cosines (k_old, k_new); NaN when the widths differ (another model)."""
    if C_old.ndim != 2 or C_new.ndim != 2 or C_old.shape[1] != C_new.shape[1]:
        return np.full((len(C_old), len(C_new)), np.nan)
    def unit(C):
        C = np.asarray(C, dtype=np.float64)
        n = np.linalg.norm(C, axis=1, keepdims=True)
        return np.divide(C, n, out=np.zeros_like(C), where=n > 0)
    # einsum, not BLAS: a threaded gemm this small costs 50 ms of thread start-up on a busy
    # 2-core machine (k = 100, d = 384), the loop 2-4 ms
    return np.clip(np.einsum("id,jd->ij", unit(C_old), unit(C_new)), -1.0, 1.0)


def link(C_old: np.ndarray, C_new: np.ndarray, F: np.ndarray,
         options: Mapping[str, Any] | None = None,
         new_sizes: np.ndarray | None = None) -> Linked:
    """Match new clusters to old ones and list the events between the two runs.

    ``C_old`` (k_old, d), ``C_new`` (k_new, d): top-level centroids; ``F``: the
    :func:`flow_matrix` of the shared rows. ``options``: :data:`OPTIONS` values.
    ``new_sizes`` (k_new,): all members of each new cluster, new rows included (without
    it, only shared rows count).
    """
    from scipy.optimize import linear_sum_assignment

    o = validate_options(options)
    k_old, k_new = len(C_old), len(C_new)
    S = _similarity(C_old, C_new)
    Fc = F[:k_old, :k_new].astype(np.float64)
    a = F[:k_old, :].sum(axis=1).astype(np.float64)
    b = F[:, :k_new].sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        prev_share = np.where(a[:, None] > 0, Fc / a[:, None], 0.0)
        share = np.where(b[None, :] > 0, Fc / b[None, :], 0.0)
        union = a[:, None] + b[None, :] - Fc
        overlap = np.where(union > 0, Fc / union, 0.0)
    by_rows = (a[:, None] > 0) & (b[None, :] > 0)
    Sv = np.nan_to_num(S, nan=-1.0)
    whole = share
    if new_sizes is not None:  # the new cluster's side, over all of its members
        n = np.maximum(np.asarray(new_sizes, dtype=np.float64), b)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            whole = np.where(n > 0, Fc / n, 0.0)
    most = np.maximum(prev_share, whole) >= o["min_share"]
    # mutual main: j got more of i's shared rows than any other new cluster (or noise) and
    # more of j's members came from i than from any other old cluster, old noise or rows the
    # previous run never saw; with split_share of both sides, i continues as j even when
    # k-means spread i's rows (the main part of a split keeps the id)
    unseen = np.zeros(k_new) if new_sizes is None else \
        np.maximum(np.asarray(new_sizes, dtype=np.float64) - b, 0.0)
    mutual = np.zeros_like(most)
    if k_old and k_new:
        dest = F[:k_old, :].argmax(axis=1)  # (k_old,) noise is column k_new
        src = F[:, :k_new].argmax(axis=0)   # (k_new,) old noise is row k_old
        top = F[src, np.arange(k_new)] > unseen
        i = np.arange(k_old)
        mutual[i, np.minimum(dest, k_new - 1)] = (dest < k_new) & (F[i, dest] > 0)
        mutual &= ((src[None, :] == i[:, None]) & top[None, :])
        mutual &= (prev_share >= o["split_share"]) & (whole >= o["split_share"])
    eligible = np.where(by_rows, most | mutual, Sv >= o["min_similarity"])
    score = np.where(eligible, 1.0 + np.maximum(Sv, 0.0) + np.where(by_rows, overlap, 0.0),
                     0.0)
    match = np.full(k_new, -1, dtype=np.int64)
    if k_old and k_new and eligible.any():
        rows, cols = linear_sum_assignment(score, maximize=True)
        ok = eligible[rows, cols]
        match[cols[ok]] = rows[ok]

    def num(M, i, j):
        v = float(M[i, j])
        return None if np.isnan(v) else v

    def event(kind, i, j):
        shared = bool(by_rows[i, j])
        return Event(kind, int(i), int(j), bool(match[j] == i), num(S, i, j),
                     float(overlap[i, j]) if shared else None,
                     float(prev_share[i, j]) if a[i] > 0 else None,
                     float(share[i, j]) if b[j] > 0 else None, int(Fc[i, j]))

    parts = prev_share >= o["split_share"]
    split_of = parts.sum(axis=1) >= 2  # (k_old,) old clusters that split
    sent = prev_share >= o["merge_share"]
    merged_into = sent.sum(axis=0) >= 2  # (k_new,) new clusters that are merges
    in_split = (parts & split_of[:, None])
    in_merge = (sent & merged_into[None, :])
    events: list[Event] = []
    for i in np.flatnonzero(split_of):
        events += [event("split", i, j) for j in np.flatnonzero(in_split[i])]
    for j in np.flatnonzero(merged_into):
        events += [event("merged", i, j) for i in np.flatnonzero(in_merge[:, j])]
    # a new cluster most of whose members the previous run never saw is born, even when it
    # also took a part of a split or rows of a merge (it has those rows too)
    new_mostly = unseen > (F[:, :k_new].max(axis=0) if k_new else 0)
    keep = np.zeros(k_new, dtype=bool)
    for j in range(k_new):
        i = match[j]
        if i >= 0 and not in_split[i, j] and not in_merge[i, j]:
            events.append(event("continued", i, j))
            keep[j] = (Sv[i, j] >= o["label_similarity"] and
                       (not by_rows[i, j] or overlap[i, j] >= o["label_overlap"]))
        elif i < 0 and (not in_split[:, j].any() and not merged_into[j] or new_mostly[j]):
            events.append(_lonely("born", S, overlap, by_rows, j, axis=0))
    matched_old = np.zeros(k_old, dtype=bool)
    matched_old[match[match >= 0]] = True
    for i in range(k_old):
        if not matched_old[i] and not split_of[i] and not in_merge[i].any():
            events.append(_lonely("died", S, overlap, by_rows, i, axis=1))
    order = {e: n for n, e in enumerate(EVENTS)}
    events.sort(key=lambda e: (order[e.event], e.old if e.old >= 0 else 1 << 40,
                               e.new if e.new >= 0 else 1 << 40))
    return Linked(match=match, events=events, keep_label=keep)


def _lonely(kind: str, S: np.ndarray, overlap: np.ndarray, by_rows: np.ndarray, k: int,
            axis: int) -> Event:
    """A born (axis 0: new cluster ``k``) or died (axis 1: old cluster ``k``) row with the
    best candidate's similarity and overlap, which fell short of the thresholds."""
    s = S[:, k] if axis == 0 else S[k, :]
    ov = np.where(by_rows[:, k] if axis == 0 else by_rows[k, :],
                  overlap[:, k] if axis == 0 else overlap[k, :], np.nan)
    best_s = float(np.nanmax(s)) if s.size and not np.isnan(s).all() else None
    best_o = float(np.nanmax(ov)) if ov.size and not np.isnan(ov).all() else None
    return Event(kind, -1 if axis == 0 else k, k if axis == 0 else -1, False, best_s, best_o,
                 None, None, 0)


def new_topics(labels: np.ndarray, unseen: np.ndarray, best_old: np.ndarray,
               threshold: float, options: Mapping[str, Any] | None = None
               ) -> list[np.ndarray]:
    """Rows a new run put in a cluster that are a topic the previous run did not have.

    A clustering can absorb a new topic into an existing cluster (k-means with a fixed k
    must; ``auto`` often does when the topic is small). Per new cluster, its *far* rows are
    those the previous run never saw (``unseen`` (n,) bool) whose best cosine to the
    previous run's centroids (``best_old`` (n,)) is below ``threshold`` (the previous run's
    own assignment threshold: all but about 10 % of its members are closer to their own
    centroid). When far rows are at least ``new_topic_share`` of the cluster's members
    and ``new_topic_min_size`` rows, and as many are left, they are returned as one new
    topic (rows of old topics are far only about 10 % of the time, by the threshold's
    definition). ``labels`` (n,): the new run's clusters (-1 noise). Returns one array
    of row positions per new topic.

    >>> labels = np.array([0] * 30 + [1] * 30 + [2] * 30)
    >>> unseen = np.arange(90) >= 15                        # rows 15.. are new
    >>> best = np.where(np.arange(90) < 18, 0.8, 0.1)       # rows 18.. fit no old cluster
    >>> best[60:85] = 0.8                                   # but 60..84 do
    >>> [(int(p.min()), len(p)) for p in new_topics(labels, unseen, best, 0.3)]
    [(18, 12)]

    (Cluster 1 is all far rows: a new cluster already. Cluster 2 has 5: too few.)
    """
    o = validate_options(options)
    labels = np.asarray(labels)
    far = np.asarray(unseen, dtype=bool) & (np.asarray(best_old) < threshold) & (labels >= 0)
    out = []
    if not o["split_new_topics"] or not far.any():
        return out
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    n_far = np.bincount(np.searchsorted(ids, labels[far]), minlength=len(ids))
    for c, size, m in zip(ids, sizes, n_far):
        if m >= max(o["new_topic_min_size"], o["new_topic_share"] * size) and \
                size - m >= o["new_topic_min_size"]:
            out.append(np.flatnonzero(far & (labels == c)))
    return out


def fingerprints(X: np.ndarray) -> np.ndarray:
    """(n,) int64 per-row fingerprints of the float32 vectors ``X`` (n, d): the sum, modulo
    2**64, of each row's bytes read as 64-bit words. Exact and independent of how rows
    are batched, so an assign run can tell a row it has seen unchanged (same id, same
    fingerprint) from an edited one; ~0.05 s per 100k x 384 rows.

    >>> X = np.ones((2, 4), dtype=np.float32); X[1, 3] = 2
    >>> a, b = fingerprints(X); bool(a != b), bool(fingerprints(X[:1])[0] == a)
    (True, True)
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        return np.zeros(X.shape[0] if X.ndim else 0, dtype=np.int64)
    if X.shape[1] % 2:  # whole 64-bit words
        X = np.concatenate([X, np.zeros((X.shape[0], 1), dtype=np.float32)], axis=1)
    return X.view(np.uint64).sum(axis=1, dtype=np.uint64).view(np.int64)


def assign_ids(new_ids: Sequence[int], match: np.ndarray, old_ids: Sequence[int],
               next_id: int) -> tuple[list[int], int]:
    """Stable ids: a matched new cluster takes its old cluster's id, every other one the
    next id never used by the definition (in ``new_ids`` order). Returns (ids, next_id)."""
    out = []
    for j, _ in enumerate(new_ids):
        if match[j] >= 0:
            out.append(int(old_ids[match[j]]))
        else:
            out.append(int(next_id))
            next_id += 1
    taken = max(out, default=-1) + 1
    return out, max(int(next_id), taken)
