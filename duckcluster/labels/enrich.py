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

from .._errors import DataError, SpecError
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
    notes: tuple[str, ...] = ()  # fields NULL for some members, and why

    def message(self) -> str:
        how = "created" if self.created else "updated"
        extra = f", inserted {self.n_inserted} new source row(s)" if self.n_inserted else ""
        notes = "".join(f"; {n}" for n in self.notes)
        return (f"{how} {self.target}: {self.n_rows} row(s), {self.n_matched} member(s) of run "
                f"{self.run_id} enriched with {', '.join(self.columns)}{extra}{notes}")


#: Why a field can be NULL for every member of a run, and what to do about it.
_EMPTY_WHY = {
    "label": "the run has no labels", "summary": "the run has no summaries",
    "keywords": "the run has no keywords", "node_label": "the run has no labels",
    "cosine_similarity_to_centroid": "every row is noise",
    "x": "the run has no plotting coordinates", "y": "the run has no plotting coordinates",
    "z": "the run has 2-D coordinates only (dimensions := 3 gives z)",
    "node_id": "every row is noise", "parent_cluster_id": "the run is not hierarchical",
}
_CLUSTER_LEVEL = ("label", "summary", "keywords", "node_label")


def check_fields(cur, name: str, run_id: str, fields: tuple[str, ...], enriched: str
                 ) -> tuple[str, ...]:
    """Refuse fields that are NULL for every member of the run; return notes for fields
    NULL for some (noise rows have no cluster fields)."""
    def present(f: str, c: str) -> str:
        col = quote_ident(c)
        if FIELDS[f][0] == "FLOAT":
            return f"count(*) FILTER (WHERE {col} IS NOT NULL AND NOT isnan({col}))"
        return f"count({col})"
    counts = cur.execute(
        "SELECT count(*), count(*) FILTER (WHERE __dc_cid >= 0), "
        + ", ".join(present(f, f"__dc_{i}") for i, f in enumerate(fields))
        + " FROM (" + enriched + ")").fetchall()[0]
    n, n_members, have = counts[0], counts[1], counts[2:]
    empty = [f for f, k in zip(fields, have) if n and k == 0]
    if empty:
        why = "; ".join(f"{f}: {_EMPTY_WHY.get(f, 'no value in this run')}" for f in empty)
        labels = [f for f in empty if f in _CLUSTER_LEVEL]
        fix = (f"Label the run first (SELECT cluster_label({quote_literal(name)})), or "
               if labels else "")
        keep = [f for f in fields if f not in empty]
        raise DataError(
            f"cluster_enrich: {', '.join(map(repr, empty))} would be NULL for every member of "
            f"run {run_id} ({why}); nothing true to write. {fix}"
            f"{'l' if fix else 'L'}eave {'it' if len(empty) == 1 else 'them'} out: "
            f"fields := {list(keep) or ['cluster_id']}.")
    why: dict[str, list[str]] = {}  # the same reason once, for every field it concerns
    for f, k in zip(fields, have):
        if k < n:
            noise = n - n_members if f in _CLUSTER_LEVEL or f.startswith("cosine") else 0
            missing = n - k - noise
            parts = []
            if missing > 0:
                parts.append(f"{missing} member(s) in clusters without one")
            if noise > 0:
                parts.append(f"{noise} noise row(s)")
            if parts:
                why.setdefault(" and ".join(parts), []).append(f)
    return tuple(f"{', '.join(fs)} {'is' if len(fs) == 1 else 'are'} NULL for {text}"
                 for text, fs in why.items())


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


def _enriched_sql(run_id: str, fields: tuple[str, ...], cols: list[str]) -> str:
    """One row per member of the run: its id (__dc_id), cluster (__dc_cid) and fields."""
    return ("SELECT m.id AS __dc_id, m.cluster_id AS __dc_cid, " + ", ".join(
        f"CAST({FIELDS[f][1]} AS {FIELDS[f][0]}) AS {quote_ident(c)}"
        for f, c in zip(fields, cols)) +
        " FROM duckcluster.members AS m LEFT JOIN duckcluster.centroids AS c ON "
        "c.run_id = m.run_id AND c.hierarchy_level = 0 AND c.cluster_id = m.cluster_id "
        "LEFT JOIN duckcluster.centroids AS n ON n.run_id = m.run_id AND n.node_id = m.node_id "
        f"WHERE m.run_id = {quote_literal(run_id)}")


def enrich(cur, name: str, target: str, fields: Any, options: Mapping[str, Any]) -> EnrichResult:
    """Write the run's fields into ``target``; all or nothing."""
    catalog.require_writable(cur, "cluster_enrich")
    opts = validate_params("cluster_enrich", OPTIONS, options)
    fields_t = parse_fields(fields)
    spec = catalog.get_definition(cur, name)
    run_id = catalog.resolve_run(cur, name, opts["run_id"])
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
    notes = check_fields(cur, name, run_id, fields_t, _enriched_sql(
        run_id, fields_t, [f"__dc_{i}" for i in range(len(fields_t))]))
    enriched = _enriched_sql(run_id, fields_t, cols)
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
                              int(n_matched), int(n_inserted), notes)
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
