"""Registry of clustering algorithms: one module per family, one entry per algorithm.

Each entry is an :class:`Algorithm` whose parameters are declared as data
(:class:`duckcluster._params.Param`). A new algorithm is one module plus one
line in :data:`ALGORITHMS`.

>>> params = validate_algorithm_params("kmeans", {"n_clusters": 3})
>>> params["n_clusters"], params["max_iter"]
(3, 300)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._errors import SpecError, unknown_name
from ..._params import validate_params
from ._base import Algorithm, Fitted, relabel_by_size
from .agglomerative import AGGLOMERATIVE
from .auto import AUTO
from .density import DBSCAN, HDBSCAN, OPTICS
from .kmeans import KMEANS
from .mean_shift import MEAN_SHIFT
from .mixture import GAUSSIAN_MIXTURE
from .spectral import SPECTRAL

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Fitted",
    "get_algorithm",
    "relabel_by_size",
    "validate_algorithm_params",
]

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        AUTO,
        KMEANS,
        DBSCAN,
        HDBSCAN,
        AGGLOMERATIVE,
        SPECTRAL,
        GAUSSIAN_MIXTURE,
        MEAN_SHIFT,
        OPTICS,
    )
}


def get_algorithm(name: str) -> Algorithm:
    """Return the registered algorithm ``name`` or raise UnknownNameError listing them."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise unknown_name("algorithm", name, ALGORITHMS) from None


def validate_algorithm_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` for algorithm ``name``; return them with defaults filled.

    None values count as "not given". Raises UnknownNameError for an unknown
    algorithm and SpecError for an unknown key (with the closest valid one), a
    wrong type, a value out of range, or an invalid combination.
    """
    alg = get_algorithm(name)
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(
            f"The params of {name} must be a mapping of parameter names to values "
            f"(a STRUCT or a JSON object). Got {params!r} instead."
        )
    validated = validate_params(name, alg.params, params)
    if alg.check is not None:
        validated = alg.check(validated, dict(params or {}))
    return validated
