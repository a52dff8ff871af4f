"""Sources and identifiers: turn user strings into safely quoted SQL.

A source is a table or view name (optionally qualified), a Parquet/CSV path or
glob (or any URL DuckDB reads), or a query in parentheses. Identifiers are always
quoted; no user string is pasted into SQL unquoted.

A query source is pasted as SQL, so it must be exactly one query: DuckDB's own
parser (:func:`check_query`) proves that the text between the outer parentheses is
one SELECT-like statement (SELECT, FROM-first, VALUES, WITH, UNION, DESCRIBE, SHOW,
SUMMARIZE, PIVOT) before anything runs; a second statement, any other statement
(DROP, INSERT, COPY, ATTACH, PRAGMA, SET, INSTALL, LOAD...) and a ``;`` outside
strings and comments, even a trailing one with nothing after it, are refused with a
:class:`SpecError`. Semicolons inside strings, quoted names and comments are fine.
Every caller that describes or executes a source goes through :func:`source_sql` or
:func:`source_sql_unchecked`, so a stored definition is checked again each time it
runs (a multi-statement source written by an older version never runs).
"""

from __future__ import annotations

import json
import re
import threading

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


_PARSER = threading.local()
#: Statement types a query source may be: SELECT covers FROM-first, VALUES, WITH,
#: UNION, DESCRIBE, SHOW and SUMMARIZE; PIVOT parses as MULTI (checked below).
_QUERY_TYPES = ("SELECT", "MULTI")
#: Data-modifying nodes in DuckDB's serialized parse tree (a WITH clause may hold them).
#: A string literal holding this text is escaped in the JSON, so it cannot match.
_WRITES = re.compile(r'"type":"(INSERT|UPDATE|DELETE|MERGE_INTO|MERGE)_QUERY_NODE"')
_QUERY_HELP = ("A query source is one SELECT in parentheses, such as "
               "'(SELECT * FROM docs WHERE lang = ''en'')'.")


def _parser() -> duckdb.DuckDBPyConnection:
    """A private in-memory connection per thread, used only to parse (never to run)."""
    con = getattr(_PARSER, "con", None)
    if con is None:
        con = _PARSER.con = duckdb.connect(":memory:")
    return con


def is_query(source: str) -> bool:
    """Whether a source string is a query in parentheses (checked by :func:`check_query`)."""
    s = source.strip()
    return s.startswith("(") and s.endswith(")")


def check_query(source: str) -> str:
    """The text inside the parentheses of a query source, proven to be one query.

    DuckDB's parser must read the inner text as exactly one SELECT-like statement
    with no ``;`` token (semicolons inside strings, quoted names and comments are
    not tokens), and the text as it will run (``(inner) AS __dc_source`` after
    FROM) as one statement again. Raises :class:`SpecError` before anything is
    executed otherwise.
    """
    s = source.strip()
    inner = s[1:-1]
    shown = s if len(s) <= 120 else s[:117] + "..."
    if "\x00" in inner:
        raise SpecError("A query source cannot contain a NUL character.")
    try:
        tokens = duckdb.tokenize(inner)
    except duckdb.Error:  # the parser below says what is wrong
        tokens = []
    semis = [i for i, (pos, kind) in enumerate(tokens)
             if kind == duckdb.token_type.operator and inner[pos] == ";"]
    if semis:
        rest = [t for t in tokens[semis[0] + 1:] if t[1] != duckdb.token_type.comment
                and not (t[1] == duckdb.token_type.operator and inner[t[0]] == ";")]
        if rest:
            raise SpecError(
                f"The query source {shown!r} holds more than one statement; a source must "
                "be exactly one query, and nothing of it was run. Remove the ';' and "
                f"everything after it. {_QUERY_HELP}")
        raise SpecError(
            f"The query source {shown!r} ends with ';'. A source is one query inside "
            "parentheses, not a statement: remove the ';'.")
    try:
        statements = _parser().extract_statements(inner)
    except duckdb.Error as exc:
        raise _unparsable(shown, exc) from None
    if not statements:
        raise SpecError(f"The query source {shown!r} is empty. {_QUERY_HELP}")
    if len(statements) > 1:
        raise SpecError(
            f"The query source {shown!r} holds {len(statements)} statements; a source must "
            f"be exactly one query, and nothing of it was run. {_QUERY_HELP}")
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind not in _QUERY_TYPES or (kind == "MULTI" and not _is_pivot(inner, tokens)):
        article = "an" if kind[:1] in "AEIOU" else "a"
        raise SpecError(
            f"The query source {shown!r} is {article} {kind} statement; a source must be one "
            f"SELECT-like query, and nothing of it was run. {_QUERY_HELP}")
    try:  # the text as it runs, after FROM, is one statement too
        wrapped = _parser().extract_statements(f"SELECT * FROM (\n{inner}\n) AS __dc_source")
    except duckdb.Error as exc:
        raise _unparsable(shown, exc) from None
    if len(wrapped) != 1:
        raise SpecError(
            f"The query source {shown!r} holds {len(wrapped)} statements; a source must "
            f"be exactly one query, and nothing of it was run. {_QUERY_HELP}")
    if kind == "SELECT":
        tree = _parser().execute("SELECT json_serialize_sql(?)", [inner]).fetchall()[0][0]
        found = _WRITES.search(tree or "")
        if found:
            raise SpecError(
                f"The query source {shown!r} holds a data-modifying statement "
                f"({found.group(1)}) in a WITH clause; a source must only read, and nothing "
                f"of it was run. {_QUERY_HELP}")
    return inner


