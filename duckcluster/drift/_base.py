"""The drift method record, its result, and helpers every method module shares.

Kept apart from ``drift/__init__.py`` so that method modules can import it
without a circular import through the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._params import Param
from ..core.projection import Scores, fit_scores

#: Significance level of every test unless the caller passes another one.
DEFAULT_ALPHA = 0.05

#: Permutations of every permutation test unless ``n_permutations`` says otherwise.
DEFAULT_PERMUTATIONS = 500

#: Most baseline rows a projection or k-means reference is fitted on.
FIT_MAX_ROWS = 5_000


@dataclass(frozen=True)
class Reference:
    """Centroids both sides are assigned to (the ``cluster`` method).

    ``cluster_ids`` int64 of shape (k,), ``centroids`` float32 of shape (k, d),
    L2-normalized; ``source`` says where they came from (a run id); ``threshold`` is
    the run's own assignment threshold (``assign_cluster``'s default), when known.
    """

    cluster_ids: np.ndarray
    centroids: np.ndarray
    source: str
    threshold: float | None = None


@dataclass(frozen=True)
class Context:
    """What a method gets besides the two samples and its own params."""

    alpha: float = DEFAULT_ALPHA
    seed: int = 42
    reference: Reference | None = None
    #: (n_b + n_c,) block codes of the pooled rows (baseline first) when whole
    #: groups are relabelled (``group_by``); see :func:`blocks`
    groups: np.ndarray | None = None


@dataclass
class DriftResult:
    """The outcome of one method on one baseline/current pair.

    ``statistic`` is the method's test statistic (larger = more drift);
    ``p_value`` the probability of a statistic at least this large when both
    sides come from one distribution (None if the method has none);
    ``drift_detected`` is ``p_value < threshold`` with ``threshold`` = alpha.
    ``details`` holds method-specific figures (JSON-serializable).
    """

    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drift_detected: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {"method": self.method, "statistic": _num(self.statistic),
                "p_value": _num(self.p_value), "threshold": _num(self.threshold),
                "drift_detected": bool(self.drift_detected), "details": self.details}


Compute = Callable[[np.ndarray, np.ndarray, dict, Context], DriftResult]


@dataclass(frozen=True)
class DriftMethod:
    """One drift method: its parameters as data and a pure compute function.

    ``compute(B, C, params, ctx)`` takes float32 rows of shape (n_b, d) and
    (n_c, d) (L2-normalized unless the caller chose otherwise) and validated
    params and returns a :class:`DriftResult`. ``min_rows`` is the fewest rows
    each side needs. ``doc`` is one paragraph for users, including what the
    method cannot see.
    """

    name: str
    params: Mapping[str, Param]
    compute: Compute
    min_rows: int
    doc: str
    group_by: bool = False  # can relabel whole groups (Context.groups)
    #: what ``statistic`` measures and its scale, one line (docs/operations.md lists it:
    #: a trigger's ``when_drift_above`` compares this number)
    statistic: str = ""

    def rows_wanted(self, params: Mapping[str, Any]) -> tuple[int | None, int | None]:
        """(baseline, current) rows this method can use with ``params`` (None: all);
        more are sampled away."""
        if params.get("max_samples") is None:
            return None, None
        n = int(params["max_samples"])
        return n, n


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


# -- shared params -------------------------------------------------------------------

def sample_param(default: int | None = None) -> Param:
    return Param(int, default, low=10, nullable=True,
                 doc="rows per side the test uses (NULL: every row); larger sides are "
                     "sampled (seeded)")


PERMUTATIONS = Param(int, DEFAULT_PERMUTATIONS, low=19, high=100_000,
                     doc="permutations of the permutation p-value (p >= 1/(n+1))")


# -- helpers ------------------------------------------------------------------------

def subsample(X: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """``X`` itself, or a seeded sample of ``max_rows`` of its rows in their order."""
    if max_rows is None or X.shape[0] <= max_rows:
        return X
    idx = np.sort(rng.choice(X.shape[0], size=max_rows, replace=False))
    return X[idx]


def sample_details(B0: np.ndarray, C0: np.ndarray, B: np.ndarray, C: np.ndarray,
                   max_samples: int | None) -> dict[str, Any]:
    """What the test used, for ``details``: sizes and whether a side was sampled."""
    return {"n_tested_baseline": int(B.shape[0]), "n_tested_current": int(C.shape[0]),
            "sampled": bool(B.shape[0] < B0.shape[0] or C.shape[0] < C0.shape[0]),
            "max_samples": None if max_samples is None else int(max_samples)}


def check_groups_unsampled(name: str, ctx: "Context", B0, C0, B, C) -> None:
    """group_by relabels the rows given: a method must not sample them away first."""
    if ctx.groups is not None and (B.shape[0] < B0.shape[0] or C.shape[0] < C0.shape[0]):
        from .._errors import SpecError

        raise SpecError(f"group_by tests every row: leave the max_samples of {name} NULL.")


def permutation_blocks(n: int, m: int, n_permutations: int, rng: np.random.Generator,
                       groups: np.ndarray | None = None, block: int = 64):
    """The columns of :func:`permutation_labels` in blocks of at most ``block``:
    (N, b) float32 C-contiguous arrays, the first block starting with the real
    labels. The same ``rng`` gives the same columns as :func:`permutation_labels`."""
    N = n + m
    total = n_permutations + 1
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        n_blocks = int(groups.max()) + 1
        base = np.zeros(n_blocks, dtype=np.float32)
        base[np.unique(groups[:n])] = 1.0
    for start in range(0, total, block):
        b = min(block, total - start)
        if groups is None:
            Zt = np.zeros((b, N), dtype=np.float32)
            Zt[:, :n] = 1.0
        else:
            Zt = np.broadcast_to(base, (b, base.size)).copy()
        first = 1 if start == 0 else 0  # column 0 keeps the real labels
        rng.permuted(Zt[first:], axis=1, out=Zt[first:])
        yield np.ascontiguousarray((Zt if groups is None else Zt[:, groups]).T)


def permutation_labels(n: int, m: int, n_permutations: int, rng: np.random.Generator,
                       groups: np.ndarray | None = None) -> np.ndarray:
    """(N, P + 1) float32 0/1 matrix: column 0 marks the real baseline (rows
    0..n-1), the others random relabelings.

    Without ``groups`` each relabeling picks n rows. With ``groups`` ((N,) block
    codes, each block inside one side: see :func:`blocks`) whole blocks are
    relabelled: each column picks as many blocks for the baseline as it really
    has, so rows that move together stay together and a column's baseline size
    can differ from n (every statistic here takes its sizes per column).
    """
    return np.concatenate(list(permutation_blocks(n, m, n_permutations, rng, groups)), axis=1)


def blocks(baseline_groups: np.ndarray, current_groups: np.ndarray) -> np.ndarray:
    """(N,) block codes of the pooled rows (baseline first): one block per (side, group).

    A group value found on both sides makes two blocks, one per side: a
    relabelling moves whole blocks between the sides.
    """
    b = np.asarray(baseline_groups)
    c = np.asarray(current_groups)
    side = np.r_[np.zeros(b.size, dtype=np.int64), np.ones(c.size, dtype=np.int64)]
    _, codes = np.unique(np.concatenate([b, c]).astype(str), return_inverse=True)
    _, out = np.unique(codes.astype(np.int64) * 2 + side, return_inverse=True)
    return out.astype(np.int64)


def permutation_p_value(stats: np.ndarray) -> float:
    """p-value from permutation statistics whose first entry is the observed one.

    ``(1 + #{perm >= observed}) / (1 + P)``: exact for any statistic, never 0.
    A tiny relative tolerance keeps float round-off from splitting exact ties.
    """
    stats = np.asarray(stats, dtype=np.float64)
    obs = stats[0]
    tol = 1e-9 * max(abs(obs), 1e-300)
    return float((1 + np.sum(stats[1:] >= obs - tol)) / stats.size)


def decide(p_value: float | None, alpha: float) -> bool:
    return p_value is not None and p_value < alpha


# -- the pooled projection of energy, wasserstein and kl ---------------------------------
#
# A projection fitted on both sides pooled: their first principal components.
#
# ``energy``, ``wasserstein`` and ``kl`` compare the two sides on the first
# principal components (PC1 and a few more), standardized by their spread so the
# components weigh alike.
#
# Why a pooled sample: a PCA fitted on rows it then tests overstates their spread
# along the top components (it picked those directions for them). Fitting on part
# of the baseline and testing the rest against the current side is exact only when
# the current side holds none of those rows: on the same table twice, overlapping
# windows or a current side that contains the baseline it flagged drift on
# identical data (issue 14). So the projection is fitted on a uniform seeded sample
# of the pooled rows (``fit_fraction``, at most :data:`FIT_MAX_ROWS`), chosen
# without looking at the sides, and every row of both sides is tested: which rows
# are in the sample is independent of the side labels, the projection is a
# function of the pool, and under "no drift" every relabelling of the pooled rows
# stays as likely as the real one, so the permutation p-value is exact. The same
# rows and seed always give the same projection.

PROJECTION_PARAMS = {
    "n_components": Param(int, 5, low=1, high=256,
                          doc="principal components of the pooled rows to compare (PC1 first)"),
    "fit_fraction": Param(float, 0.5, low=0.1, high=0.9,
                          doc="share of the pooled rows of both sides the projection is "
                              "fitted on (at most 5,000); every row is tested"),
}


def pooled_sample(B: np.ndarray, C: np.ndarray, fit_fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A uniform seeded sample of the pooled rows (at most :data:`FIT_MAX_ROWS`), in a
    shuffled order: neither which rows are picked nor their order depends on the sides."""
    n = B.shape[0] + C.shape[0]
    n_fit = min(max(2, round(n * fit_fraction)), FIT_MAX_ROWS, n)
    pick = rng.choice(n, size=n_fit, replace=False)
    nb = B.shape[0]
    out = np.empty((n_fit, B.shape[1]), dtype=np.float64)
    in_b = pick < nb
    out[in_b] = B[pick[in_b]]
    out[~in_b] = C[pick[~in_b] - nb]
    return out


@dataclass(frozen=True)
class Projected:
    """Both sides on the pooled components, plus the rows the projection was fitted on."""

    baseline: np.ndarray  # (n_b, k) tested baseline rows
    current: np.ndarray  # (n_c, k)
    fit: np.ndarray  # (n_fit, k) the fitting rows (a seeded sample of the pool)
    projection: Scores
    details: dict


def projected(B: np.ndarray, C: np.ndarray, params: dict, max_samples: int | None,
              rng: np.random.Generator) -> Projected:
    """Sample each side to ``max_samples`` rows (if given); fit on a pooled sample of them."""
    Bs, Cs = subsample(B, max_samples, rng), subsample(C, max_samples, rng)
    fit = pooled_sample(Bs, Cs, params["fit_fraction"], rng)
    proj = fit_scores(fit, params["n_components"])
    details = {**sample_details(B, C, Bs, Cs, max_samples),
               **projection_details(proj, int(fit.shape[0]))}
    return Projected(proj(Bs), proj(Cs), proj(fit), proj, details)


def projection_details(proj: Scores, n_fit: int) -> dict:
    return {"projection": "PCA of a seeded sample of both sides pooled",
            "n_components": int(proj.components.shape[0]),
            "projection_fit_rows": n_fit,
            "explained_variance_ratio": [round(float(r), 6) for r in proj.explained_variance_ratio]}
