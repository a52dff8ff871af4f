"""``knn``: nearest neighbours of the pooled rows; what is new, what vanished, what moved.

The default method. Every row of both sides gets its nearest other rows in the
pooled set (exact up to 12,000 rows, an approximate search above it: see
``details``), the pooled rows are also split into ``n_regions`` (16) regions by a
seeded k-means, and four statistics are read off that graph, those regions and
the side labels:

- **new**: current rows whose ``k`` (20) nearest neighbours are (nearly) all
  current: content with no baseline counterpart. "Nearly all" is at least the
  count a random labelling reaches with probability 0.001 (18 of 20 when the
  sides are the same size);
- **vanished**: the same for baseline rows: content the current side lost;
- **regions**: the chi-square statistic of the two sides' counts over the
  regions: the mix of familiar content moved (or a diffuse kind of content
  grew that no row's neighbours reveal);
- **global**: the squared distance between the side means on the pooled rows'
  first ``n_components`` (20) principal components, each scaled to unit
  variance (Hotelling's statistic on those components): a shift of everything.

All four are computed for the real labels and for ``n_permutations``
relabellings of the pooled rows (whole groups with ``group_by``), on one graph
and one set of regions built without the labels, so each has an exact
permutation p-value. The p-value of the method is that of the smallest of the
four p-values, calibrated on the same relabellings (a min-p combination, exact
too); ``details`` lists each component's p-value and which one decided. Every
row is tested: the graph and the four statistics are linear in the rows once
the graph exists. The statistic is -log10 of the smallest component p-value
(larger = more drift). ``new_content_share`` estimates the share of current rows
that sit among current-only neighbours beyond chance (observed minus the
relabellings' mean). The components were chosen on real sentence embeddings
(``bench/drift_power.py``: Debian package descriptions, 1,200 rows per side, a
held-out Section as the new topic): 20 neighbours and the regions caught a 5 %
new topic in 65-70 % of replicates against 50-55 % with 10 neighbours and a
same-side neighbour share, at the same false-alarm rate.
"""

from __future__ import annotations

import numpy as np

from .._params import Param
from ._base import (
    PERMUTATIONS,
    Context,
    check_groups_unsampled,
    DriftMethod,
    DriftResult,
    decide,
    permutation_blocks,
    permutation_p_value,
    sample_details,
    sample_param,
    subsample,
)
from ._graph import pooled_graph

PARAMS = {
    "max_samples": sample_param(),
    "k": Param(int, 20, low=2, high=50,
               doc="neighbours whose sides decide whether a row is new or vanished content"),
    "n_regions": Param(int, 16, low=2, high=256,
                       doc="k-means regions of the pooled rows whose counts the regions "
                           "component compares"),
    "n_components": Param(int, 20, low=1, high=256,
                          doc="principal components of the global component"),
    "n_permutations": PERMUTATIONS,
}

COMPONENTS = ("new", "vanished", "regions", "global")
#: Chance, under a random labelling, that a row passes the "new" or "vanished" count.
NOVELTY_TAIL = 0.001
_PERM_BLOCK = 64


def novelty_threshold(k: int, share: float) -> int:
    """Smallest count t of same-side neighbours out of ``k`` with
    P(Binomial(k, share) >= t) <= :data:`NOVELTY_TAIL` (at most ``k``)."""
    from scipy.stats import binom

    for t in range(k + 1):
        if binom.sf(t - 1, k, share) <= NOVELTY_TAIL:
            return t
    return k