def _unparsable(shown: str, exc: Exception) -> SpecError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SpecError(f"Cannot parse the query source {shown!r}: {first}. {_QUERY_HELP}")


def _is_pivot(inner: str, tokens) -> bool:
    """A MULTI statement that is a PIVOT/UNPIVOT (the only MULTI a subquery can be)."""
    kws = [inner[p:].split(None, 1)[0].upper() for p, k in tokens
           if k == duckdb.token_type.keyword][:1]
    return kws in (["PIVOT"], ["UNPIVOT"], ["PIVOT_WIDER"], ["PIVOT_LONGER"])


def _query_sql(source: str) -> str:
    """A checked query source as a FROM item. The inner text goes on its own lines, so
    a trailing ``--`` comment cannot swallow the closing parenthesis."""
    return f"(\n{check_query(source)}\n) AS __dc_source"


def _refuse_open_paren(s: str) -> None:
    """A source that opens a parenthesis but does not end with one is a query with
    something after it (``(SELECT ...); DROP ...``): refused, never read as a name/path."""
    if s.startswith("("):
        shown = s if len(s) <= 120 else s[:117] + "..."
        raise SpecError(
            f"Source {shown!r} starts with '(' but does not end with ')'. A query source is "
            "exactly one query in parentheses with nothing after the closing ')' (a ';' and a "
            f"second statement are refused). {_QUERY_HELP}")


def source_sql(cur: duckdb.DuckDBPyConnection, source: str) -> str:
    """Return a SQL table expression (usable after FROM) for a user source string."""
    s = source.strip()
    if is_query(s):
        return _query_sql(s)
    _refuse_open_paren(s)
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
             "temporary UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary) "
             "WHERE lower(n) = lower(?)")  # DuckDB names are case-insensitive, even quoted
        return cur.execute(q, [name]).fetchall()[0][0] > 0
    if len(qual) == 1:
        cond = "(lower(schema_name) = lower(?) OR lower(database_name) = lower(?))"
        args = [qual[0], qual[0]]
    elif len(qual) == 2:
        cond, args = "lower(database_name) = lower(?) AND lower(schema_name) = lower(?)", qual
    else:
        return False
    q = (f"SELECT count(*) FROM (SELECT table_name n, database_name, schema_name FROM duckdb_tables() "
         f"UNION ALL SELECT view_name, database_name, schema_name FROM duckdb_views()) "
         f"WHERE lower(n) = lower(?) AND {cond}")
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
            "'PRIMARY KEY' AND lower(table_name) = lower(?) AND len(constraint_column_names) = 1",
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
    if is_query(s):
        return _query_sql(s)
    _refuse_open_paren(s)
    if _FILE_RE.search(s):
        return f"{quote_literal(s)} AS __dc_source"
    if '"' not in s and "." not in s:
        return quote_ident(s)
    return ".".join(quote_ident(p) for p in _split_qualified(s))


def name_bad_file(cur, source: str, select: str, exc: BaseException) -> BaseException:
    """The error to raise when reading a file source failed: a DataError naming the file
    (DuckDB's message sometimes does not, e.g. 'Out of buffer' from a damaged page), or
    ``exc`` itself for other sources. Each file of a glob is read again, on this failure
    path only, until one fails the same way."""
    import pyarrow as pa

    s = source.strip()
    if s.startswith("(") or not _FILE_RE.search(s):
        return exc
    text = str(exc).strip()
    try:
        with cur.cursor() as c:
            files = [r[0] for r in c.execute("SELECT file FROM glob(?) ORDER BY file",
                                             [s]).fetchall()]
            bad = next((f for f in files if f in text), None)
            for f in files if bad is None else ():
                try:
                    r = c.sql(f"SELECT {select} FROM {quote_literal(f)}").to_arrow_reader(
                        65_536)
                    try:
                        for _ in r:
                            pass
                    finally:
                        r.close()
                except (duckdb.Error, OSError, pa.ArrowException) as e:
                    bad, text = f, str(e).strip()
                    break
    except duckdb.Error:
        return exc
    if bad is None:
        return exc
    kind = "CSV" if ".csv" in bad.lower() or ".tsv" in bad.lower() else "Parquet"
    where = f" (one of the {len(files)} files matching {source!r})" if len(files) > 1 else ""
    return DataError(f"Cannot read {bad!r}{where}: {text.rstrip('.')}. The file is damaged or "
                     f"is not a {kind} file: rewrite it, or move it out of the way, and run "
                     "again.")


def validate_text_expression(cur, expr: str) -> None:
    """``text`` must be one SQL expression (DuckDB's own parser decides)."""
    raw = cur.execute("SELECT json_serialize_sql(?)", ["SELECT " + expr]).fetchall()[0][0]
    tree = json.loads(raw)
    ok = not tree.get("error") and len(tree.get("statements", [])) == 1
    if ok:
        node = tree["statements"][0]["node"]
        ok = (node.get("type") == "SELECT_NODE" and node["from_table"]["type"] == "EMPTY"
              and len(node["select_list"]) == 1 and node["select_list"][0]["class"] != "STAR"
              and not node.get("modifiers") and node.get("where_clause") is None
              and not node.get("group_expressions") and not node["cte_map"]["map"])
    if not ok:
        raise SpecError(f"text must be a column name or one SQL expression over the source's "
                        f"columns, like 'title || '' '' || body'. Got {expr!r}.")
