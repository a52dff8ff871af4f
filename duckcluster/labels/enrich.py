"""cluster_enrich: write cluster fields of a run into a target table, in one transaction.

A missing target is created as the definition's source plus the chosen field
columns. An existing target (the source itself included) gets missing field
columns added, its rows updated by the id key, rows that are not members of the
run set to NULL, and, unless ``insert_missing := false``, source rows it lacks
inserted (on the columns both share). Re-running with the same run changes
nothing: the call is idempotent. Columns written by an earlier enrichment may be
overwritten; any other existing column of the same name is an error (use
``prefix``). Every call that commits is recorded in ``duckcluster.enrichments``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import SpecError
from .._params import Param, parse_field_list, validate_params
from .._source import (
    _relation_exists,
    _split_qualified,
    describe,
    quote_ident,
    quote_literal,
    require_columns,
    source_sql,
)
from ..catalog import labels as store
from ..catalog import runs as catalog

#: field -> (SQL type, expression over members m, top-level centroid c, deepest node n)
FIELDS: dict[str, tuple[str, str]] = {
    "cluster_id": ("INTEGER", "m.cluster_id"),
    "label": ("VARCHAR", "c.label"),
    "summary": ("VARCHAR", "c.summary"),
    "keywords": ("VARCHAR[]", "c.keywords"),
    "cosine_similarity_to_centroid": ("FLOAT", "m.cosine_similarity_to_centroid"),
    "node_id": ("VARCHAR", "m.node_id"),
    "node_label": ("VARCHAR", "n.label"),
    "parent_cluster_id": ("VARCHAR", "m.parent_cluster_id"),
    "hierarchy_level": ("INTEGER", "m.hierarchy_level"),
    "x": ("FLOAT", "m.x"),
    "y": ("FLOAT", "m.y"),
    "z": ("FLOAT", "m.z"),
    "run_id": ("VARCHAR", "m.run_id"),
}
DEFAULT_FIELDS = ("cluster_id", "label", "summary", "keywords")

OPTIONS: dict[str, Param] = {
    "run_id": Param(str, None, nullable=True, doc="default: the latest successful run"),
    "id": Param(str, None, nullable=True, doc="target's key column; default: the definition's id"),
    "prefix": Param(str, "", doc="prefix of the written column names, e.g. 'cluster_'"),
    "insert_missing": Param(bool, True, doc="insert source rows the target lacks"),
}


@dataclass(frozen=True)
class EnrichResult:
    """What a cluster_enrich call did."""

    target: str
    run_id: str
    columns: tuple[str, ...]
    created: bool
    n_rows: int
    n_matched: int
    n_inserted: int

    def message(self) -> str:
        how = "created" if self.created else "updated"
        extra = f", inserted {self.n_inserted} new source row(s)" if self.n_inserted else ""
        return (f"{how} {self.target}: {self.n_rows} row(s), {self.n_matched} member(s) of run "
                f"{self.run_id} enriched with {', '.join(self.columns)}{extra}")


def parse_fields(fields: Any) -> tuple[str, ...]:
    return parse_field_list(fields, FIELDS, DEFAULT_FIELDS, "cluster_enrich", "['cluster_id', 'label']")


def _target_sql(cur, target: str) -> tuple[str, bool, bool]:
    """(quoted name, exists, is a view)."""
    if not isinstance(target, str) or not target.strip():
        raise SpecError(f"target must name a table, like 'docs_enriched'. Got {target!r}.")
    parts = _split_qualified(target.strip())
    if not all(parts) or len(parts) > 3:
        raise SpecError(f"Cannot read target {target!r} as a (qualified) table name.")
    quoted = ".".join(quote_ident(p) for p in parts)
    exists = _relation_exists(cur, parts[:-1] or None, parts[-1])
    is_view = False
    if exists:
        is_view = cur.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal",
            [parts[-1]]).fetchall()[0][0] > 0 and cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
            [parts[-1]]).fetchall()[0][0] == 0
    return quoted, exists, is_view


def enrich(cur, name: str, target: str, fields: Any, options: Mapping[str, Any]) -> EnrichResult:
    """Write the run's fields into ``target``; all or nothing."""
    store.require_writable(cur, "cluster_enrich")
    opts = validate_params("cluster_enrich", OPTIONS, options)
    fields_t = parse_fields(fields)
    spec = catalog.get_definition(cur, name)
    run_id = store.resolve_run(cur, name, opts["run_id"])
    src = source_sql(cur, spec.source)
    src_cols = describe(cur, src)
    id_col = spec.id
    require_columns(src_cols, [id_col], "id", spec.source)
    tgt, exists, is_view = _target_sql(cur, target)
    if is_view:
        raise SpecError(f"target {target!r} is a view; cluster_enrich writes tables. Pick a new "
                        "table name (it is created) or an existing table.")
    prefix = opts["prefix"]
    cols = [prefix + f for f in fields_t]
    key = opts["id"] or id_col
    enriched = (
        "SELECT m.id AS __dc_id, " + ", ".join(
            f"CAST({FIELDS[f][1]} AS {FIELDS[f][0]}) AS {quote_ident(c)}"
            for f, c in zip(fields_t, cols)) +
        " FROM duckcluster.members AS m LEFT JOIN duckcluster.centroids AS c ON "
        "c.run_id = m.run_id AND c.hierarchy_level = 0 AND c.cluster_id = m.cluster_id "
        "LEFT JOIN duckcluster.centroids AS n ON n.run_id = m.run_id AND n.node_id = m.node_id "
        f"WHERE m.run_id = {quote_literal(run_id)}")
    qkey = quote_ident(key)
    n_inserted = 0
    cur.execute("BEGIN")
    try:
        if not exists:
            clash = [c for c in cols if c in src_cols]
            if clash:
                raise SpecError(
                    f"The source already has column(s) {', '.join(map(repr, clash))}; pass "
                    "prefix := 'cluster_' (or another) so the enrichment columns get new names.")
            sel = ", ".join(f"e.{quote_ident(c)}" for c in cols)
            cur.execute(f"CREATE TABLE {tgt} AS SELECT s.*, {sel} FROM (SELECT * FROM {src}) "
                        f"AS s LEFT JOIN ({enriched}) AS e ON CAST(s.{quote_ident(id_col)} AS "
                        f"VARCHAR) = e.__dc_id ORDER BY s.{quote_ident(id_col)}")
        else:
            tcols = describe(cur, tgt)
            require_columns(tcols, [key], "id", target)
            ours = store.enriched_columns(cur, target.strip())
            taken = [c for c in cols if c in tcols and c not in ours]
            if taken:
                raise SpecError(
                    f"Target {target!r} already has column(s) {', '.join(map(repr, taken))} that "
                    "cluster_enrich did not write; pass prefix := 'cluster_' (or another) to "
                    "write new columns instead of overwriting them.")
            for f, c in zip(fields_t, cols):
                if c not in tcols:
                    cur.execute(f"ALTER TABLE {tgt} ADD COLUMN {quote_ident(c)} {FIELDS[f][0]}")
            if opts["insert_missing"] and tgt != src:
                shared = [c for c in src_cols if c in tcols and c not in cols]
                if key in shared:
                    names = ", ".join(quote_ident(c) for c in shared)
                    before = cur.execute(f"SELECT count(*) FROM {tgt}").fetchall()[0][0]
                    cur.execute(
                        f"INSERT INTO {tgt} ({names}) SELECT {names} FROM (SELECT * FROM {src}) "
                        f"AS s WHERE NOT EXISTS (SELECT 1 FROM {tgt} AS t WHERE CAST(t.{qkey} "
                        f"AS VARCHAR) = CAST(s.{qkey} AS VARCHAR))")
                    n_inserted = cur.execute(f"SELECT count(*) FROM {tgt}").fetchall()[0][0] \
                        - before
            sets = ", ".join(f"{quote_ident(c)} = e.{quote_ident(c)}" for c in cols)
            cur.execute(f"UPDATE {tgt} AS t SET {sets} FROM ({enriched}) AS e "
                        f"WHERE CAST(t.{qkey} AS VARCHAR) = e.__dc_id")
            nulls = ", ".join(f"{quote_ident(c)} = NULL" for c in cols)
            cur.execute(f"UPDATE {tgt} AS t SET {nulls} WHERE NOT EXISTS (SELECT 1 FROM "
                        f"duckcluster.members AS m WHERE m.run_id = {quote_literal(run_id)} "
                        f"AND m.id = CAST(t.{qkey} AS VARCHAR))")
        n_rows = cur.execute(f"SELECT count(*) FROM {tgt}").fetchall()[0][0]
        n_matched = cur.execute(
            f"SELECT count(*) FROM {tgt} AS t WHERE EXISTS (SELECT 1 FROM duckcluster.members "
            f"AS m WHERE m.run_id = {quote_literal(run_id)} AND m.id = CAST(t.{qkey} AS "
            "VARCHAR))").fetchall()[0][0]
        result = EnrichResult(target.strip(), run_id, tuple(cols), not exists, int(n_rows),
                              int(n_matched), int(n_inserted))
        store.record_enrichment(cur, {
            "name": name, "run_id": run_id, "target": result.target, "id_column": key,
            "fields": fields_t, "columns": cols, "created_target": result.created,
            "n_rows": result.n_rows, "n_matched": result.n_matched,
            "n_inserted": result.n_inserted, "enriched_at": catalog.now()})
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return result
