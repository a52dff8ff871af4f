"""What moved between two sides: regions that are new, vanished, grew or shrank.

The pooled rows of both sides are split into regions by k-means (fitted on the
pooled rows without looking at which side a row came from: the regions are the
same whichever side is called what). Each region then has a count on each
side, a share of each side, and an exact test of "this region's share is the
same on both sides": Fisher's exact test of the 2 x 2 table (region or not,
baseline or current), two-sided. Because the regions were fixed before the
sides were looked at, these p-values are valid; ``p_value_adjusted`` is the
Benjamini-Hochberg adjustment over all regions, and a region counts as
changed when it is below ``alpha``:

- **new**: more current rows than expected, and its baseline share at most
  :data:`NEW_RATIO` of its current share (content with next to no baseline
  counterpart);
- **vanished**: the mirror image (the baseline had it, the current side next
  to none);
- **grown** / **shrunk**: other changed regions;
- **stable**: the rest.

``delta`` (current share minus baseline share) has a natural scale and comes
with a 95 % bootstrap interval (both sides' region counts redrawn from their
multinomials). With a text expression each region gets class-based TF-IDF
keywords (every region's documents one class, as ``cluster_label`` does) and an
offline label from them; the documents of a new or grown region are its
current rows, of a vanished or shrunk one its baseline rows. Examples are the
ids (and texts) of the rows nearest the region's centre, from the side that
characterizes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import SpecError

#: A region is "new" when its baseline share is at most this share of its current share.
NEW_RATIO = 0.2
#: Regions by default: about one per this many pooled rows, within the bounds below.
ROWS_PER_REGION = 30
MIN_REGIONS, MAX_REGIONS = 4, 64
#: Documents per region fed to c-TF-IDF (a seeded sample above it).
MAX_DOCS = 3000
_BOOTSTRAP = 1000


@dataclass
class Region:
    """One row of ``embedding_drift_explain``."""

    cells: np.ndarray  # pooled row numbers in the region
    n_baseline: int
    n_current: int
    baseline_share: float
    current_share: float
    p_value: float
    p_value_adjusted: float = 1.0
    kind: str = "stable"
    delta_ci: tuple[float, float] = (0.0, 0.0)
    keywords: list[str] = field(default_factory=list)
    label: str | None = None
    example_ids: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.current_share - self.baseline_share

    current_total: int = 0  # rows of the current side

    @property
    def excess(self) -> float:
        """Current rows beyond what the baseline share predicts (negative: fewer)."""
        return self.n_current - self.baseline_share * self.current_total


def default_regions(n_rows: int) -> int:
    return int(min(MAX_REGIONS, max(MIN_REGIONS, round(n_rows / ROWS_PER_REGION))))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    n = p.size
    if n == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(ranked, 1.0)
    return out


def partition(X: np.ndarray, n_regions: int, seed: int) -> np.ndarray:
    """Region of every pooled row: seeded k-means (duckcluster's), labels ignored."""
    from ..core.algorithms import get_algorithm, validate_algorithm_params

    k = max(1, min(n_regions, X.shape[0]))
    algo = get_algorithm("kmeans")
    return np.asarray(algo.fit_predict(X, validate_algorithm_params("kmeans", {"n_clusters": k}),
                                       seed), dtype=np.int64)


def fisher_p_values(cb: np.ndarray, cc: np.ndarray, n: int, m: int) -> np.ndarray:
    """Two-sided Fisher exact p-value of each region's (baseline, current) counts
    against the rest of each side."""
    from scipy.stats import fisher_exact

    return np.array([fisher_exact([[int(b), n - int(b)], [int(c), m - int(c)]])[1]
                     for b, c in zip(cb, cc)], dtype=np.float64)


def delta_intervals(cb: np.ndarray, cc: np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
    """(R, 2) 95 % bootstrap intervals of current share - baseline share per region."""
    n, m = int(cb.sum()), int(cc.sum())
    db = rng.multinomial(n, cb / n, size=_BOOTSTRAP) / n
    dc = rng.multinomial(m, cc / m, size=_BOOTSTRAP) / m
    return np.quantile(dc - db, [0.025, 0.975], axis=0).T


def classify(r: Region, alpha: float) -> str:
    if r.p_value_adjusted >= alpha:
        return "stable"
    if r.delta > 0:
        return "new" if r.baseline_share <= NEW_RATIO * r.current_share else "grown"
    return "vanished" if r.current_share <= NEW_RATIO * r.baseline_share else "shrunk"


_ORDER = {"new": 0, "vanished": 1, "grown": 2, "shrunk": 3, "stable": 4}


def regions(X: np.ndarray, n: int, *, n_regions: int | None = None, alpha: float = 0.05,
            seed: int = 42) -> list[Region]:
    """Regions of the pooled rows ``X`` (baseline rows first, ``n`` of them), ordered:
    new, vanished, grown, shrunk, stable; within a kind the biggest change first."""
    N = X.shape[0]
    m = N - n
    if n < 1 or m < 1:
        raise SpecError("embedding_drift_explain needs rows on both sides.")
    k = n_regions or default_regions(N)
    labels = partition(X, k, seed)
    ids, labels = np.unique(labels, return_inverse=True)
    side = np.r_[np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)]
    cb = np.bincount(labels[side == 0], minlength=ids.size)
    cc = np.bincount(labels[side == 1], minlength=ids.size)
    p = fisher_p_values(cb, cc, n, m)
    adj = benjamini_hochberg(p)
    ci = delta_intervals(cb, cc, np.random.default_rng([seed, 3]))
    out = []
    for r in range(ids.size):
        reg = Region(cells=np.flatnonzero(labels == r), n_baseline=int(cb[r]),
                     n_current=int(cc[r]), baseline_share=cb[r] / n, current_share=cc[r] / m,
                     p_value=float(p[r]), p_value_adjusted=float(adj[r]),
                     delta_ci=(float(ci[r, 0]), float(ci[r, 1])), current_total=m)
        reg.kind = classify(reg, alpha)
        out.append(reg)
    out.sort(key=lambda g: (_ORDER[g.kind], -abs(g.excess), g.p_value))
    return out


def characteristic_rows(reg: Region, n: int) -> np.ndarray:
    """Pooled rows that describe a region: current ones for new/grown, baseline ones for
    vanished/shrunk, all for stable."""
    rows = reg.cells
    if reg.kind in ("new", "grown"):
        return rows[rows >= n]
    if reg.kind in ("vanished", "shrunk"):
        return rows[rows < n]
    return rows


def examples(X: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows nearest the centre (mean direction) of ``rows``."""
    if rows.size == 0 or count <= 0:
        return rows[:0]
    centre = X[rows].mean(axis=0)
    sims = X[rows] @ centre
    return rows[np.argsort(-sims, kind="stable")[:count]]


def describe(regs: list[Region], X: np.ndarray, n: int, ids: list[str], texts: list | None,
             n_examples: int, seed: int) -> None:
    """Fill keywords, labels and examples of every region in place."""
    from ..core.keywords import ctfidf_keywords, offline_label

    rng = np.random.default_rng([seed, 5])
    chosen = [characteristic_rows(g, n) for g in regs]
    for g, rows in zip(regs, chosen):
        ex = examples(X, rows, n_examples)
        g.example_ids = [ids[i] for i in ex]
        if texts is not None:
            g.examples = [_shorten(" ".join(str(texts[i] or "").split()), 200) for i in ex]
    if texts is None:
        return
    docs = []
    for rows in chosen:
        if rows.size > MAX_DOCS:
            rows = np.sort(rng.choice(rows, size=MAX_DOCS, replace=False))
        docs.append([texts[i] for i in rows if texts[i]])
    taken: set[str] = set()
    for g, kws in zip(regs, ctfidf_keywords(docs, 10)):
        g.keywords = kws
        g.label = offline_label(kws, taken=taken) or None
        if g.label:
            taken.add(g.label)


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most].rstrip() + "\u2026"


def as_rows(regs: list[Region], X: np.ndarray | None = None, n: int = 0
            ) -> list[dict[str, Any]]:
    """The SQL rows; with ``X`` (the pooled rows) each also gets ``centre``, the mean
    of its characteristic rows (the report places names on its plot with it)."""
    out = []
    for i, g in enumerate(regs, start=1):
        out.append({"region_id": i, "kind": g.kind, "label": g.label, "keywords": g.keywords,
                    "n_baseline": g.n_baseline, "n_current": g.n_current,
                    "baseline_share": float(g.baseline_share),
                    "current_share": float(g.current_share), "delta": float(g.delta),
                    "delta_ci_low": g.delta_ci[0], "delta_ci_high": g.delta_ci[1],
                    "p_value": g.p_value, "p_value_adjusted": g.p_value_adjusted,
                    "example_ids": g.example_ids, "examples": g.examples})
        if X is not None:
            rows = characteristic_rows(g, n)
            out[-1]["centre"] = X[rows if rows.size else g.cells].mean(axis=0)
    return out