def column_counts(words: np.ndarray) -> np.ndarray:
    """(64,) how many of the (N,) uint64 ``words`` have each bit set."""
    if words.size == 0:
        return np.zeros(64, dtype=np.int64)
    bits = np.unpackbits(words.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return bits.sum(axis=0, dtype=np.int64)


class BitCounter:
    """Per row and per bit, how many of the added (N,) uint64 words had the bit set,
    held as binary digit planes (a bit-sliced adder): 64 relabellings at once."""

    def __init__(self, n: int, most: int):
        self.planes = [np.zeros(n, dtype=np.uint64) for _ in range(max(1, int(most).bit_length()))]

    def add(self, w: np.ndarray) -> None:
        carry = w
        for q, plane in enumerate(self.planes):
            self.planes[q] = plane ^ carry
            carry = plane & carry

    def at_least(self, t: int) -> np.ndarray:
        """Words whose bit j says: count of bit j >= t."""
        ones = np.uint64(0xFFFFFFFFFFFFFFFF)
        ge = np.zeros_like(self.planes[0])
        eq = np.full_like(self.planes[0], ones)
        for q in range(len(self.planes) - 1, -1, -1):
            if (t >> q) & 1:
                eq &= self.planes[q]
            else:
                ge |= eq & self.planes[q]
                eq &= ~self.planes[q]
        if t >= 1 << len(self.planes):
            return np.zeros_like(ge)
        return ge | eq

    def sum_where(self, mask: np.ndarray) -> np.ndarray:
        """(64,) per bit, the sum of the counts over rows whose ``mask`` bit is set."""
        return sum((1 << q) * column_counts(plane & mask) for q, plane in enumerate(self.planes))


def whitened_components(X: np.ndarray, r: int, rng: np.random.Generator,
                        axes=None) -> np.ndarray:
    """(N, r) scores on the first ``r`` principal components of the pooled rows,
    each scaled to unit variance (fitted on a seeded sample of at most 20,000 rows,
    or ``axes`` already fitted so)."""
    from ._graph import principal_axes

    r = max(1, min(r, X.shape[1], X.shape[0] - 1))
    if axes is None or axes.vectors.shape[1] < r:
        axes = principal_axes(X, r, rng)
    return axes.project(X, r, scale=True)


def pooled_regions(X: np.ndarray, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) region of every pooled row: seeded k-means (fitted on a uniform sample of the
    pooled rows, labels unseen), each row assigned to its nearest centre."""
    from ._graph import _assign, _kmeans

    r = max(1, min(n_regions, X.shape[0]))
    centres = _kmeans(X, r, rng, iters=10)
    return _assign(X, centres)


class Statistics:
    """The four component statistics for any block of labelling columns."""

    def __init__(self, X: np.ndarray, n: int, p: dict, rng: np.random.Generator,
                 reorder: bool = True):
        N = X.shape[0]
        m = N - n
        from ._graph import EXACT_MAX_ROWS, REDUCED_DIMS, principal_axes

        graph_seed = int(rng.integers(2**31 - 1))
        # one set of principal axes for the search (above EXACT_MAX_ROWS) and the global
        # component
        dims = max(p["n_components"], REDUCED_DIMS if N > EXACT_MAX_ROWS else 0)
        axes = principal_axes(X, dims, rng)
        self.graph = pooled_graph(X, min(p["k"], N - 1), graph_seed, axes)
        self.k = min(p["k"], self.graph.k)
        # the relabellings are exchangeable, so the rows can be counted in any order: in
        # the search's cell order a row's neighbours are mostly near it in memory (the
        # neighbour gathers of 2M rows took half the time of the statistics in caller order)
        order = self.graph.order if reorder else None
        if order is None:
            order = np.arange(N)
            self.idx = self.graph.idx
        else:
            pos = np.empty(N, dtype=np.int32)
            pos[order] = np.arange(N, dtype=np.int32)
            self.idx = pos[self.graph.idx[order]]
        #: the real labelling in this order: 1 = current
        self.real = (order >= n).astype(np.float32)
        # thresholds from the real side sizes: fixed numbers, the same for every labelling
        self.t_new = novelty_threshold(self.k, m / max(N - 1, 1))
        self.t_gone = novelty_threshold(self.k, n / max(N - 1, 1))
        region = pooled_regions(X, p["n_regions"], rng)[order]
        self.n_regions = int(region.max()) + 1
        self.region_rows = np.bincount(region, minlength=self.n_regions).astype(np.float64)
        self.onehot = np.zeros((self.n_regions, N), dtype=np.float32)
        self.onehot[region, np.arange(N)] = 1.0
        self.W = whitened_components(X, p["n_components"], rng, axes)[order]
        self.W_total = self.W.sum(axis=0, dtype=np.float64)
        self.N = N

    def __call__(self, Zt: np.ndarray) -> np.ndarray:
        """(4, b) statistics for labelling rows ``Zt`` (b <= 64, N) float32, 1 = current."""
        b = Zt.shape[0]
        N = self.N
        m = Zt.sum(axis=1, dtype=np.float64)
        n = N - m
        cur = pack_rows(Zt)  # bit j: the row is current in labelling j
        base = ~cur
        idx = self.idx
        counter = BitCounter(N, self.k)
        for j in range(self.k):
            counter.add(cur[idx[:, j]])  # bit j of row i: is its next neighbour current?
        new = column_counts(cur & counter.at_least(self.t_new))[:b]
        gone = column_counts(base & ~counter.at_least(self.k - self.t_gone + 1))[:b]
        cc = (self.onehot @ Zt.T).astype(np.float64)  # (R, b) current rows per region
        expected = self.region_rows[:, None] * (m / N)[None, :]
        regions = ((cc - expected) ** 2 / np.maximum(expected, 1e-12)).sum(axis=0) \
            + ((cc - expected) ** 2 / np.maximum(self.region_rows[:, None] - expected,
                                                  1e-12)).sum(axis=0)
        sc = (Zt @ self.W).astype(np.float64)  # (b, r) current sums
        diff = sc / m[:, None] - (self.W_total[None, :] - sc) / n[:, None]
        glob = np.einsum("ij,ij->i", diff, diff)
        return np.stack([new.astype(np.float64), gone.astype(np.float64), regions, glob])


def pack_rows(Zt: np.ndarray) -> np.ndarray:
    """(b <= 64, N) 0/1 rows -> (N,) uint64 words, bit j = row j."""
    b, N = Zt.shape
    packed = np.zeros((8, N), dtype=np.uint8)
    packed[:(b + 7) // 8] = np.packbits(Zt > 0.5, axis=0, bitorder="little")
    return np.ascontiguousarray(packed.T).view(np.uint64).ravel()


def current_blocks(n: int, m: int, n_permutations: int, rng: np.random.Generator,
                   groups: np.ndarray | None = None, block: int = _PERM_BLOCK,
                   real: np.ndarray | None = None):
    """The labellings of the test in blocks of at most ``block`` rows: (b, N) float32,
    1 = current; the first row of the first block is the real labelling (rows n.. are
    current, or ``real``), each other row a uniformly drawn set of ``m`` current rows
    (with ``groups``, :func:`permutation_blocks`' whole-group relabellings)."""
    if groups is not None:
        for Zb in permutation_blocks(n, m, n_permutations, rng, groups, block):
            yield np.ascontiguousarray(1.0 - Zb.T)
        return
    from ._relabel import fill_current

    N = n + m
    total = n_permutations + 1
    for start in range(0, total, block):
        b = min(block, total - start)
        Zt = np.zeros((b, N), dtype=np.float32)
        first = 0
        if start == 0:
            if real is None:
                Zt[0, n:] = 1.0
            else:
                Zt[0] = real
            first = 1
        fill_current(Zt, first, m, rng)
        yield Zt


def rank_p_values(S: np.ndarray) -> np.ndarray:
    """(c, P + 1) statistics -> each column's permutation p-value per row:
    #{columns with a statistic at least as large} / (P + 1)."""
    out = np.empty(S.shape, dtype=np.float64)
    for r in range(S.shape[0]):
        s = S[r]
        tol = 1e-9 * np.maximum(np.abs(s), 1e-300)
        srt = np.sort(s)
        out[r] = (s.size - np.searchsorted(srt, s - tol, side="left")) / s.size
    return out


def compute(B: np.ndarray, C: np.ndarray, p: dict, ctx: Context) -> DriftResult:
    rng = np.random.default_rng(ctx.seed)
    Bs, Cs = subsample(B, p["max_samples"], rng), subsample(C, p["max_samples"], rng)
    check_groups_unsampled("knn", ctx, B, C, Bs, Cs)
    n, m = Bs.shape[0], Cs.shape[0]
    X = np.concatenate([Bs, Cs]).astype(np.float32, copy=False)
    stats = Statistics(X, n, p, rng, reorder=ctx.groups is None)
    S = np.concatenate([stats(Zt) for Zt in current_blocks(
        n, m, p["n_permutations"], rng, ctx.groups, real=stats.real)], axis=1)
    ranks = rank_p_values(S)
    component_p = ranks[:, 0]
    combined = -ranks.min(axis=0)
    p_value = permutation_p_value(combined)
    decider = COMPONENTS[int(np.argmin(component_p))]
    excess = float(S[0, 0] - S[0, 1:].mean())
    details = {
        **sample_details(B, C, Bs, Cs, p["max_samples"]), **stats.graph.details,
        "k": stats.k, "n_regions": stats.n_regions,
        "n_components": int(stats.W.shape[1]), "n_permutations": p["n_permutations"],
        "component_p_values": {c: float(v) for c, v in zip(COMPONENTS, component_p)},
        "strongest_component": decider,
        "component_statistics": {c: float(v) for c, v in zip(COMPONENTS, S[:, 0])},
        "new_threshold": f"{stats.t_new} of {stats.k} neighbours current",
        "vanished_threshold": f"{stats.t_gone} of {stats.k} neighbours baseline",
        "new_content_share": max(0.0, excess) / m,
        "combination": "min-p over the four components, calibrated on the same relabellings",
    }
    if ctx.groups is not None:
        details["permutation_unit"] = "group"
    return DriftResult("knn", float(-np.log10(component_p.min())), p_value, ctx.alpha,
                       decide(p_value, ctx.alpha), details)


KNN = DriftMethod(name="knn", params=PARAMS, compute=compute, min_rows=5,
                  doc=__doc__.split("\n\n", 1)[1], group_by=True,
                  statistic=("-log10 of the smallest of its four component p-values: a "
                             "significance, not a size (1.3 = p 0.05, 2 = p 0.01; at most "
                             "log10(n_permutations + 1), 2.7 with the default 500 "
                             "permutations)"))
