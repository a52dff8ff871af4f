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
    """Print (columns, DuckDB types, rows) as a table: at most ``max_rows``, then a count.

    Like the DuckDB CLI, columns that do not fit the console's width are hidden
    from the middle and replaced by one "…" column.
    """
    if result is None:
        return
    columns, types, tbl = result
    head = tbl.slice(0, max_rows)
    cells = [[cell(v) for v in head.column(i).to_pylist()] for i in range(len(columns))]
    headers = [(name, typ.lower()) for name, typ in zip(columns, types)]
    keep = _visible_columns(headers, cells, console.width)
    table = Table(show_lines=False, header_style="bold")
    for i in keep:
        if i is None:
            table.add_column("…", no_wrap=True)
            continue
        name, typ = headers[i]
        table.add_column(f"{name}\n[dim]{typ}[/dim]", overflow="ellipsis", no_wrap=True,
                         min_width=min(len(name), 12))
    for r in range(head.num_rows):
        table.add_row(*("…" if i is None else cells[i][r] for i in keep))
    console.print(table)
    hidden = len(columns) - len([i for i in keep if i is not None])
    notes = []
    if tbl.num_rows > max_rows:
        notes.append(f"{tbl.num_rows:,} rows; showing the first {max_rows}")
    if hidden:
        notes.append(f"{hidden} of {len(columns)} columns hidden (widen the terminal or "
                     "select fewer columns)")
    if notes:
        console.print(f"[dim]{'; '.join(notes)}[/dim]")


def _visible_columns(headers, cells, width: int) -> list[int | None]:
    """Column indexes to show, with None where hidden middle columns are."""
    widths = [max([len(h[0]), len(h[1])] + [len(c) for c in col]) + 3
              for h, col in zip(headers, cells)]
    if sum(widths) + 1 <= width:
        return list(range(len(widths)))
    left, right, used = [], [], 1 + 4  # border + the "…" column
    lo, hi = 0, len(widths) - 1
    while lo <= hi:  # alternate from both ends, as the DuckDB CLI does
        take_left = len(left) <= len(right)
        i = lo if take_left else hi
        if used + widths[i] > width and (left or right):
            break
        used += widths[i]
        if take_left:
            left.append(lo)
            lo += 1
        else:
            right.insert(0, hi)
            hi -= 1
    return left + [None] + right
