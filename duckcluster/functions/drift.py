"""SQL functions of the drift area: TEMP macros over private ``_dc_*`` UDFs.

DuckDB 2.0 has no Python table functions, so each table-valued function is a
table macro that unnests a LIST of STRUCTs returned by one UDF call. All named
arguments travel to the UDF as one JSON object (``json_object(...)``), so a new
option is one macro parameter and one :class:`duckcluster.drift.spec.DriftSpec` field.
``cluster_drift`` itself is pure SQL in ``sql/duckcluster.sql`` (the read side);
``cluster_drift_test`` adds its exact p-value here.
"""

from __future__ import annotations

from typing import Any

import duckdb

from .. import _json
from .._errors import SpecError
from ..core.backend import get_executor
from ..drift import monitor as _drift_monitor
from ..drift import share_test
from ..drift import sides as _drift
from ..drift.spec import EXPLAIN_OPTIONS, DriftSpec
from ..drift.spec import OPTIONS as DRIFT_OPTIONS
from ._declare import Function, P, decode_options, macros_sql, options, register
from ._registry import _report, _State, _wrap

_RESULT = ("method VARCHAR, statistic DOUBLE, p_value DOUBLE, p_value_adjusted DOUBLE, "
           "threshold DOUBLE, drift_detected BOOLEAN")
DRIFT_ROW = f"STRUCT({_RESULT}, n_baseline BIGINT, n_current BIGINT, details JSON)[]"
WINDOW_ROW = (f"STRUCT(window_start TIMESTAMP, window_end TIMESTAMP, is_baseline BOOLEAN, "
              f"n_rows BIGINT, {_RESULT}, n_baseline BIGINT, n_current BIGINT, details JSON)[]")
MONITOR_ROW = (f"STRUCT(window_start TIMESTAMP, window_end TIMESTAMP, is_baseline BOOLEAN, "
               f"n_seen BIGINT, n_reservoir BIGINT, {_RESULT}, cluster_js_divergence DOUBLE, "
               f"cluster_p_value DOUBLE, new_content_share DOUBLE, details JSON)[]")
SHARE_TEST = ("STRUCT(js_divergence DOUBLE, p_value DOUBLE, chi2 DOUBLE, chi2_dof INTEGER, "
              "chi2_p_value DOUBLE, cluster_p_values DOUBLE[], cluster_p_values_adjusted DOUBLE[])")

EXPLAIN_ROW = ("STRUCT(region_id INTEGER, kind VARCHAR, label VARCHAR, keywords VARCHAR[], "
               "n_baseline BIGINT, n_current BIGINT, baseline_share DOUBLE, current_share DOUBLE, "
               "delta DOUBLE, delta_ci_low DOUBLE, delta_ci_high DOUBLE, p_value DOUBLE, "
               "p_value_adjusted DOUBLE, example_ids VARCHAR[], examples VARCHAR[])[]")

_FIELDS = {
    "drift": ("method", "statistic", "p_value", "p_value_adjusted", "threshold",
              "drift_detected", "n_baseline", "n_current", "details"),
    "window": ("window_start", "window_end", "is_baseline", "n_rows", "method", "statistic",
               "p_value", "p_value_adjusted", "threshold", "drift_detected", "n_baseline",
               "n_current", "details"),
    "monitor": ("window_start", "window_end", "is_baseline", "n_seen", "n_reservoir", "method",
                "statistic", "p_value", "p_value_adjusted", "threshold", "drift_detected",
                "cluster_js_divergence", "cluster_p_value", "new_content_share", "details"),
}


