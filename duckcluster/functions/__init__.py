"""Registration of duckcluster's SQL functions on a DuckDB connection.

DuckDB 2.0 Python UDFs are scalar and positional-only, so every public function
is a TEMP macro (named ``:=`` arguments with defaults) over a private ``_dc_*``
UDF. The read side comes from ``sql/duckcluster.sql`` unchanged; Python then
replaces ``assign_cluster`` with a vectorized Arrow UDF under the same name.
This is the only package that calls ``create_function``.
"""

from __future__ import annotations

import duckdb

from ..catalog import read_side
from ..catalog import runs as catalog
from . import core, drift, labels, ops, scaleout
from ._registry import (
    _ACTIVE_PIDS,
    _REGISTERED,
    _has_udfs,
    _Registrar,
    _State,
    cancel_requested,
    clear_cancel,
    request_cancel,
    set_default_display,
    set_progress,
)

__all__ = ["AREAS", "register", "unregister", "set_progress", "set_default_display",
           "request_cancel", "clear_cancel", "cancel_requested", "_has_udfs", "_ACTIVE_PIDS"]

#: Modules that add the SQL functions of one feature area. Each has
#: ``register_udfs(reg, state)``, called for every connection with a
#: :class:`~duckcluster.functions._registry._Registrar` standing in for it, and
#: ``MACROS``: SQL text of its ``CREATE OR REPLACE TEMP MACRO`` statements; calls of
#: its UDFs in them are pointed at the connection's own copies.
AREAS = (core, labels, drift, ops, scaleout)


def register(con: duckdb.DuckDBPyConnection, settings: catalog.Settings,
             has_catalog: bool = True) -> None:
    """Register this connection's UDFs (see :class:`_Registrar`) and TEMP macros.

    Without a catalog (a read-only file duckcluster never wrote) only the macros
    that need no catalog table are created: DuckDB checks table names when a
    macro is created.
    """
    if con in _REGISTERED:
        unregister(con)
    state = _State(con, settings)
    reg = _Registrar(con)
    for area in AREAS:
        area.register_udfs(reg, state)
    reg.create_macros()
    _REGISTERED[con] = reg
    if has_catalog:  # a read-only file duckcluster never wrote has nothing to read yet
        text = catalog.sql_text("duckcluster.sql")
        if read_side.has_members_dispatch(con):  # else read-only, last written before it:
            text = read_side.dispatched(text)    # the file's own lookup, as in the stock CLI
        con.execute(text)  # (a definition from before typed ids reads text ids: no view)
    # after the read side: the Python assign_cluster replaces the pure-SQL one
    con.execute(reg.rewrite(core.MACROS))
    if not has_catalog:
        return
    for area in AREAS[1:]:
        con.execute(reg.rewrite(area.MACROS))


def unregister(con: duckdb.DuckDBPyConnection) -> None:
    """Remove this connection's private UDFs (so a later install registers afresh)."""
    reg = _REGISTERED.pop(con, None)
    if reg is not None:
        reg.remove()


def reference_markdown() -> str:
    """``docs/functions.md``: every public SQL function, from the declarations and the
    hand-written SQL (``python -m duckcluster.functions > docs/functions.md``)."""
    from ._declare import hand_written, reference_row

    rows = ["# SQL function reference", "",
            "Generated from the declarations in `duckcluster/functions/` and the hand-written "
            "SQL (`python -m duckcluster.functions > docs/functions.md`; a test keeps it "
            "current). *read side*: pure SQL in `sql/duckcluster.sql`, the same in the stock "
            "DuckDB CLI, and stored in every database file duckcluster writes as "
            "`duckcluster.<name>(...)`, which any DuckDB client calls with no set-up; "
            "*Python*: needs a duckcluster connection.", "",
            "| function | kind | what it does | where |", "|---|---|---|---|"]
    seen = set()
    for area in AREAS:
        declared = getattr(area, "FUNCTIONS", ())
        for f in declared:
            rows.append(reference_row(f)[:-1] + f"| Python ({area.__name__.rsplit('.', 1)[1]}) |")
            seen.add(f.name)
        for name, sig, kind, doc in hand_written(area.MACROS):
            if name not in seen:
                seen.add(name)
                rows.append(f"| `{name}({sig})` | {kind} | {doc} | Python "
                            f"({area.__name__.rsplit('.', 1)[1]}, hand-written) |")
    for name, sig, kind, doc in hand_written(catalog.sql_text("duckcluster.sql")):
        where = "read side (Python replaces it)" if name in seen else "read side"
        rows.append(f"| `{name}({sig})` | {kind} | {doc} | {where} |")
    return "\n".join(rows) + "\n"

