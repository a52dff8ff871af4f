"""Sources and identifiers: turn user strings into safely quoted SQL.

A source is a table or view name (optionally qualified), a Parquet/CSV path or
glob (or any URL DuckDB reads), or a query in parentheses. Identifiers are always
quoted; no user string is pasted into SQL unquoted.
"""

from __future__ import annotations

import re

import duckdb

from ._errors import DataError, SpecError, closest

_FILE_RE = re.compile(r"(\.(parquet|csv|tsv|json|jsonl|ndjson)(\.gz|\.zst)?$)|[*?]|://", re.I)


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB: ``a"b`` -> ``"a""b"``."""
    if "\x00" in name:
        raise SpecError("Identifiers cannot contain a NUL character.")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal for DuckDB: ``it's`` -> ``'it''s'``."""
    if "\x00" in value:
        raise SpecError("Strings cannot contain a NUL character.")
    return "'" + value.replace("'", "''") + "'"


def source_sql(cur: duckdb.DuckDBPyConnection, source: str) -> str:
    """Return a SQL table expression (usable after FROM) for a user source string."""
    s = source.strip()
    if s.startswith("(") and s.endswith(")"):
        return f"{s} AS __dc_source"
    if _FILE_RE.search(s):
        return f"{quote_literal(s)} AS __dc_source"
    if _relation_exists(cur, None, s):
        return quote_ident(s)
    try:
        parts = _split_qualified(s)
    except SpecError:
        parts = []
    if len(parts) == 1 and _relation_exists(cur, None, parts[0]):
        return quote_ident(parts[0])
    if len(parts) > 1 and _relation_exists(cur, parts[:-1], parts[-1]):
        return ".".join(quote_ident(p) for p in parts)
    names = [r[0] for r in cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND schema_name <> 'duckcluster' "
        "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    raise SpecError(
        f"Source {source!r} is not a table or view in this database.{closest(s, names)} "
        "A source is a table or view name, a Parquet path or glob, or a query in "
        "parentheses such as '(SELECT * FROM docs WHERE lang = ''en'')'."
    )


def _split_qualified(s: str) -> list[str]:
    """Split ``a.b."c.d"`` into its identifiers; raise on anything else."""
    parts, i = [], 0
    while i < len(s):
        if s[i] == '"':
            j, buf = i + 1, []
            while True:
                k = s.find('"', j)
                if k < 0:
                    raise SpecError(f"Unbalanced double quote in source {s!r}.")
                buf.append(s[j:k])
                if k + 1 < len(s) and s[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            k = s.find(".", i)
            k = len(s) if k < 0 else k
            parts.append(s[i:k].strip())
            i = k
        if i < len(s):
            if s[i] != ".":
                raise SpecError(f"Cannot read source {s!r} as a (qualified) table name.")
            i += 1
    return parts


def _relation_exists(cur, qual: list[str] | None, name: str) -> bool:
    if qual is None:
        q = ("SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() WHERE schema_name = "
             "current_schema() AND database_name = current_database() UNION ALL SELECT view_name "
             "FROM duckdb_views() WHERE schema_name = current_schema() AND database_name = "
             "current_database() UNION ALL SELECT table_name FROM duckdb_tables() WHERE "
             "temporary UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary) WHERE n = ?")
        return cur.execute(q, [name]).fetchall()[0][0] > 0
    if len(qual) == 1:
        cond, args = "(schema_name = ? OR database_name = ?)", [qual[0], qual[0]]
    elif len(qual) == 2:
        cond, args = "database_name = ? AND schema_name = ?", qual
    else:
        return False
    q = (f"SELECT count(*) FROM (SELECT table_name n, database_name, schema_name FROM duckdb_tables() "
         f"UNION ALL SELECT view_name, database_name, schema_name FROM duckdb_views()) "
         f"WHERE n = ? AND {cond}")
    return cur.execute(q, [name, *args]).fetchall()[0][0] > 0


def describe(cur: duckdb.DuckDBPyConnection, from_sql: str) -> dict[str, str]:
    """Column name -> DuckDB type of a source expression."""
    try:
        rows = cur.execute(f"DESCRIBE SELECT * FROM {from_sql}").fetchall()
    except duckdb.Error as exc:
        raise SpecError(f"Cannot read the source: {exc}") from None
    return {r[0]: r[1] for r in rows}


def require_columns(columns: dict[str, str], wanted: list[str], role: str, source: str) -> None:
    for col in wanted:
        if col not in columns:
            raise SpecError(
                f"The {role} column {col!r} does not exist in source {source!r}."
                f"{closest(col, columns)} Available columns: "
                f"{', '.join(repr(c) for c in columns)}."
            )


def find_key(cur, source: str, columns: dict[str, str]) -> str:
    """The obvious id column of a source: a single-column primary key, else 'id'."""
    try:
        rows = cur.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() WHERE constraint_type = "
            "'PRIMARY KEY' AND table_name = ? AND len(constraint_column_names) = 1",
            [source.strip()]).fetchall()
    except duckdb.Error:
        rows = []
    if rows:
        return rows[0][0][0]
    if "id" in columns:
        return "id"
    raise DataError(
        f"Source {source!r} has no obvious key (no single-column PRIMARY KEY and no 'id' "
        f"column). Pass id := '<column>' naming a unique column; columns: "
        f"{', '.join(repr(c) for c in columns)}."
    )


def source_sql_unchecked(source: str) -> str:
    """Like :func:`source_sql` but without a catalog lookup, so CTE names work
    (used inside queries, where the binder reports unknown names itself)."""
    s = source.strip()
    if s.startswith("(") and s.endswith(")"):
        return f"{s} AS __dc_source"
    if _FILE_RE.search(s):
        return f"{quote_literal(s)} AS __dc_source"
    if '"' not in s and "." not in s:
        return quote_ident(s)
    return ".".join(quote_ident(p) for p in _split_qualified(s))
