"""SQL functions of the scale-out area: Parquet assignment and parameter sweeps.

Both take ``backend := 'local' | 'ray'`` and ``ray_address``; Ray is imported
only when ``'ray'`` is asked for. Each is a table macro that unnests the LIST of
STRUCTs one UDF call returns; the named arguments travel as one JSON object.
"""

from __future__ import annotations

from typing import Any

import duckdb

from .._errors import SpecError
from ..engine import parquet as _parquet
from ._declare import Function, P, decode_options, macros_sql, register
from ._registry import _report, _State

ASSIGN_ROW = ("STRUCT(output VARCHAR, run_id VARCHAR, backend VARCHAR, n_files BIGINT, "
              "n_rows BIGINT, n_assigned BIGINT, n_noise BIGINT, n_null BIGINT, "
              "seconds DOUBLE)[]")
SWEEP_ROW = ("STRUCT(point INTEGER, params JSON, n_clusters INTEGER, noise_ratio DOUBLE, "
             "silhouette_score DOUBLE, mean_cosine_to_centroid DOUBLE, "
             "cluster_size_entropy DOUBLE, davies_bouldin DOUBLE, calinski_harabasz DOUBLE, "
             "should_recluster BOOLEAN, reasons VARCHAR[], seconds DOUBLE)[]")


def _name(name: Any, fn: str) -> str:
    if not isinstance(name, str) or not name:
        raise SpecError(f"{fn} needs a cluster definition name as its first argument; "
                        f"got {name!r}.")
    return name


def _assign_parquet(state: _State, name, source, output, args_json) -> list[dict]:
    args = decode_options(args_json)
    fields = args.pop("fields", None)
    _report(f"cluster_assign_parquet: {name} on {args.get('backend', 'local')}")
    with state.cursor() as cur:
        r = _parquet.assign_parquet(cur, _name(name, "cluster_assign_parquet"), source,
                                        output, fields, args)
    return [r.as_row()]


def _sweep(state: _State, name, grid_json, args_json) -> list[dict]:
    from ..engine import sweep as _sweep

    args = decode_options(args_json)
    with state.cursor() as cur:
        return _sweep.sweep(cur, _name(name, "cluster_sweep"), grid_json,
                            backend=args.get("backend", "local"),
                            ray_address=args.get("ray_address"))


#: The regular functions of this area (see :mod:`._declare`).
FUNCTIONS = (
    Function("cluster_assign_parquet", "_dc_assign_parquet", ASSIGN_ROW,
             lambda state: lambda n, s, o, a: _assign_parquet(state, n, s, o, a),
             (P("name", to="arg"), P("source", to="arg", cast=True),
              P("output", to="arg", cast=True), P("embedding", "'embedding'"), P("id", "'id'"),
              P("threshold", "NULL"), P("run_id", "NULL"), P("fields", "NULL"),
              P("keep_columns", "false"), P("overwrite", "false"), P("backend", "'local'"),
              P("ray_address", "NULL"), P("batch_rows", "65536")), kind="table",
             checks=_parquet.OPTIONS,
             doc="assigns (or enriches) every row of a Parquet file, folder or glob into a "
                 "folder of Parquet files, streaming or on Ray"),
    Function("cluster_sweep", "_dc_cluster_sweep", SWEEP_ROW,
             lambda state: lambda n, g, a: _sweep(state, n, g, a),
             (P("name", to="arg"), P("grid", to="arg", expr="to_json(grid)::VARCHAR"),
              P("backend", "'local'"), P("ray_address", "NULL")), kind="table",
             doc="quality of a definition at every point of a param grid; writes nothing"),
)


def register_udfs(con: duckdb.DuckDBPyConnection, state: _State) -> None:
    """Register the scale-out UDFs on one connection (a :class:`~duckcluster.functions._registry._Registrar`)."""
    register(con, state, FUNCTIONS)


MACROS = macros_sql(FUNCTIONS)
