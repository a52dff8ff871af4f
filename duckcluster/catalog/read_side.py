"""The read side persisted in the database file, so any DuckDB client reads results with no set-up.

Two kinds of objects in the ``duckcluster`` schema, all pure SQL:

- the macros of ``sql/duckcluster.sql`` under the same names, as persistent macros
  ``duckcluster.cluster_members(...)``, ``duckcluster.cluster_quality(...)``, ... (a Python
  connection's TEMP macros keep the unqualified names: DuckDB looks a name up in ``temp``
  first, so ``cluster_members(...)`` there is the TEMP one and ``duckcluster.cluster_members``
  always the persistent one; ``tests/test_stock_cli.py`` proves both);
- the views of ``sql/read_views.sql`` (``duckcluster.latest_runs``, ``latest_quality``,
  ``latest_centroids``, ``latest_members``), over the catalog tables, so always current.

They change only when duckcluster's SQL does: :func:`ensure_persistent` compares a digest of
the SQL with the one stored in ``duckcluster.meta`` and recreates them when it differs. DuckDB
binds a persistent macro's body in the default database, so they work on the file a client
opened (``duckdb file.duckdb``, ``duckdb:///file.duckdb``, dbt's ``path``); a file ATTACHed
under another name needs ``USE`` first (the views work either way).
"""

from __future__ import annotations

import hashlib
import re

import duckdb

from . import sql_text

READ_SIDE_KEY = "read_side"
_TEMP_HEADER = re.compile(r"CREATE\s+OR\s+REPLACE\s+TEMP\s+MACRO\s+([A-Za-z_][A-Za-z0-9_]*)")


def macro_names(sql: str) -> list[str]:
    """Names of the TEMP macros a read-side file defines, in order."""
    return _TEMP_HEADER.findall(sql)