def _rows(kind: str, rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        d = {k: r.get(k) for k in _FIELDS[kind]}
        d["details"] = _json.dumps(r.get("details") or {})
        out.append(d)
    return out


def _spec(args: dict, owner: str, *extra: str) -> DriftSpec:
    return DriftSpec.from_dict({k: v for k, v in args.items() if k not in extra}, owner)


def _required(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{what} is required: a table or view name, a Parquet path, a query in "
                        f"parentheses or 'run:<run_id>'. Got {value!r}.")
    return value


# -- UDF bodies ------------------------------------------------------------------------

def _embedding_drift(state: _State, baseline, current, args_json) -> list[dict]:
    spec = _spec(decode_options(args_json), "embedding_drift")
    with state.cursor() as cur:
        rows = _drift.embedding_drift(cur, _required(baseline, "The baseline"),
                                      _required(current, "The current side"), spec,
                                      progress=_report)
    return _rows("drift", rows)


_EXPLAIN_ARGS = ("text", "id", "n_regions", "n_examples")


def _explain(state: _State, baseline, current, args_json) -> list[dict]:
    args = decode_options(args_json)
    spec = _spec(args, "embedding_drift_explain", *_EXPLAIN_ARGS)
    options = {k: args[k] for k in _EXPLAIN_ARGS if k in args}
    with state.cursor() as cur:
        return _drift.explain_drift(cur, _required(baseline, "The baseline"),
                                    _required(current, "The current side"), spec, options,
                                    progress=_report)


def _windows(state: _State, source, args_json) -> list[dict]:
    args = decode_options(args_json)
    spec = _spec(args, "embedding_drift_windows", "time_column", "window_size", "baseline",
                 "backend", "ray_address")
    executor = get_executor(args.get("backend", "local"), args.get("ray_address"))
    with state.cursor() as cur:
        rows = _drift.drift_windows(cur, _required(source, "The source"),
                                    args.get("time_column"), args.get("window_size"),
                                    args.get("baseline"), spec, progress=_report,
                                    executor=executor)
    return _rows("window", rows)


def _monitor_create(state: _State, name, args_json, replace) -> str:
    with state.cursor() as cur:
        return _drift_monitor.create(cur, name, decode_options(args_json), bool(replace))


def _monitor_add(state: _State, name, source, embedding, time_column) -> dict:
    with state.cursor() as cur:
        return _drift_monitor.add(cur, name, _required(source, "The source"), embedding,
                                  time_column)


def _monitor_windows(state: _State, name, args_json) -> list[dict]:
    args = decode_options(args_json)
    spec = _spec(args, "drift_monitor_windows", "baseline")
    with state.cursor() as cur:
        rows = _drift_monitor.windows(cur, name, spec, args.get("baseline"))
    return _rows("monitor", rows)


def _monitor_delete(state: _State, name) -> str:
    with state.cursor() as cur:
        return _drift_monitor.delete(cur, name)


def _share_test(baseline_sizes, current_sizes, n_permutations, seed) -> dict:
    import numpy as np

    b = np.array([x or 0 for x in baseline_sizes or []], dtype=np.int64)
    c = np.array([x or 0 for x in current_sizes or []], dtype=np.int64)
    if b.sum() == 0 or c.sum() == 0:
        raise SpecError("cluster_drift_test needs members in both runs.")
    from ..drift.explain import benjamini_hochberg, fisher_p_values

    t = share_test(b, c, int(n_permutations or 2000), np.random.default_rng(int(seed or 42)))
    per = fisher_p_values(b, c, int(b.sum()), int(c.sum()))
    return {"js_divergence": t.js_divergence, "p_value": t.p_value, "chi2": t.chi2,
            "chi2_dof": t.chi2_dof, "chi2_p_value": t.chi2_p_value,
            "cluster_p_values": per.tolist(),
            "cluster_p_values_adjusted": benjamini_hochberg(per).tolist()}


_SIDE = dict(to="arg", cast=True)

#: embedding_drift_explain's rows with ``example_ids`` in the sides' id type. The UDF's
#: return type is fixed, so it returns the ids as DuckDB's text of them; the macro casts
#: them back to the type of the id column, which it learns when the call is bound from an
#: empty query over both sides (_dc_explain_id_type: a constant text, so query() takes it).
#: Sides without that column, and 'run:<id>' sides, give text ids.
_EXPLAIN_BODY = """WITH __dc_rows AS (SELECT row_number() OVER () AS __dc_pos, * FROM ({rows})),
         __dc_type AS (SELECT * FROM query(_dc_explain_id_type(baseline, current, id)))
    SELECT __dc_rows.* EXCLUDE (__dc_pos) REPLACE (list_transform(__dc_rows.example_ids,
               lambda x: cast_to_type(x, (SELECT __dc_id FROM __dc_type))) AS example_ids)
    FROM __dc_rows ORDER BY __dc_pos"""

#: The helpers of _EXPLAIN_BODY: the FROM item of a side as the binder sees it (the UDF
#: reads it the same way, see duckcluster._source.source_sql) and the typed empty query.
_EXPLAIN_ID_TYPE = r"""
CREATE OR REPLACE TEMP MACRO _dc_explain_from(side) AS
    CASE WHEN side IS NULL OR trim(side) LIKE 'run:%' THEN '(SELECT NULL::VARCHAR AS __dc_none)'
         WHEN trim(side) LIKE '(%)' THEN trim(side)
         WHEN regexp_matches(trim(side),
                             '(\.(parquet|csv|tsv|json|jsonl|ndjson)(\.gz|\.zst)?$)|[*?]|://', 'i')
             THEN '''' || replace(trim(side), '''', '''''') || ''''
         WHEN NOT contains(side, '"') AND NOT contains(side, '.')
             THEN '"' || trim(side) || '"'
         ELSE trim(side) END;
CREATE OR REPLACE TEMP MACRO _dc_explain_id_one(side, id) AS
    'SELECT #1 AS __dc_id FROM (SELECT COLUMNS(lambda c: ' ||
    CASE WHEN id IS NULL THEN 'c = ''id'''
         ELSE 'lower(c) = lower(''' || replace(CAST(id AS VARCHAR), '''', '''''') || ''')'
    END ||
    ' OR c = ''__dc_none'') FROM (SELECT *, NULL::VARCHAR AS __dc_none FROM ' ||
    _dc_explain_from(side) || ') AS __dc_side) AS __dc_cols';
CREATE OR REPLACE TEMP MACRO _dc_explain_id_type(baseline, current, id) AS
    _dc_explain_id_one(CAST(baseline AS VARCHAR), id) || ' UNION ALL ' ||
    _dc_explain_id_one(CAST(current AS VARCHAR), id) ||
    ' LIMIT 0';
"""
_CHECKS = {**DRIFT_OPTIONS, **EXPLAIN_OPTIONS}
_TESTED = options(("method", "params", "alpha", "seed", "normalize", "pooling"),
                  method=P("method", "'knn'"), alpha=P("alpha", "0.05"), seed=P("seed", "42"),
                  normalize=P("normalize", "true"), pooling=P("pooling", "'mean'"))
_REFERENCE = options(("reference", "reference_run"))

#: The regular functions of this area (see :mod:`._declare`). ``window`` is a reserved word
#: in DuckDB, so the window length is ``window_size`` (or the quoted "window").
FUNCTIONS = (
    Function("embedding_drift", "_dc_embedding_drift", DRIFT_ROW,
             lambda state: lambda b, c, a: _embedding_drift(state, b, c, a),
             (P("baseline", **_SIDE), P("current", **_SIDE), P("embedding"), *_TESTED,
              *_REFERENCE, P("group_by", "NULL")), kind="table", checks=DRIFT_OPTIONS,
             doc="has the distribution of embeddings changed between two sides (tables, "
                 "queries, Parquet, 'run:<id>')? One row per method, with a p-value"),
    Function("embedding_drift_explain", "_dc_embedding_drift_explain", EXPLAIN_ROW,
             lambda state: lambda b, c, a: _explain(state, b, c, a),
             (P("baseline", **_SIDE), P("current", **_SIDE), P("embedding"),
              *options(("text", "id", "n_regions")), P("n_examples", "3"),
              *[p for p in _TESTED if p.name not in ("method", "params")]),
             kind="table", checks=_CHECKS, body_sql=_EXPLAIN_BODY,
             doc="where the sides differ: regions of the pooled rows with their shares, "
                 "Fisher p-values (BH-adjusted), keywords and example rows (example_ids in "
                 "the id column's type)"),
    Function("embedding_drift_windows", "_dc_embedding_drift_windows", WINDOW_ROW,
             lambda state: lambda src, a: _windows(state, src, a),
             (P("source", **_SIDE), P("embedding"), P("time_column", "'created_at'"),
              P("window_size", "INTERVAL 1 DAY",
                expr='coalesce(CAST("window" AS VARCHAR), CAST(window_size AS VARCHAR))'),
              P("window", "NULL", to="none"),
              P("baseline", "NULL", expr="CAST(baseline AS VARCHAR)"), *_TESTED,
              *_REFERENCE, P("backend", "'local'"), P("ray_address", "NULL"),
              P("group_by", "NULL")),
             kind="table", checks=DRIFT_OPTIONS,
             doc="drift of each time window of one source against a baseline window "
                 "(\"window\" := is the same as window_size)"),
    Function("drift_monitor_create", "_dc_drift_monitor_create", "VARCHAR",
             lambda state: lambda n, a, r: _monitor_create(state, n, a, r),
             (P("name", to="arg"), *_REFERENCE,
              P("window_size", "INTERVAL 1 DAY", expr="CAST(window_size AS VARCHAR)"),
              P("reservoir_size", "1000"), P("assignment_threshold", "0.5"), P("seed", "42"),
              P("replace", "false", to="arg", sql_type="BOOLEAN")),
             checks=_drift_monitor.OPTIONS,
             doc="a stored monitor: windowed reservoirs of embeddings added over time"),
    Function("drift_monitor_add", "_dc_drift_monitor_add",
             "STRUCT(" + ", ".join(f"{k} BIGINT" for k in _drift_monitor.ADD_RESULT) + ")",
             lambda state: lambda n, src, e, t: _monitor_add(state, n, src, e, t),
             (P("name", to="arg"), P("source", **_SIDE), P("embedding", "'embedding'", to="arg"),
              P("time_column", "NULL", to="arg")),
             doc="add a batch of rows to a monitor's windows; returns what it counted"),
    Function("drift_monitor_windows", "_dc_drift_monitor_windows", MONITOR_ROW,
             lambda state: lambda n, a: _monitor_windows(state, n, a),
             (P("name", to="arg"), P("method", "'knn'"), P("params", "NULL"),
              P("baseline", "NULL", expr="CAST(baseline AS VARCHAR)"), P("alpha", "0.05"),
              P("seed", "42"), P("normalize", "true")), kind="table", checks=DRIFT_OPTIONS,
             doc="drift of each window of a monitor against its baseline window"),
    Function("drift_monitor_delete", "_dc_drift_monitor_delete", "VARCHAR",
             lambda state: lambda n: _monitor_delete(state, n), (P("name", to="arg"),),
             doc="remove a monitor and its windows"),
)


def register_udfs(con: duckdb.DuckDBPyConnection, state: _State) -> None:
    """Register the drift UDFs on one connection (each connection gets its own copies)."""
    register(con, state, FUNCTIONS)
    con.create_function("_dc_share_test", _wrap(_share_test),
                        ["BIGINT[]", "BIGINT[]", "BIGINT", "BIGINT"], SHARE_TEST,
                        side_effects=True, null_handling="special")


# the irregular one: SQL around a UDF call (and the read side's cluster_drift)
MACROS = _EXPLAIN_ID_TYPE + macros_sql(FUNCTIONS) + r"""
CREATE OR REPLACE TEMP MACRO cluster_drift_test(cluster_name, baseline_run := NULL,
    current_run := NULL, match_threshold := 0.8, alpha := 0.05, seed := 42,
    n_permutations := 2000) AS TABLE
    WITH d AS MATERIALIZED (
        SELECT *, row_number() OVER (ORDER BY baseline_cluster_id NULLS LAST,
                                              current_cluster_id NULLS LAST) AS __dc_pos
        FROM cluster_drift(cluster_name, baseline_run := baseline_run,
                           current_run := current_run, match_threshold := match_threshold)),
    t AS (SELECT _dc_share_test(list(d.baseline_size ORDER BY d.__dc_pos),
                                list(d.current_size ORDER BY d.__dc_pos),
                                CAST(n_permutations AS BIGINT), CAST(seed AS BIGINT)) AS r
          FROM d)
    SELECT d.baseline_run_id, d.current_run_id, d.baseline_cluster_id, d.current_cluster_id,
           d.status, d.baseline_size, d.current_size, d.baseline_share, d.current_share, d.delta,
           t.r.cluster_p_values[d.__dc_pos] AS p_value,
           t.r.cluster_p_values_adjusted[d.__dc_pos] AS p_value_adjusted,
           t.r.cluster_p_values_adjusted[d.__dc_pos] < alpha AS changed,
           'cluster' AS method, t.r.js_divergence AS statistic, t.r.p_value AS overall_p_value,
           CAST(alpha AS DOUBLE) AS threshold, t.r.p_value < alpha AS drift_detected,
           t.r.chi2 AS chi2, t.r.chi2_dof AS chi2_dof, t.r.chi2_p_value AS chi2_p_value
    FROM d, t
    ORDER BY d.__dc_pos;
"""
