"""duckcluster: GROUP BY over embedding space, from DuckDB SQL.

>>> import duckcluster
>>> con = duckcluster.connect()          # in-memory database with every function installed
>>> con.sql("SELECT count(*) FROM cluster_list()").fetchall()
[(0,)]
>>> con.close()
"""

import atexit
import weakref

import duckdb

from ._errors import (
    DatabaseBusyError,
    DataError,
    DuckclusterError,
    MissingDependencyError,
    ResourceError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SpecError,
    UnknownNameError,
)
from ._version import __version__
from .catalog import read_side
from .catalog import runs as _catalog
from .core.spec import ClusterSpec

__all__ = [
    "DEFAULT_STORAGE_VERSION",
    "ClusterSpec",
    "DatabaseBusyError",
    "DataError",
    "DuckclusterError",
    "MissingDependencyError",
    "ResourceError",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "SpecError",
    "UnknownNameError",
    "__version__",
    "connect",
    "install",
    "sql",
]

#: Storage format written by default: files open in DuckDB 1.4 and later.
DEFAULT_STORAGE_VERSION = "v1.4.0"

_connections: "weakref.WeakSet[duckdb.DuckDBPyConnection]" = weakref.WeakSet()


def connect(path: str | None = None, *, artifacts_dir: str | None = None,
            read_only: bool = False, storage_version: str = DEFAULT_STORAGE_VERSION,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB database with every duckcluster function installed.

    path: database file, default None (in memory). artifacts_dir: where run
    Parquet files go, default ``<db>.artifacts`` next to the file.
    storage_version: ``'v1.4.0'`` (default, readable by DuckDB 1.4+) or
    ``'latest'`` for the newest, smaller format.
    """
    cfg = dict(config or {})
    if storage_version and not read_only:
        cfg.setdefault("storage_compatibility_version", storage_version)
    try:
        con = duckdb.connect(path if path is not None else ":memory:", read_only=read_only,
                             config=cfg)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise _busy(path, read_only, exc) from None
    try:
        install(con, artifacts_dir=artifacts_dir)
    except BaseException:
        con.close()
        raise
    return con


def _busy(path: str | None, read_only: bool, exc: Exception) -> DatabaseBusyError:
    """What a lock conflict means. DuckDB lets several processes open a file read-only
    together, but a process holding it read-write holds it alone: nobody else can open it
    then, not even read-only (checked with DuckDB 2.0)."""
    import re

    text = str(exc)
    pid = re.search(r"\(PID (\d+)\)", text)
    who = f"another process (PID {pid.group(1)})" if pid else "another process"
    if "read-only mode" in text:  # DuckDB's hint: the holder has it open read-only
        return DatabaseBusyError(
            f"{path} is open read-only in {who}, and DuckDB lets a process write to a file "
            "only while no other process has it open. Close it there (an exporter, a BI tool, "
            "a notebook), or open it here with read_only=True to read runs and results. "
            f"DuckDB said: {text}")
    if read_only:
        return DatabaseBusyError(
            f"{path} is open for writing in {who}, and DuckDB does not let another process "
            "open a file, not even read-only, while one holds it for writing. Wait for it to "
            "close the file (a duckcluster scheduler holds it only while a tick works), or "
            "read from that process (its connections share the file). DuckDB said: "
            f"{text}")
    return DatabaseBusyError(
        f"{path} is open for writing in {who}, and DuckDB allows one writer per file and no "
        "other process while it writes (read_only=True does not help then). Close it there, "
        "or wait for its run to finish, and retry. DuckDB said: "
        f"{text}")


def install(con: duckdb.DuckDBPyConnection, *, artifacts_dir: str | None = None
            ) -> duckdb.DuckDBPyConnection:
    """Install duckcluster's catalog and SQL functions on an existing connection or cursor.

    Idempotent. TEMP macros are per connection, so call it on each ``con.cursor()``
    you run duckcluster SQL on. Runs left 'running' by a dead process are marked
    'abandoned' here.
    """
    from . import functions as _sql

    try:  # DuckDB's progress bar prints to stdout mid-query; duckcluster shows its own
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:  # Jupyter without ipywidgets: it is off already
        pass
    # a cursor of an installed connection (dbt models, jupysql queries): the catalog
    # exists and abandoned runs were swept; the connection's own functions are missing
    installed = artifacts_dir is None and _sql._has_udfs(con)
    read_only = _is_read_only(con)
    if not read_only and not installed:
        _catalog.ensure(con)
        read_side.ensure_members_views(con)  # ids in their own type (older files too)
        read_side.ensure_persistent(con)  # the read side persisted in the file
    has_catalog = _has_catalog(con)
    settings = _catalog.Settings(
        artifacts_dir=_catalog.resolve_artifacts_dir(con, artifacts_dir) if has_catalog
        else (artifacts_dir or ""))
    if not read_only and not installed:
        _catalog.mark_abandoned(con, _sql._ACTIVE_PIDS, settings)
    try:
        _sql.register(con, settings, has_catalog=has_catalog)
    except (duckdb.BinderException, duckdb.CatalogException):
        from .catalog import missing_columns

        missing = missing_columns(con) if read_only and has_catalog else []
        if not missing:
            raise
        raise DataError(
            "This database's duckcluster catalog was last written by an older duckcluster: it "
            f"lacks {', '.join(missing)}, which this version reads, and a read-only "
            "connection cannot add them. Open it read-write once (duckcluster.connect(path)) "
            "to upgrade it in place; read-only connections work after that.") from None
    _sql.set_default_display(_stderr_progress)
    _connections.add(con)
    return con


def _stderr_progress():
    """The progress line plain scripts get on stderr (see functions/_registry.PROGRESS_ENV)."""
    from .cli.progress import ProgressDisplay

    return ProgressDisplay()


def _has_catalog(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute(
        "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'duckcluster' "
        "AND database_name = current_database()").fetchall()[0][0] > 0


def _is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = "
                      "current_database()").fetchall()
    return bool(row and row[0][0])


def sql(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation | None:
    """Run a query or script that may use ``CLUSTER BY EMBEDDING(...) USING algo(...)``.

    Returns the relation of the last statement (None if it returns no rows).
    """
    from ._syntax import rewrite, split_statements
    from .cli import hints as _hints

    statements = [s for s in split_statements(rewrite(query)) if s.strip().strip(";").strip()]
    result = None
    for stmt in statements:
        result = _hints.sql(con, stmt)  # a misspelled macro argument is named in the error
    return result


@atexit.register
def _close_all() -> None:
    # Connections holding Python UDFs print nanobind leak warnings if alive at exit.
    for con in list(_connections):
        try:
            con.close()
        except Exception:
            pass
