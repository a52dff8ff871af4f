"""SQL functions of the scale-out area: Parquet assignment and parameter sweeps.

Both take ``backend := 'local' | 'ray'`` and ``ray_address``; Ray is imported
only when ``'ray'`` is asked for. Each is a table macro that unnests the LIST of
STRUCTs one UDF call returns; the named arguments travel as one JSON object.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from .._errors import SpecError
from ._registry import _report, _State, _wrap

ASSIGN_ROW = ("STRUCT(output VARCHAR, run_id VARCHAR, backend VARCHAR, n_files BIGINT, "
              "n_rows BIGINT, n_assigned BIGINT, n_noise BIGINT, n_null BIGINT, "
              "seconds DOUBLE)[]")
SWEEP_ROW = ("STRUCT(point INTEGER, params JSON, n_clusters INTEGER, noise_ratio DOUBLE, "
             "silhouette_score DOUBLE, mean_cosine_to_centroid DOUBLE, "
             "cluster_size_entropy DOUBLE, davies_bouldin DOUBLE, calinski_harabasz DOUBLE, "
             "should_recluster BOOLEAN, reasons VARCHAR[], seconds DOUBLE)[]")


def _args(args_json: str | None) -> dict[str, Any]:
    args = json.loads(args_json) if args_json else {}
    return {k: v for k, v in args.items() if v is not None}


def _name(name: Any, fn: str) -> str:
    if not isinstance(name, str) or not name:
        raise SpecError(f"{fn} needs a cluster definition name as its first argument; "
                        f"got {name!r}.")
    return name


def _assign_parquet(state: _State, name, source, output, args_json) -> list[dict]:
    from ..engine import parquet as _partitioned

    args = _args(args_json)
    fields = args.pop("fields", None)
    _report(f"cluster_assign_parquet: {name} on {args.get('backend', 'local')}")
    with state.cursor() as cur:
        r = _partitioned.assign_parquet(cur, _name(name, "cluster_assign_parquet"), source,
                                        output, fields, args)
    return [r.as_row()]


def _sweep(state: _State, name, grid_json, args_json) -> list[dict]:
    from ..engine import sweep as _sweep

    args = _args(args_json)
    with state.cursor() as cur:
        return _sweep.sweep(cur, _name(name, "cluster_sweep"), grid_json,
                            backend=args.get("backend", "local"),
                            ray_address=args.get("ray_address"))


def register_udfs(con: duckdb.DuckDBPyConnection, state: _State) -> None:
    """Register the scale-out UDFs on one connection (a :class:`~duckcluster.functions._registry._Registrar`)."""
    kw = {"side_effects": True, "null_handling": "special"}
    con.create_function(
        "_dc_assign_parquet", _wrap(lambda n, s, o, a: _assign_parquet(state, n, s, o, a)),
        ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR"], ASSIGN_ROW, **kw)
    con.create_function(
        "_dc_cluster_sweep", _wrap(lambda n, g, a: _sweep(state, n, g, a)),
        ["VARCHAR", "VARCHAR", "VARCHAR"], SWEEP_ROW, **kw)


MACROS = r"""
CREATE OR REPLACE TEMP MACRO cluster_assign_parquet(name, source, output,
    embedding := 'embedding', id := 'id', threshold := 0.5, run_id := NULL, fields := NULL,
    keep_columns := false, overwrite := false, backend := 'local', ray_address := NULL,
    batch_rows := 65536) AS TABLE
    SELECT unnest(_dc_assign_parquet(name, CAST(source AS VARCHAR), CAST(output AS VARCHAR),
        json_object('embedding', embedding, 'id', id, 'threshold', threshold, 'run_id', run_id,
                    'fields', fields, 'keep_columns', keep_columns, 'overwrite', overwrite,
                    'backend', backend, 'ray_address', ray_address,
                    'batch_rows', batch_rows)::VARCHAR), recursive := true);

CREATE OR REPLACE TEMP MACRO cluster_sweep(name, grid, backend := 'local',
    ray_address := NULL) AS TABLE
    SELECT unnest(_dc_cluster_sweep(name, to_json(grid)::VARCHAR,
        json_object('backend', backend, 'ray_address', ray_address)::VARCHAR),
        recursive := true);
"""