def persistent_macros(sql: str, schema: str = "duckcluster") -> str:
    """``sql`` (TEMP macros) as persistent macros in ``schema``, calling each other qualified.

    DuckDB resolves a name inside a persistent macro on the search path, which does not hold
    the ``duckcluster`` schema, so every call of a macro of the file is qualified."""
    names = macro_names(sql)
    out = _TEMP_HEADER.sub(lambda m: f"CREATE OR REPLACE MACRO {m.group(1)}", sql)
    if names:
        calls = re.compile(r"(?<![.\w])(" + "|".join(
            re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?=\s*\()")
        out = calls.sub(lambda m: f"{schema}.{m.group(1)}", out)
    return out


def persistent_sql() -> str:
    """Every statement that creates the persistent read side."""
    return persistent_macros(dispatched(sql_text("duckcluster.sql"))) + "\n" + \
        sql_text("read_views.sql")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_persistent(cur: duckdb.DuckDBPyConnection) -> bool:
    """Create or refresh the persistent macros and views when duckcluster's SQL changed.

    Returns True when it (re)created them (about 0.03 s). Needs a writable database with
    the catalog."""
    text = persistent_sql()
    want = digest(text)
    row = cur.execute("SELECT value FROM duckcluster.meta WHERE key = ?",
                      [READ_SIDE_KEY]).fetchall()
    changed = not (row and row[0][0] == want)
    sync_members_dispatch(cur)  # first: the macros call it (definitions written elsewhere too)
    if changed:
        cur.execute(text)
        cur.execute("INSERT OR REPLACE INTO duckcluster.meta VALUES (?, ?)",
                    [READ_SIDE_KEY, want])
    return changed


# -- typed ids: one view per definition ---------------------------------------------------
#
# duckcluster.members keeps every definition's ids as text (one table, one type). Each
# definition gets a view of its rows with the id cast back to the source's type, which
# cluster_members(name) reads through query_table(): DuckDB fixes a table macro's column types
# when it binds the call, and the view's name is the only thing known then that depends on
# the definition. Names that differ only in case are different definitions but the same
# identifier to DuckDB, so the view name escapes capitals (and ``^``, ``"``): 'Topics' ->
# "members of '^Topics'". The same text is computed in SQL by _dc_members_view.

#: Id types kept as such; anything else (ENUM, STRUCT, LIST ids) reads back as text.
_SIMPLE_TYPE = re.compile(r"^[A-Z][A-Z0-9_ ]*(\(\d+(, ?\d+)?\))?$")


def members_view_name(name: str) -> str:
    """The identifier (unquoted) of a definition's typed members view."""
    return "members of '" + re.sub(r"([A-Z^])", r"^\1", name).replace('"', "^_") + "'"


def members_view(name: str) -> str:
    return f'duckcluster."{members_view_name(name)}"'


def view_id_type(id_type: str | None) -> str:
    """The type a definition's view gives its ids: the source's, or VARCHAR."""
    t = (id_type or "VARCHAR").strip().upper()
    return t if _SIMPLE_TYPE.match(t) else "VARCHAR"


def current_id_type(cur, name: str) -> str | None:
    """The id type of a definition's view, or None when it has none."""
    row = cur.execute(
        "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() AND "
        "schema_name = 'duckcluster' AND table_name = ? AND column_name = 'id'",
        [members_view_name(name)]).fetchall()
    return row[0][0] if row else None


def sync_members_view(cur, name: str, id_type: str | None) -> None:
    """Create or replace the typed members view of ``name`` when its id type changed."""
    from .._source import quote_literal

    want = view_id_type(id_type)
    if current_id_type(cur, name) != want:
        cur.execute(f"CREATE OR REPLACE VIEW {members_view(name)} AS SELECT m.* REPLACE "
                    f"(CAST(m.id AS {want}) AS id) FROM duckcluster.members AS m "
                    f"WHERE m.name = {quote_literal(name)}")
    sync_members_dispatch(cur)


def drop_members_view(cur, name: str) -> None:
    cur.execute(f"DROP VIEW IF EXISTS {members_view(name)}")
    sync_members_dispatch(cur)


# -- which view a name reads: a macro over the definitions, rewritten when they change ------
#
# A table macro's query_table() argument must fold to a constant when the query is bound, so
# it cannot look a name up in duckcluster.definitions (no subqueries there). The macro
# duckcluster._dc_members_view_of(name) is a CASE over the names that exist, which DuckDB
# folds: a known name gives its view, any other name the same error the other read
# functions give, in every client (TEMP and persistent cluster_members call it).

DISPATCH_KEY = "members_dispatch"
_UNKNOWN = ("'No cluster definition named ''' || cluster_name || '''. List them with ' "
            "|| listing || '.'")
_NULL_NAME = ("'cluster_members needs a definition name, not NULL. List them with ' "
              "|| listing || '.'")

#: What sql/duckcluster.sql reads the members views with: the definitions and their views
#: read into a variable when the file is loaded (pure SQL, so the stock CLI on a file opened
#: read-only works whatever version wrote it), and ``_dc_members_view`` looking names up in it.
VARIABLE_MEMBERS_VIEW = re.compile(
    r"SET VARIABLE _dc_members_views = .*?\n\nCREATE OR REPLACE TEMP MACRO "
    r"_dc_members_view\(cluster_name\) AS\n.*? END;\n", re.S)

#: What replaces it where the definitions can change while the macro is in use (a Python
#: connection that writes) or where no variable is set (the persistent macros a BI tool
#: calls): the dispatch macro every write of the definitions rewrites.
DISPATCHED_MEMBERS_VIEW = """CREATE OR REPLACE TEMP MACRO _dc_members_view(cluster_name) AS
    CASE WHEN cluster_name IS NULL
             THEN error('cluster_members needs a definition name, not NULL. List them with SELECT * FROM cluster_list().')
         ELSE duckcluster._dc_members_view_of(cluster_name, 'SELECT * FROM cluster_list()') END;
"""


def dispatched(sql: str) -> str:
    """sql/duckcluster.sql with ``_dc_members_view`` calling the dispatch macro."""
    out, n = VARIABLE_MEMBERS_VIEW.subn(lambda _: DISPATCHED_MEMBERS_VIEW, sql)
    if n != 1:
        raise RuntimeError("duckcluster.sql: the variable-based _dc_members_view was not found "
                           "exactly once (catalog/read_side.py VARIABLE_MEMBERS_VIEW)")
    return out


def members_dispatch_sql(names: list[str]) -> str:
    """The CREATE MACRO statement of ``duckcluster._dc_members_view_of`` for ``names``.

    ``listing``: the query that lists definitions in the caller's world (the TEMP macro
    passes ``cluster_list()``, its persistent copy ``duckcluster.cluster_list()``)."""
    from .._source import quote_literal

    whens = "".join(f" WHEN cluster_name = {quote_literal(n)} THEN {quote_literal(members_view(n))}"
                    for n in names)
    return ("CREATE OR REPLACE MACRO duckcluster._dc_members_view_of(cluster_name, listing) AS CASE "
            f"WHEN cluster_name IS NULL THEN error({_NULL_NAME}){whens} "
            f"ELSE error({_UNKNOWN}) END")


def has_members_dispatch(cur) -> bool:
    return cur.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE database_name = current_database() AND "
        "schema_name = 'duckcluster' AND function_name = '_dc_members_view_of'"
    ).fetchall()[0][0] > 0


def sync_members_dispatch(cur) -> bool:
    """Rewrite ``_dc_members_view_of`` when the set of definitions changed (or it is missing).

    Returns True when it wrote it."""
    names = [r[0] for r in cur.execute(
        "SELECT name FROM duckcluster.definitions ORDER BY name").fetchall()]
    text = members_dispatch_sql(names)
    want = digest(text)
    stored = cur.execute("SELECT value FROM duckcluster.meta WHERE key = ?",
                         [DISPATCH_KEY]).fetchall()
    if stored and stored[0][0] == want and has_members_dispatch(cur):
        return False
    cur.execute(text)
    cur.execute("INSERT OR REPLACE INTO duckcluster.meta VALUES (?, ?)", [DISPATCH_KEY, want])
    return True


def definitions_without_view(cur) -> list[str]:
    views = {r[0].lower() for r in cur.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND "
        "schema_name = 'duckcluster'").fetchall()}
    return [r[0] for r in cur.execute(
        "SELECT name FROM duckcluster.definitions ORDER BY name").fetchall()
        if members_view_name(r[0]).lower() not in views]


def ensure_members_views(cur) -> int:
    """Give every definition its typed view (files from before typed ids, rows written by
    hand): the id type of its source now, or text when the source cannot be read."""
    from .._source import describe, source_sql
    from ..core.spec import ClusterSpec

    missing = definitions_without_view(cur)
    for name in missing:
        spec_json = cur.execute("SELECT spec FROM duckcluster.definitions WHERE name = ?",
                                [name]).fetchall()[0][0]
        id_type = None
        try:
            spec = ClusterSpec.from_json(spec_json)
            if spec.id:
                id_type = describe(cur, source_sql(cur, spec.source)).get(spec.id)
        except Exception:  # noqa: BLE001 - a source gone or unreadable: ids stay text
            id_type = None
        sync_members_view(cur, name, id_type)
    return len(missing)
