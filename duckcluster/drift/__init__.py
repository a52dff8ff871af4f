"""Registry of drift methods: one module per method, one entry per method.

Every method compares a baseline and a current sample of embeddings (float32
arrays, rows L2-normalized by the caller unless asked otherwise) and returns a
:class:`DriftResult`: a statistic (larger = more drift), a p-value (the chance of
a statistic at least this large if both sides came from one distribution) and a
decision ``p_value < alpha`` (alpha 0.05 by default). Every p-value is exact or
a seeded permutation p-value, so on data without drift a method flags drift in
about ``alpha`` of the cases. Nothing here is O(n^2) in the input size: methods
that need pairwise work run on seeded samples of at most ``max_samples`` rows
per side and say so in ``details``. A new method is one module plus one entry in
:data:`DRIFT_METHODS`.

>>> rng = np.random.default_rng(0)
>>> B, C = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 0.5
>>> r = run_method("mean_shift", B, C, {"n_permutations": 99})
>>> r.drift_detected, r.p_value
(True, 0.01)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._errors import DataError, SpecError, unknown_name
from .._params import validate_params
from ._base import DEFAULT_ALPHA, Context, DriftMethod, DriftResult, Reference
from .classifier import CLASSIFIER
from .cluster import CLUSTER, js_divergence, share_test
from .energy import ENERGY
from .kl import KL
from .knn import KNN
from .mean_shift import MEAN_SHIFT
from .mmd import MMD
from .wasserstein import WASSERSTEIN

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_METHOD",
    "DRIFT_METHODS",
    "Context",
    "DriftMethod",
    "DriftResult",
    "Reference",
    "get_method",
    "js_divergence",
    "run_method",
    "share_test",
    "validate_method_params",
]

DRIFT_METHODS: dict[str, DriftMethod] = {
    m.name: m for m in (KNN, MMD, ENERGY, WASSERSTEIN, KL, CLASSIFIER, CLUSTER, MEAN_SHIFT)
}

#: What ``embedding_drift`` runs when no method is named.
DEFAULT_METHOD = "knn"


def get_method(name: str) -> DriftMethod:
    """Return the registered method ``name`` or raise UnknownNameError listing them."""
    try:
        return DRIFT_METHODS[name]
    except (KeyError, TypeError):
        raise unknown_name("drift method", name, DRIFT_METHODS) from None


def validate_method_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` for method ``name``; return them with defaults filled."""
    method = get_method(name)
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(f"The params of drift method {name} must be a mapping of parameter "
                        f"names to values (a STRUCT or a JSON object). Got {params!r} instead.")
    return validate_params(f"drift method {name}", method.params, params)


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise SpecError(f"alpha must be a float in the range (0, 1), the significance level "
                        f"of the drift decision. Got {alpha!r} instead.")
    return float(alpha)


def run_method(name: str, B: np.ndarray, C: np.ndarray, params: Mapping[str, Any] | None = None,
               *, alpha: float = DEFAULT_ALPHA, seed: int = 42,
               reference: Reference | None = None,
               groups: np.ndarray | None = None) -> DriftResult:
    """Validate, check the data, and run one method on baseline ``B`` and current ``C``.

    ``B`` (n_b, d) and ``C`` (n_c, d) float arrays; ``params`` the method's own
    (see ``DRIFT_METHODS[name].params``); ``reference`` centroids for ``cluster``;
    ``groups`` (n_b + n_c,) block codes (:func:`duckcluster.drift._base.blocks`)
    to relabel whole groups instead of rows.
    """
    method = get_method(name)
    p = validate_method_params(name, params)
    alpha = check_alpha(alpha)
    B = np.asarray(B, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    for side, X in (("baseline", B), ("current", C)):
        if X.ndim != 2:
            raise DataError(f"The {side} embeddings must be a 2-D array (rows x dimensions). "
                            f"Got shape {X.shape}.")
        if X.shape[0] < method.min_rows:
            raise DataError(f"Drift method {name} needs at least {method.min_rows} rows on each "
                            f"side; the {side} has {X.shape[0]}. Widen the {side} selection "
                            "(a longer window, a looser WHERE).")
        if not np.isfinite(X).all():
            raise DataError(f"The {side} embeddings contain NaN or Inf; clean or filter those rows.")
    if B.shape[1] != C.shape[1]:
        raise DataError(f"The baseline embeddings have {B.shape[1]} dimensions but the current "
                        f"ones have {C.shape[1]}. Compare embeddings of the same model and column.")
    if groups is not None:
        if not method.group_by:
            able = ", ".join(m.name for m in DRIFT_METHODS.values() if m.group_by)
            raise SpecError(f"Drift method {name} cannot relabel whole groups (group_by); "
                            f"methods that can: {able}.")
        groups = np.asarray(groups)
        if groups.shape != (B.shape[0] + C.shape[0],):
            raise DataError(f"group_by needs one group per row: {B.shape[0] + C.shape[0]} "
                            f"rows but {groups.size} groups.")
    from ..core.threads import for_machine, limited

    # BLAS threads only where other processes leave cores free: on the busy 2-core machine
    # the knn graph of 50k + 50k rows took 26 s of CPU with two threads, 6.5 s with one
    with limited(for_machine()):
        return method.compute(B, C, p, Context(alpha=alpha, seed=int(seed),
                                               reference=reference, groups=groups))
