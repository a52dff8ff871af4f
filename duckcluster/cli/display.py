"""Render query results the way the DuckDB CLI does, in its output modes.

    render(result, "duckbox", width=100)     the default: boxes, column types, numbers right
    render(result, "csv")                    csv, tabs, list, json, jsonlines, markdown, line,
                                             box, table, html, quote, insert, trash

Cell text comes from DuckDB itself (``CAST(v AS VARCHAR)``, ``to_json``), so values are
written exactly as the DuckDB CLI writes them; ``tests/test_shell.py`` compares every
text mode with the stock ``duckdb`` CLI byte for byte. Where this module differs on
purpose (the duckbox mode on a narrow terminal keeps short columns such as
``drift_detected`` and ``p_value`` and shrinks or hides the long ones, lists longer than
six values are abbreviated, widths count display cells, not bytes), README's shell
section lists it.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from rich.cells import cell_len

from .._errors import RunCancelledError

#: Rows the duckbox mode shows at most (the first and last half), as the DuckDB CLI.
MAX_ROWS = 40
#: Narrowest a column is squeezed to before columns are hidden.
MIN_WIDTH = 12
#: A list with more values than this is abbreviated in duckbox cells.
MAX_LIST = 6
#: Column names are cut (with "…") to no less than this when a table must shrink.
MAX_HEADER_FLOOR = 16
#: Columns hidden last when a table does not fit (booleans too): the verdicts and keys
#: of duckcluster's results.
KEY_COLUMNS = frozenset({
    "name", "id", "run_id", "cluster_id", "label", "status", "method", "statistic", "p_value",
    "drift_detected", "n_clusters", "should_recluster", "size", "share_delta", "new",
    "vanished"})

_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL(\(\d+,\s*\d+\))?)$")
_BULKY = re.compile(r"(^JSON$|^STRUCT|^MAP|^UNION|^BLOB$|\]$)")
# The DuckDB CLI names integer types by their width.
_SHORT_TYPES = {"TINYINT": "int8", "SMALLINT": "int16", "INTEGER": "int32", "BIGINT": "int64",
                "HUGEINT": "int128", "UTINYINT": "uint8", "USMALLINT": "uint16",
                "UINTEGER": "uint32", "UBIGINT": "uint64", "UHUGEINT": "uint128"}


@dataclass(frozen=True)
class Result:
    """One statement's result: column names, DuckDB type names, rows."""

    columns: list[str]
    types: list[str]
    table: pa.Table

    @classmethod
    def of(cls, rel: duckdb.DuckDBPyRelation) -> Result:
        return cls(list(rel.columns), [str(t) for t in rel.types], rel.to_arrow_table())


@dataclass
class Settings:
    """The shell's ``.mode``, ``.maxrows``, ``.maxwidth``, ``.headers`` and ``.nullvalue``."""

    mode: str = "duckbox"
    max_rows: int = MAX_ROWS
    max_width: int = 0  # 0: the terminal's width
    headers: bool = True
    null: str = "NULL"
    #: Rows end in CRLF in csv mode after the shell's ``.mode csv``, as in the DuckDB CLI
    #: (its ``-csv`` flag keeps LF).
    csv_crlf: bool = False


_formatter: duckdb.DuckDBPyConnection | None = None


def _text_columns(tbl: pa.Table, types: list[str], how: Callable[[str, str], str]
                  ) -> list[list[str | None]]:
    """Each column of ``tbl`` as text written by DuckDB: ``how(column_ref, type)`` is the
    SQL expression that turns one column into VARCHAR."""
    global _formatter
    if tbl.num_columns == 0:
        return []
    if _formatter is None:
        _formatter = duckdb.connect()
    renamed = tbl.rename_columns([f"c{i}" for i in range(tbl.num_columns)])
    rel = _formatter.from_arrow(renamed)
    exprs = [f"({how(f'c{i}', typ)})::VARCHAR" for i, typ in enumerate(types)]
    rows = rel.select(", ".join(exprs)).fetchall()
    return [[row[i] for row in rows] for i in range(tbl.num_columns)]


def _varchar(col: str, typ: str) -> str:
    return col


