"""Parameter sweeps: fit a stored definition at every point of a grid, report quality.

The grid is the Cartesian product of lists of algorithm params
(``{'n_clusters': [4, 8, 16]}``) or an explicit list of param sets
(``[{'n_clusters': 4}, {'n_clusters': 8, 'max_iter': 50}]``); each point
overrides the definition's params. Every point is validated before any work
starts. The source is read once; each point is one task of the executor
(``'local'``: in this process; ``'ray'``: one Ray task per point, the rows
shared through the object store), and runs the same pipeline as
``cluster_execute`` (preprocessing, sample_size, the algorithm, quality metrics;
no sub-clustering and no plot coordinates, which quality does not use). Nothing
is written to the database.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _json
from .._errors import SpecError
from ..core.backend import check_address, check_backend, get_executor
from ..core.spec import ClusterSpec, check_rows

MAX_POINTS = 1000

ROW_FIELDS = ("point", "params", "n_clusters", "noise_ratio", "silhouette_score",
              "mean_cosine_to_centroid", "cluster_size_entropy", "davies_bouldin",
              "calinski_harabasz", "should_recluster", "reasons", "seconds")


def _decode(value: Any) -> Any:
    """A STRUCT/LIST arrives as JSON text, a JSON string argument as JSON-quoted text."""
    for _ in range(2):
        if not isinstance(value, str):
            return value
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"grid must be a STRUCT of lists like {{'n_clusters': [4, 8]}}, a "
                            f"list of param STRUCTs, or the same as JSON. Could not parse "
                            f"{text!r}: {exc.msg}.") from None
    return value


def grid_points(grid: Any) -> list[dict[str, Any]]:
    """The param sets of ``grid``, in order (the last key varies fastest)."""
    g = _decode(grid)
    if isinstance(g, list) and g and all(isinstance(p, Mapping) for p in g):
        points = [{k: v for k, v in p.items() if v is not None} for p in g]
    elif isinstance(g, Mapping) and g:
        keys = list(g)
        lists = []
        for k in keys:
            v = g[k]
            vals = v if isinstance(v, list) else [v]
            if not vals:
                raise SpecError(f"grid key {k!r} has an empty list; give it at least one value.")
            lists.append(vals)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    else:
        raise SpecError("grid must be a STRUCT of lists like {'n_clusters': [4, 8, 16]} or a "
                        f"non-empty list of param STRUCTs. Got {grid!r}.")
    if len(points) > MAX_POINTS:
        raise SpecError(f"The grid has {len(points):,} points; at most {MAX_POINTS} are allowed. "
                        "Sweep fewer values, or in several calls.")
    return points


def point_specs(spec: ClusterSpec, points: list[dict[str, Any]]) -> list[ClusterSpec]:
    """One validated spec per point (the definition's params overridden)."""
    out = []
    for i, p in enumerate(points):
        try:
            out.append(spec.replace(params={**dict(spec.params), **p}, hierarchical=False))
        except SpecError as exc:
            raise type(exc)(f"grid point {i} {_json.dumps(p, sort_keys=False)}: {exc}") from None
    return out


def fit_point(spec_json: str, X: np.ndarray) -> dict[str, Any]:
    """One grid point: the quality row of fitting ``X`` (a task of its own)."""
    from ..core.fit import fit

    spec = ClusterSpec.from_json(spec_json)
    t0 = time.perf_counter()
    check_rows(spec, X.shape[0])
    q = fit(X, spec, with_coords=False).quality.as_dict()
    row = {k: q.get(k) for k in ROW_FIELDS if k in q}
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def sweep(cur, name: str, grid: Any, backend: str = "local",
          ray_address: str | None = None) -> list[dict[str, Any]]:
    """One row per grid point: its params and the quality of the fit."""
    from ..catalog import runs as catalog
    from .reader import read_source

    check_backend(backend)
    check_address(ray_address)
    spec = catalog.get_definition(cur, name)
    if spec.partition_by is not None:  # one fit over every row would mix the partitions
        raise SpecError(
            f"cluster_sweep fits one clustering of all rows, but {name!r} clusters each "
            f"value of {spec.partition_by!r} on its own. Sweep one partition through a "
            f"definition of its rows, e.g. cluster_create('{name}_one', source := '(SELECT * "
            f"FROM ... WHERE {spec.partition_by} = ...)', ...), then cluster_sweep it.")
    points = grid_points(grid)
    specs = point_specs(spec, points)
    executor = get_executor(backend, ray_address)  # a missing Ray fails before reading
    X = read_source(cur, spec).X
    rows = executor.map(fit_point, [s.to_json() for s in specs], shared=(X,))
    return [{"point": i, "params": json.dumps(dict(s.params), sort_keys=True), **r}
            for i, (s, r) in enumerate(zip(specs, rows))]
