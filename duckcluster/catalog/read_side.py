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
    return persistent_macros(sql_text("duckcluster.sql")) + "\n" + sql_text("read_views.sql")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_persistent(cur: duckdb.DuckDBPyConnection) -> bool:
    """Create or refresh the persistent macros and views when duckcluster's SQL changed.

    Returns True when it (re)created them. Needs a writable database with the catalog. An
    in-memory database is skipped: no other client can open it, and creating them costs
    about 0.1-0.2 s."""
    path = cur.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                       "current_database()").fetchall()
    if not path or not path[0][0] or path[0][0] == ":memory:":
        return False
    text = persistent_sql()
    want = digest(text)
    row = cur.execute("SELECT value FROM duckcluster.meta WHERE key = ?",
                      [READ_SIDE_KEY]).fetchall()
    if row and row[0][0] == want:
        return False
    cur.execute(text)
    cur.execute("INSERT OR REPLACE INTO duckcluster.meta VALUES (?, ?)", [READ_SIDE_KEY, want])
    return True
