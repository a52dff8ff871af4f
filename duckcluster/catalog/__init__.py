"""The catalog: the only code that reads and writes ``duckcluster.*`` tables and run artifacts.

``runs`` holds definitions, runs, members, centroids and projections; ``labels`` and
``ops`` the tables of those areas. This module holds what they share: the DDL files, the
per-connection :class:`Settings`, :func:`ensure` (create + migrate) and the list of tables
whose rows belong to one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import re
from importlib import resources

import duckdb

from .._errors import DuckclusterError

#: Version of the catalog layout this code writes. Bump it with an entry in
#: :data:`MIGRATIONS` when a change needs more than the idempotent DDL files
#: (``CREATE ... IF NOT EXISTS``, ``ADD COLUMN IF NOT EXISTS``) already do.
CATALOG_VERSION = 2


def _partitions(cur: duckdb.DuckDBPyConnection) -> None:
    """2: ``partition_by`` definitions. Members, centroids and lineage rows get a nullable
    ``partition`` column (NULL for every existing row: they are unpartitioned). The DDL file
    adds them too (a catalog created by the stock CLI from ``catalog.sql``); the version
    keeps an older duckcluster, which would assign rows across partitions, off the file."""
    for table in ("members", "centroids", "lineage"):
        cur.execute(f"ALTER TABLE duckcluster.{table} ADD COLUMN IF NOT EXISTS partition VARCHAR")


#: version -> step that brings a catalog of ``version - 1`` to ``version``; each runs in
#: the transaction of :func:`ensure`, after the DDL files.
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {2: _partitions}

#: Catalog tables whose rows belong to one definition through a ``name`` column;
#: ``cluster_delete(..., drop_artifacts := true)`` empties them for that name. Webhooks
#: with name NULL (every definition) are kept.
DEFINITION_TABLES: tuple[str, ...] = (
    "members", "centroids", "projections", "partition_projections", "map_references",
    "lineage", "cluster_id_marks",
    "runs",  # runs
    "labels", "label_failures", "enrichments",                           # labels
    "triggers", "trigger_firings", "drift_checks", "webhooks", "webhook_deliveries",  # ops
)


@dataclass
class Settings:
    """Per-connection settings: where artifacts go."""

    artifacts_dir: str


def _catalog_files() -> list[str]:
    folder = resources.files("duckcluster").joinpath("sql")
    return ["catalog.sql"] + sorted(p.name for p in folder.iterdir()
                                    if p.name.startswith("catalog_") and p.name.endswith(".sql"))


def missing_columns(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """The catalog tables (``table t``) and the columns a later duckcluster added to an
    existing catalog (``t.column``, the DDL files' ``ADD COLUMN IF NOT EXISTS``) that this
    database lacks: a file last written by an older version, which only a read-write
    :func:`ensure` upgrades."""
    ddl = "\n".join(sql_text(name) for name in _catalog_files())
    added = set(re.findall(r"ALTER TABLE duckcluster\.(\w+) ADD COLUMN IF NOT EXISTS (\w+)", ddl))
    created = set(re.findall(r"CREATE TABLE IF NOT EXISTS duckcluster\.(\w+)", ddl))
    have = set(cur.execute("SELECT table_name, column_name FROM duckdb_columns() "
                           "WHERE schema_name = 'duckcluster'").fetchall())
    tables = {t for t, _ in have}
    return sorted([f"table {t}" for t in created - tables]
                  + [f"{t}.{c}" for t, c in added if t in tables and (t, c) not in have])


def sql_text(filename: str) -> str:
    """Text of a file in the package's ``sql/`` folder."""
    return resources.files("duckcluster").joinpath("sql", filename).read_text(encoding="utf-8")


def ensure(cur: duckdb.DuckDBPyConnection) -> None:
    """Create the catalog schema and tables if missing, then migrate it (idempotent).

    Runs ``sql/catalog.sql``, then every ``sql/catalog_<area>.sql`` (drift, labels...)
    in name order, then the :data:`MIGRATIONS` above the stored ``catalog_version``.
    A catalog written by a newer duckcluster is refused before anything changes.
    """
    stored = _stored_version(cur)
    if stored is not None and stored > CATALOG_VERSION:
        raise DuckclusterError(
            f"This database's duckcluster catalog is version {stored}, written by a newer "
            f"duckcluster; this one understands up to version {CATALOG_VERSION}. Upgrade "
            "duckcluster (pip install -U duckcluster), or open the file read-only "
            "(read_only=True) to read its results with the SQL read side.")
    for name in _catalog_files():  # catalog.sql, then catalog_<area>.sql in name order
        cur.execute(sql_text(name))
    version = _stored_version(cur) or 1
    for step in range(version + 1, CATALOG_VERSION + 1):
        MIGRATIONS[step](cur)
    if version != CATALOG_VERSION:
        cur.execute("UPDATE duckcluster.meta SET value = ? WHERE key = 'catalog_version'",
                    [str(CATALOG_VERSION)])


def _stored_version(cur: duckdb.DuckDBPyConnection) -> int | None:
    """The ``catalog_version`` in ``duckcluster.meta``, or None for a database without one."""
    try:
        row = cur.execute("SELECT value FROM duckcluster.meta WHERE key = 'catalog_version'"
                          ).fetchall()
    except duckdb.CatalogException:
        return None
    return int(row[0][0]) if row else None
