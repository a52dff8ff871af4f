"""Python API of the scale-out functions (the same as their SQL forms).

``backend='local'`` runs in this process; ``backend='ray'`` runs on Ray (``pip
install 'duckcluster[ray]'``): on the runtime this process has already
initialised, else ``ray_address``, else ``RAY_ADDRESS``, else a new local one.

>>> import duckcluster, duckcluster.scaleout as so
>>> con = duckcluster.connect()
>>> so.sweep(con, "missing", {"n_clusters": [2, 3]})
Traceback (most recent call last):
...
duckcluster._errors.UnknownNameError: No cluster definition named 'missing'. ...
>>> con.close()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from .engine.parquet import AssignResult

__all__ = ["AssignResult", "assign_parquet", "sweep"]


def assign_parquet(con: duckdb.DuckDBPyConnection, name: str, source: str, output: str, *,
                   embedding: str = "embedding", id: str | None = "id",
                   threshold: float | None = 0.5, run_id: str | None = None,
                   fields: Sequence[str] = ("cluster_id", "similarity"),
                   keep_columns: bool = False, overwrite: bool = False,
                   backend: str = "local", ray_address: str | None = None,
                   batch_rows: int = 65_536) -> AssignResult:
    """Assign every row of a Parquet file, folder or glob to the centroids of ``name``.

    Writes a folder of Parquet files (``id`` or every column, then ``fields``:
    cluster_id, similarity, label, summary, keywords, run_id) at ``output``;
    the same as ``SELECT * FROM cluster_assign_parquet(...)``.
    """
    from .engine import parquet as _partitioned

    options: dict[str, Any] = {
        "embedding": embedding, "id": id, "threshold": threshold, "run_id": run_id,
        "keep_columns": keep_columns, "overwrite": overwrite, "backend": backend,
        "ray_address": ray_address, "batch_rows": batch_rows}
    with con.cursor() as cur:
        return _partitioned.assign_parquet(cur, name, source, output, list(fields), options)


def sweep(con: duckdb.DuckDBPyConnection, name: str,
          grid: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, backend: str = "local",
          ray_address: str | None = None) -> list[dict[str, Any]]:
    """Quality of definition ``name`` at every point of ``grid``, one dict per point.

    The same rows as ``SELECT * FROM cluster_sweep(name, grid)``.
    """
    import json

    from .engine import sweep as _sweep

    with con.cursor() as cur:
        return _sweep.sweep(cur, name, json.dumps(grid), backend=backend,
                            ray_address=ray_address)