def _abbreviated(col: str, typ: str) -> str:
    if not typ.endswith("]"):
        return col
    element = re.sub(r"\[\d*\]$", "", typ)
    as_list = f"CAST({col} AS {element}[])"
    return (f"CASE WHEN len({as_list}) > {MAX_LIST} THEN '[' || "
            f"array_to_string(list_slice({as_list}, 1, 3), ', ') || ', … ' || "
            f"(len({as_list}) - 3) || ' more]' ELSE CAST({col} AS VARCHAR) END")


def _json_value(col: str, typ: str) -> str:
    if typ == "JSON":  # the DuckDB CLI writes a JSON value as it was stored
        return f"coalesce(CAST({col} AS VARCHAR), 'null')"
    if typ.startswith("DECIMAL") or typ in ("HUGEINT", "UHUGEINT"):
        return f"coalesce(to_json(CAST({col} AS VARCHAR)), 'null')"
    return f"coalesce(to_json({col}), 'null')"


def _is_numeric(typ: str) -> bool:
    return bool(_NUMERIC.match(typ))


def type_label(typ: str) -> str:
    """A type as the duckbox header shows it: ``int64``, ``double``, ``float[384]``."""
    if typ == '"NULL"':  # an untyped NULL; the DuckDB CLI shows it as INTEGER
        return "int32"
    head = re.match(r"^[A-Z]+", typ)
    if head and head.group(0) in _SHORT_TYPES:
        return _SHORT_TYPES[head.group(0)] + typ[head.end():].lower()
    return typ.lower()


# -- the text modes: every row, cell text from DuckDB --------------------------------------


