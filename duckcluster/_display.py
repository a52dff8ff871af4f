"""Render query results as tables, like the DuckDB CLI's boxes (used by the CLI and shell)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

MAX_ROWS = 40
MAX_CELL = 60


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)) and len(value) > 6:
        head = ", ".join(cell(v) for v in value[:3])
        text = f"[{head}, … {len(value) - 3} more]"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(cell(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def print_result(console: Console, result: tuple[list[str], list[str], pa.Table] | None,
                 max_rows: int = MAX_ROWS) -> None:
    """Print (columns, DuckDB types, rows) as a table: at most ``max_rows``, then a count."""
    if result is None:
        return
    columns, types, tbl = result
    table = Table(show_lines=False, header_style="bold")
    for name, typ in zip(columns, types):
        table.add_column(f"{name}\n[dim]{typ.lower()}[/dim]", overflow="ellipsis",
                         no_wrap=True, min_width=min(len(name), 12))
    for row in tbl.slice(0, max_rows).to_pylist():
        table.add_row(*(cell(v) for v in row.values()))
    console.print(table)
    if tbl.num_rows > max_rows:
        console.print(f"[dim]{tbl.num_rows:,} rows; showing the first {max_rows}[/dim]")
