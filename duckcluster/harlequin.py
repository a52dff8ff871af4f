"""Harlequin adapter: the Harlequin SQL IDE on DuckDB with every duckcluster function.

    pip install 'duckcluster[harlequin]'
    harlequin -a duckcluster analytics.duckdb

Harlequin's init script runs SQL only, so Python functions need an adapter. This
one is Harlequin's DuckDB adapter (same options: ``--read-only``, ``--init-path``,
``--extension``...) whose connection has :func:`duckcluster.install` run on it.
On top: queries may use ``CLUSTER BY EMBEDDING(...) USING algo(...)``, the
autocomplete offers duckcluster's functions, and a database file it creates
uses duckcluster's default storage version (DuckDB 1.4 and later open it).
"""

from __future__ import annotations

import os

from harlequin.autocomplete.completion import HarlequinCompletion
from harlequin.exception import HarlequinQueryError
from harlequin_duckdb.adapter import DuckDbAdapter, DuckDbConnection, DuckDbCursor

from . import connect, install
from ._errors import DuckclusterError, user_message

__all__ = ["DuckClusterAdapter", "DuckClusterConnection", "DuckClusterCursor"]


def _one_line(exc: HarlequinQueryError) -> HarlequinQueryError:
    """Harlequin's error with the message a DuckDB user expects: duckcluster's errors as
    one line ``ClassName: message`` (see :func:`duckcluster._errors.user_message`)."""
    cause = exc.__cause__
    if cause is None:
        return exc
    return HarlequinQueryError(msg=user_message(cause), title=exc.title)


class DuckClusterCursor(DuckDbCursor):
    """Harlequin's DuckDB cursor whose errors (raised when the rows are fetched) read clean."""

    def fetchall(self):
        try:
            return super().fetchall()
        except HarlequinQueryError as exc:
            raise _one_line(exc) from exc.__cause__

    def fetchone(self):
        try:
            return super().fetchone()
        except HarlequinQueryError as exc:
            raise _one_line(exc) from exc.__cause__


class DuckClusterConnection(DuckDbConnection):
    """Harlequin's DuckDB connection plus the CLUSTER BY EMBEDDING rewrite, completions and
    one-line errors."""

    def execute(self, query: str) -> DuckDbCursor | None:
        from ._syntax import has_cluster_syntax, rewrite

        if has_cluster_syntax(query):
            try:
                query = rewrite(query)
            except DuckclusterError as exc:
                raise HarlequinQueryError(
                    msg=str(exc), title="duckcluster could not rewrite CLUSTER BY EMBEDDING:"
                ) from exc
        try:
            cur = super().execute(query)
        except HarlequinQueryError as exc:
            raise _one_line(exc) from exc.__cause__
        if type(cur) is DuckDbCursor:
            cur.__class__ = DuckClusterCursor
        return cur

    def get_completions(self) -> list[HarlequinCompletion]:
        # Harlequin lists functions outside the temp schema; duckcluster's are TEMP macros,
        # which a cursor only has after install().
        cur = install(self.conn.cursor())
        try:
            rows = cur.execute(
                "SELECT DISTINCT function_name, function_type FROM duckdb_functions() "
                "WHERE database_name = 'temp' AND NOT starts_with(function_name, '_')"
            ).fetchall()
        finally:
            cur.close()
        ours = [HarlequinCompletion(label=name, type_label="fn->T" if kind == "table_macro"
                                    else "fn", value=name, priority=1000, context="duckcluster")
                for name, kind in rows]
        return super().get_completions() + ours


class DuckClusterAdapter(DuckDbAdapter):
    """``harlequin -a duckcluster DB``: Harlequin's DuckDB adapter with duckcluster installed."""

    ADAPTER_DETAILS = ("DuckDB with every duckcluster function: cluster embeddings, assign "
                       "rows, quality and drift from SQL.")

    def connect(self) -> DuckClusterConnection:
        primary = self.conn_str[0]
        if (not self.read_only and primary not in ("", ":memory:") and "://" not in primary
                and not primary.startswith("md:") and not os.path.exists(primary)):
            connect(primary).close()  # create it in duckcluster's default storage version
        base = super().connect()
        install(base.conn)
        return DuckClusterConnection(conn=base.conn, init_message=base.init_message)