def _csv_field(text: str, sep: str) -> str:
    if any(c in text for c in (sep, '"', "'")) or any(ord(c) < 0x20 or ord(c) >= 0x7f
                                                      for c in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _delimited(result: Result, settings: Settings, sep: str, quote: bool, eol: str) -> str:
    cols = _text_columns(result.table, result.types, _varchar)
    field = (lambda v: _csv_field(v, sep)) if quote else (lambda v: v)
    lines = [sep.join(field(c) for c in result.columns)] if settings.headers else []
    lines += [sep.join(settings.null if col[r] is None else field(col[r]) for col in cols)
              for r in range(result.table.num_rows)]
    return "".join(line + eol for line in lines)


def _csv(result: Result, settings: Settings) -> str:
    return _delimited(result, settings, ",", True, "\r\n" if settings.csv_crlf else "\n")


def _tabs(result: Result, settings: Settings) -> str:
    return _delimited(result, settings, "\t", False, "\n")


def _list(result: Result, settings: Settings) -> str:
    return _delimited(result, settings, "|", False, "\n")


def _json_rows(result: Result) -> list[str]:
    cols = _text_columns(result.table, result.types, _json_value)
    keys = [json.dumps(c, ensure_ascii=False) for c in result.columns]
    return ["{" + ",".join(f"{k}:{col[r]}" for k, col in zip(keys, cols)) + "}"
            for r in range(result.table.num_rows)]


def _json(result: Result, settings: Settings) -> str:
    return "[" + ",\n".join(_json_rows(result)) + "]\n"


def _jsonlines(result: Result, settings: Settings) -> str:
    return "".join(row + "\n" for row in _json_rows(result)) or "\n"


def _grid(result: Result, settings: Settings) -> tuple[list[str], list[list[str]], list[int]]:
    cols = _text_columns(result.table, result.types, _varchar)
    cells = [[settings.null if v is None else v for v in col] for col in cols]
    widths = [max([cell_len(h)] + [cell_len(v) for v in col])
              for h, col in zip(result.columns, cells)]
    return list(result.columns), cells, widths


def _center(text: str, width: int) -> str:
    pad = width - cell_len(text)
    return " " * (pad // 2) + text + " " * (pad - pad // 2)


def _left(text: str, width: int) -> str:
    return text + " " * (width - cell_len(text))


def _right(text: str, width: int) -> str:
    return " " * (width - cell_len(text)) + text


def _markdown(result: Result, settings: Settings) -> str:
    names, cells, widths = _grid(result, settings)
    lines = ["| " + " | ".join(_center(n, w) for n, w in zip(names, widths)) + " |",
             "|" + "|".join(("-" * (w + 1) + ":") if _is_numeric(t) else "-" * (w + 2)
                            for w, t in zip(widths, result.types)) + "|"]
    for r in range(result.table.num_rows):
        lines.append("| " + " | ".join(_left(col[r], w) for col, w in zip(cells, widths)) + " |")
    return "".join(line + "\n" for line in lines)


def _ruled(result: Result, settings: Settings, chars: str) -> str:
    """box and table modes: ``chars`` = corners/joins (┌┬┐├┼┤└┴┘), rule and bar."""
    names, cells, widths = _grid(result, settings)
    tl, tm, tr, ml, mm, mr, bl, bm, br, h, v = chars

    def rule(a: str, m: str, b: str) -> str:
        return a + m.join(h * (w + 2) for w in widths) + b

    def row(texts: list[str]) -> str:
        return v + v.join(f" {t} " for t in texts) + v

    lines = [rule(tl, tm, tr), row([_center(n, w) for n, w in zip(names, widths)]),
             rule(ml, mm, mr)]
    lines += [row([_left(col[r], w) for col, w in zip(cells, widths)])
              for r in range(result.table.num_rows)]
    lines.append(rule(bl, bm, br))
    return "".join(line + "\n" for line in lines)


def _box(result: Result, settings: Settings) -> str:
    return _ruled(result, settings, "┌┬┐├┼┤└┴┘─│")


def _table(result: Result, settings: Settings) -> str:
    return _ruled(result, settings, "+++++++++-|")


def _line(result: Result, settings: Settings) -> str:
    names, cells, _ = _grid(result, settings)
    width = max([5] + [cell_len(n) for n in names])  # at least 5, as the DuckDB CLI
    records = ["".join(f"{_right(n, width)} = {col[r]}\n" for n, col in zip(names, cells))
               for r in range(result.table.num_rows)]
    return "\n".join(records)


def _html(result: Result, settings: Settings) -> str:
    names, cells, _ = _grid(result, settings)
    esc = lambda s: html.escape(s, quote=True).replace("&#x27;", "&#39;")  # noqa: E731
    out = []
    if settings.headers:
        out.append("<tr>" + "\n".join(f"<th>{esc(n)}</th>" for n in names) + "\n</tr>\n")
    for r in range(result.table.num_rows):
        out.append("<tr>" + "\n".join(f"<td>{esc(col[r])}</td>" for col in cells) + "\n</tr>\n")
    return "".join(out)


def _sql_literal(text: str | None, typ: str, bare_bool: bool, lines: bool = False) -> str:
    if text is None:
        return "NULL"
    if _is_numeric(typ) or (bare_bool and typ == "BOOLEAN"):
        return text
    if lines and "\n" in text:  # the insert mode spells line breaks chr(10)
        return "concat(" + ", chr(10), ".join(_sql_literal(part, typ, bare_bool)
                                             for part in text.split("\n")) + ")"
    return "'" + text.replace("'", "''") + "'"


def _quote(result: Result, settings: Settings) -> str:
    cols = _text_columns(result.table, result.types, _varchar)
    lines = [",".join(_sql_literal(c, "VARCHAR", True) for c in result.columns)] \
        if settings.headers else []
    lines += [",".join(_sql_literal(col[r], t, True) for col, t in zip(cols, result.types))
              for r in range(result.table.num_rows)]
    return "".join(line + "\n" for line in lines)


def _insert(result: Result, settings: Settings) -> str:
    cols = _text_columns(result.table, result.types, _varchar)
    names = ",".join(_identifier(c) for c in result.columns)
    return "".join(
        f'INSERT INTO "table"({names}) VALUES('
        + ",".join(_sql_literal(col[r], t, False, True) for col, t in zip(cols, result.types))
        + ");\n" for r in range(result.table.num_rows))


_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_keywords: set[str] = set()


def _identifier(name: str) -> str:
    """A column name as the insert mode writes it: quoted if not plain or a keyword."""
    global _formatter
    if not _keywords:
        if _formatter is None:
            _formatter = duckdb.connect()
        _keywords.update(k for (k,) in _formatter.sql(
            "SELECT keyword_name FROM duckdb_keywords()").fetchall())
    if _PLAIN_NAME.match(name) and name not in _keywords:
        return name
    return '"' + name.replace('"', '""') + '"'


def _trash(result: Result, settings: Settings) -> str:
    return ""


# -- duckbox: the default, made for reading on a terminal ----------------------------------


def _shown_rows(n: int, max_rows: int) -> list[int | None]:
    """Row indexes to draw, None where the elided middle goes (first and last halves)."""
    if max_rows <= 0 or n <= max_rows:
        return list(range(n))
    half = max_rows // 2
    return list(range(half)) + [None] + list(range(n - (max_rows - half), n))


def _cell_text(text: str | None, null: str) -> str:
    if text is None:
        return null
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") \
        .replace("\t", "\\t") if any(c in text for c in "\n\r\t") else text


def _truncate(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _round(text: str, width: int) -> str:
    """A float's DuckDB text in ``width`` cells: fewer significant digits, never an "…"
    (down to 6 digits; past that it is truncated like any cell)."""
    if cell_len(text) <= width:
        return text
    try:
        value = float(text)
    except ValueError:
        return _truncate(text, width)
    for digits in range(16, 5, -1):
        short = f"{value:.{digits}g}"
        if len(short) <= width:
            return short
    return _truncate(f"{value:.6g}", width)


def _is_float(typ: str) -> bool:
    return typ in ("FLOAT", "DOUBLE")


def fit_columns(names: list[str], labels: list[str], types: list[str],
                cells: list[list[str]], width: int) -> tuple[list[int], list[int]]:
    """Which columns to draw in ``width`` cells, and how wide each is.

    Long columns are squeezed first, longest first: text down to :data:`MIN_WIDTH` (cut
    with "…"), floats down to 6 significant digits (rounded, see :func:`_round`),
    integers not at all. If that is not enough, columns are hidden: bulky ones (JSON,
    lists, structs, long text) widest first, then the others from the right, then the
    :data:`KEY_COLUMNS` and booleans, the first column last of all. So on a narrow
    terminal ``drift_detected`` and ``p_value`` stay and ``details`` goes.
    """
    natural = [max([cell_len(n), cell_len(t)] + [cell_len(c) for c in col])
               for n, t, col in zip(names, labels, cells)]
    floors = []
    for i, col in enumerate(cells):
        head = min(max(cell_len(names[i]), cell_len(labels[i])), MAX_HEADER_FLOOR)
        if _is_numeric(types[i]) and not _is_float(types[i]):
            floors.append(natural[i])
        elif _is_float(types[i]):
            floors.append(max([head] + [cell_len(_round(c, 0)) for c in col]))
        else:
            floors.append(min(natural[i], max(MIN_WIDTH, head)))
    keep = list(range(len(names)))

    def total(ws: list[int], hidden: bool) -> int:
        return sum(w + 3 for w in ws) + 1 + (4 if hidden else 0)

    def squeeze(idx: list[int], hidden: bool) -> list[int] | None:
        ws = [natural[i] for i in idx]
        if total(ws, hidden) <= width:
            return ws
        floor = [min(natural[i], floors[i]) for i in idx]
        if total(floor, hidden) > width:
            return None
        lo, hi = 1, max(ws)  # the widest cap that fits (water-filling)
        while lo < hi:
            cap = (lo + hi + 1) // 2
            if total([max(f, min(w, cap)) for w, f in zip(ws, floor)], hidden) <= width:
                lo = cap
            else:
                hi = cap - 1
        return [max(f, min(w, lo)) for w, f in zip(ws, floor)]

    bulky = sorted((i for i in keep if _BULKY.search(types[i]) or natural[i] > 30),
                   key=lambda i: (-natural[i], -i))
    rest = [i for i in reversed(keep) if i not in bulky and i != 0]
    key = [i for i in rest if names[i] in KEY_COLUMNS or types[i] == "BOOLEAN"]
    order = [i for i in bulky if i != 0] + [i for i in rest if i not in key] + key
    while True:
        ws = squeeze(keep, len(keep) < len(names))
        if ws is not None or len(keep) == 1:
            return keep, ws if ws is not None else [max(1, width - 8)]
        keep.remove(order.pop(0))


def _duckbox(result: Result, settings: Settings, width: int, color: bool) -> str:
    n = result.table.num_rows
    rows = _shown_rows(n, settings.max_rows)
    picked = [r for r in rows if r is not None]
    sub = result.table.take(pa.array(picked, type=pa.int64())) if picked else result.table.slice(0, 0)
    cols = _text_columns(sub, result.types, _abbreviated)
    cells = [[_cell_text(v, settings.null) for v in col] for col in cols]
    labels = [type_label(t) for t in result.types]
    keep, widths = fit_columns(result.columns, labels, result.types, cells, width)
    hidden_at = next((i for i, k in enumerate(keep) if k != i), len(keep)) \
        if len(keep) < len(result.columns) else None
    dim, bold, reset = ("\x1b[2m", "\x1b[1m", "\x1b[0m") if color else ("", "", "")

    slots: list[tuple[int | None, int]] = [(k, w) for k, w in zip(keep, widths)]
    if hidden_at is not None:
        slots.insert(hidden_at, (None, 1))

    def rule(a: str, m: str, b: str) -> str:
        return dim + a + m.join("─" * (w + 2) for _, w in slots) + b + reset

    def line(texts: list[str]) -> str:
        bar = dim + "│" + reset
        return bar + bar.join(f" {t} " for t in texts) + bar

    out = [rule("┌", "┬", "┐"),
           line([bold + _center(_truncate(result.columns[k], w), w) + reset if k is not None
                 else "…" for k, w in slots]),
           line([dim + _center(_truncate(labels[k], w), w) + reset if k is not None else "…"
                 for k, w in slots]),
           rule("├", "┼", "┤")]
    j = 0
    for r in rows:
        if r is None:
            for _ in range(3):
                out.append(line([_center("·", w) if k is not None else " " for k, w in slots]))
            continue
        texts = []
        for k, w in slots:
            if k is None:
                texts.append("…")
                continue
            text = _round(cells[k][j], w) if _is_float(result.types[k]) and \
                cols[k][j] is not None else _truncate(cells[k][j], w)
            null = cols[k][j] is None
            aligned = _right(text, w) if _is_numeric(result.types[k]) else _left(text, w)
            texts.append(dim + aligned + reset if null and color else aligned)
        out.append(line(texts))
        j += 1
    out.append(rule("└", "┴", "┘"))
    notes = []
    if n != len(picked) or n > 1 or n == 0:
        notes.append(f"{n:,} rows" + (f" ({len(picked)} shown)" if len(picked) < n else ""))
    if len(keep) < len(result.columns):
        hidden = [result.columns[i] for i in range(len(result.columns)) if i not in keep]
        notes.append(f"{len(result.columns)} columns ({len(keep)} shown; hidden: "
                     f"{', '.join(hidden)})")
    if notes and (len(picked) < n or len(keep) < len(result.columns)):
        out.append(dim + "  " + "   ".join(notes) + reset)
    return "".join(text + "\n" for text in out)


# -- the registry --------------------------------------------------------------------------

#: Output modes: name -> renderer(result, settings). ``duckbox`` is :func:`render`'s own.
MODES: dict[str, Callable[[Result, Settings], str]] = {
    "box": _box, "csv": _csv, "html": _html, "insert": _insert, "json": _json,
    "jsonlines": _jsonlines, "line": _line, "list": _list, "markdown": _markdown,
    "quote": _quote, "table": _table, "tabs": _tabs, "trash": _trash,
}
MODE_NAMES = sorted([*MODES, "duckbox"])


def render(result: Result, settings: Settings | None = None, width: int = 120,
           color: bool = False) -> str:
    """``result`` as text in ``settings.mode`` (default duckbox), lines ending in newlines."""
    settings = settings or Settings()
    if settings.mode == "duckbox" and result.columns == ["explain_key", "explain_value"]:
        # EXPLAIN: the plan as DuckDB drew it, as the DuckDB CLI prints it
        return "".join(v if v.endswith("\n") else v + "\n"
                       for v in result.table.column(1).to_pylist() if v)
    if settings.mode == "duckbox":
        return _duckbox(result, settings, settings.max_width or width, color)
    return MODES[settings.mode](result, settings)


def print_result(console, result: Result | tuple | None, settings: Settings | None = None
                 ) -> None:
    """Write ``result`` to a rich Console's file in the chosen mode (escape codes only on a
    terminal)."""
    if result is None:
        return
    if isinstance(result, tuple):
        result = Result(*result)
    text = render(result, settings, width=console.width,
                  color=console.is_terminal and not console.no_color)
    console.file.write(text)
    console.file.flush()


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C: KeyboardInterrupt, DuckDB's interrupt error, or a run it cancelled."""
    if isinstance(exc, (KeyboardInterrupt, RunCancelledError, duckdb.InterruptException)):
        return True
    text = str(exc)
    return ("Query interrupted" in text or "RunCancelledError: " in text
            or re.search(r"(?:^|: )KeyboardInterrupt(?::|$)", text) is not None)


def choices_summary(choices: str | dict | None) -> str:
    """One line of what algorithm 'auto' (or n_clusters 'auto') chose, from
    ``cluster_runs.choices``; '' for a run that chose nothing.

    >>> choices_summary({"pipeline": [{"step": "umap", "n_components": 5, "n_neighbors": 15},
    ...     {"step": "kmeans", "n_clusters": 9}], "n_clusters": 9,
    ...     "candidates": [{"n_clusters": 9, "silhouette": 0.48, "chosen": True}]})
    'umap(5, 15) + kmeans k=9: silhouette 0.48, of 1 k'
    >>> choices_summary({"map": {"kind": "graph", "dimensions": 2}})
    'map: graph layout'
    >>> choices_summary({"partition_by": "lang", "partitions": [
    ...     {"partition": "de", "n_clusters": 2, "choices": None},
    ...     {"partition": None, "n_clusters": 0, "skipped": "not clustered: 1 rows"}]})
    '2 partitions by lang: de 2 clusters; NULL not clustered'
    """
    if choices is None:
        return ""
    c = json.loads(choices) if isinstance(choices, str) else choices
    if "partitions" in c:  # partition_by: one clustering per partition
        parts = c["partitions"]
        shown = "; ".join(
            ("NULL" if p.get("partition") is None else str(p["partition"])) + " "
            + ("not clustered" if p.get("skipped") else
               (choices_summary(p.get("choices")) or f"{p.get('n_clusters')} clusters"))
            for p in parts[:3])
        more = f"; {len(parts) - 3} more" if len(parts) > 3 else ""
        return f"{len(parts)} partitions by {c.get('partition_by')}: {shown}{more}"
    if not any(k in c for k in ("pipeline", "algorithm", "n_clusters", "candidates")):
        return ""  # nothing chosen (only what the noise policy or lineage recorded)
    steps = []
    chose = c.get("pipeline") or ([] if set(c) <= {"map", "noise"} else [
        {"step": c.get("algorithm", "?"), "n_clusters": c.get("n_clusters")}])
    for s in chose:
        if s.get("step") == "umap":
            steps.append(f"umap({s.get('n_components')}, {s.get('n_neighbors')})")
        elif s.get("step") not in (None, "none"):
            k = s.get("n_clusters")
            steps.append(f"{s['step']}" + (f" k={k}" if k is not None else ""))
    cands = c.get("candidates") or []
    chosen = next((x for x in cands if x.get("chosen")), None)
    text = " + ".join(steps)
    for score in ("modularity", "silhouette"):
        if chosen is not None and chosen.get(score) is not None:
            text += f": {score} {chosen[score]:.2f}, of {len(cands)} k"
            break
    kind = (c.get("map") or {}).get("kind")
    if kind is not None:  # which map x, y come from (core/projection.py)
        text += ("; " if text else "") + ("map: graph layout" if kind == "graph" else
                                          "map: PCA")
    return text
