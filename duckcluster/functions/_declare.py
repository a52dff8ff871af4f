"""Declarations of regular SQL functions: one declaration gives the UDF, the macro and the
reference row.

A regular function is a public macro over one private Python UDF. Its declaration lists
the macro's parameters in order; each either becomes its own UDF argument (``to="arg"``)
or a key of one JSON options object (``to="json"``, the default), which the UDF receives
as a VARCHAR at the position of the first JSON parameter. From that, :func:`macro_sql`
writes the ``CREATE OR REPLACE TEMP MACRO`` text, :func:`register` the UDF, and
:func:`reference_row` a row of ``docs/functions.md``. Irregular functions (dispatch on
types, SQL around the call, the pure-SQL read side) stay hand-written.

>>> f = Function("cluster_wait", "_dc_wait", "VARCHAR", lambda state: None,
...              (P("run_id", to="arg"), P("timeout", "600")), doc="Wait for a run.")
>>> print(macro_sql(f).strip())
CREATE OR REPLACE TEMP MACRO cluster_wait(run_id, timeout := 600) AS
    _dc_wait(run_id, json_object('timeout', timeout)::VARCHAR);
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._registry import _wrap

_RESERVED = {"replace", "window", "table", "select", "from", "where", "order", "group"}


@dataclass(frozen=True)
class P:
    """One macro parameter.

    ``default``: None for a required positional parameter, else the SQL text of its ``:=``
    default. ``to``: ``"json"`` (a key of the options JSON), ``"arg"`` (its own UDF
    argument of ``sql_type``) or ``"none"`` (not passed by itself: a deprecated alias that
    another parameter's ``expr`` reads, e.g. ``coalesce(taxonomy_name, taxonomy)``).
    ``expr``: the SQL that passes it (default: the name, or ``CAST(name AS sql_type)`` with
    ``cast``). An argument of a number or BOOLEAN type is cast by a checked cast: a value
    that does not convert fails naming the function, the parameter and ``allowed``
    (default: from the type), not with DuckDB's bare conversion error.
    """

    name: str
    default: str | None = None
    to: str = "json"
    sql_type: str = "VARCHAR"
    expr: str | None = None
    cast: bool = False
    allowed: str | None = None

    @property
    def ident(self) -> str:
        return f'"{self.name}"' if self.name in _RESERVED else self.name

    def value(self, function: str = "") -> str:
        if self.expr is not None:
            return self.expr
        is_list = self.sql_type.endswith("]")
        allowed = self.allowed or ("a list of numbers (FLOAT[] or FLOAT[n])" if is_list
                                   else _ALLOWED.get(self.sql_type))
        if self.to == "arg" and allowed and function:
            x, t = self.ident, self.sql_type
            text = f"SpecError: {function}: {self.name} must be {allowed}; got ".replace("'", "''")
            # a list column never fails: typeof() folds when the query is bound, so the
            # row-by-row TRY_CAST runs only for other types (a VARCHAR '[1, 2]' still casts)
            listed = f"typeof({x}) NOT LIKE '%]' AND " if is_list else ""
            quote = "''''"  # SQL for a string holding one quote
            return (f"CASE WHEN {listed}{x} IS NOT NULL AND TRY_CAST({x} AS {t}) IS NULL "
                    f"THEN error('{text}' || {quote} || CAST({x} AS VARCHAR) || {quote}) "
                    f"ELSE CAST({x} AS {t}) END")
        return f"CAST({self.ident} AS {self.sql_type})" if self.cast else self.ident


#: What a UDF argument of these types must be (the checked cast's message).
_ALLOWED = {"DOUBLE": "a number", "FLOAT": "a number", "INTEGER": "an integer",
            "BIGINT": "an integer", "BOOLEAN": "true or false"}


def options(names: Iterable[str], **overrides: P) -> tuple[P, ...]:
    """JSON ``:=`` options defaulting to NULL (the Python side applies its Param defaults),
    one per name, in order; ``overrides`` replace single entries."""
    return tuple(overrides.get(n, P(n, "NULL")) for n in names)


@dataclass(frozen=True)
class Function:
    """A regular SQL function: public macro ``name`` over the private UDF ``udf``.

    ``body(state)`` returns the Python function of one connection, taking the UDF's
    arguments in order. ``kind``: ``"scalar"``, or ``"table"`` for a UDF returning a LIST
    of STRUCTs that the macro unnests into rows.
    """

    name: str
    udf: str
    returns: str
    body: Callable[[Any], Callable[..., Any]]
    params: tuple[P, ...] = ()
    doc: str = ""
    kind: str = "scalar"
    side_effects: bool = True
    null_handling: str = "special"
    udf_type: str = "native"
    params_doc: Mapping[str, str] | None = None
    #: deprecated parameter name -> the name that replaces it (shown in the reference)
    aliases: Mapping[str, str] | None = None
    #: the Param table the Python side checks the JSON options against (the common
    #: parameter test derives invalid values from it)
    checks: Mapping[str, Any] | None = None
    #: a table macro's body around its rows: SQL in which ``{rows}`` stands for the
    #: ``SELECT unnest(<udf call>, recursive := true)`` query (default: that query alone)
    body_sql: str | None = None

    def udf_args(self) -> list[tuple[str, str]]:
        """(SQL passed, UDF parameter type) of each UDF argument, in order."""
        out: list[tuple[str, str]] = []
        json_at = None
        for p in self.params:
            if p.to == "arg":
                out.append((p.value(self.name), p.sql_type))
            elif p.to == "json" and json_at is None:
                json_at = len(out)
        if json_at is not None:
            pairs = [f"'{p.name}', {p.value()}" for p in self.params if p.to == "json"]
            packed = _wrapped(pairs, "json_object(", "            ") + ")::VARCHAR"
            out.insert(json_at, (packed, "VARCHAR"))
        return out


def decode_options(text: str | None) -> dict[str, Any]:
    """The JSON options a declared UDF receives, without the keys given as NULL (NULL means
    "not given": the Python side's Param defaults apply).

    >>> decode_options('{"timeout": 5, "secret": null}')
    {'timeout': 5}
    """
    import json

    return {k: v for k, v in json.loads(text).items() if v is not None} if text else {}


def signature(f: Function) -> str:
    """The macro's parameter list: ``name, source := NULL, ...``."""
    return ", ".join(p.ident if p.default is None else f"{p.ident} := {p.default}"
                     for p in f.params)


def _wrapped(items: list[str], first: str, indent: str, width: int = 96) -> str:
    """``first`` followed by the comma-separated ``items``, folded at ``width``."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "")
        if len(line) + len(piece.rstrip()) > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line)
    return "\n".join(lines)


def macro_sql(f: Function) -> str:
    """The ``CREATE OR REPLACE TEMP MACRO`` statement of ``f``."""
    params = [p.ident if p.default is None else f"{p.ident} := {p.default}" for p in f.params]
    head = _wrapped(params, f"CREATE OR REPLACE TEMP MACRO {f.name}(", "    ") + ") AS"
    call = _wrapped([sql for sql, _ in f.udf_args()], f"{f.udf}(", "        ") + ")"
    if f.kind == "table":
        rows = f"SELECT unnest({call}, recursive := true)"
        if f.body_sql:
            rows = f.body_sql.replace("{rows}", rows)
        return f"\n{head} TABLE\n    {rows};\n"
    return f"\n{head}\n    {call};\n"


def macros_sql(functions: Iterable[Function]) -> str:
    return "".join(macro_sql(f) for f in functions)


def register(reg: Any, state: Any, functions: Iterable[Function]) -> None:
    """Create the UDF of each declaration on one connection's registrar."""
    for f in functions:
        reg.create_function(f.udf, _wrap(f.body(state)), [t for _, t in f.udf_args()],
                            f.returns, type=f.udf_type, null_handling=f.null_handling,
                            side_effects=f.side_effects)


def reference_row(f: Function) -> str:
    """The function's row of the generated reference (``docs/functions.md``)."""
    doc = f.doc + "".join(f"; `{old}` is a deprecated alias of `{new}`"
                          for old, new in (f.aliases or {}).items())
    return f"| `{f.name}({signature(f)})` | {f.kind} | {cell(doc)} |"


def cell(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def hand_written(sql: str) -> list[tuple[str, str, str, str]]:
    """(name, signature, kind, doc) of each public ``CREATE ... MACRO`` in ``sql``, the doc
    being the ``--`` comment lines right above it."""
    import re

    out = []
    for m in re.finditer(r"((?:^--[^\n]*\n)*)CREATE OR REPLACE TEMP MACRO (\w+)\(", sql, re.M):
        name = m.group(2)
        if name.startswith("_"):
            continue
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        sig = re.sub(r"\s+", " ", sql[m.end():i - 1]).strip()
        kind = "table" if re.match(r"\s*AS\s+TABLE", sql[i:], re.I) else "scalar"
        doc = " ".join(line[2:].strip() for line in m.group(1).splitlines())
        out.append((name, sig, kind, cell(doc)))
    return out
