"""Clearer messages for DuckDB's errors about macro arguments.

A misspelled named argument (``smaple_size := 10``) or a missing positional one makes
DuckDB 2.0 say only "Macro cluster_create() does not support the supplied arguments.
You might need to add explicit type casts", then list the macro's parameters: it never
names the argument, and a macro cannot add to the binder's message. The places where
duckcluster runs SQL for a user (:func:`duckcluster.sql`, the ``duckcluster`` CLI and
shell) pass such errors through :func:`explain_macro_error`, which reads the call in the
statement and says what was wrong:

>>> msg = ("Binder Error: Macro cluster_execute() does not support the supplied arguments."
...        " You might need to add explicit type casts.\\nCandidate macros:\\n"
...        "\\tcluster_execute(name, mode := 'full', assignment_threshold := NULL)")
>>> print(explain_macro_error(msg, "SELECT cluster_execute('t', treshold := 0.3)"))
Binder Error: cluster_execute has no parameter 'treshold'; did you mean 'assignment_threshold'? Its parameters: name, mode := 'full', assignment_threshold := NULL. (DuckDB: Macro cluster_execute() does not support the supplied arguments.)
"""

from __future__ import annotations

import difflib
import re

import duckdb

_MACRO_ERROR = re.compile(r"Macro (\w+)\(\) does not support the supplied arguments\.")
_NAMED = re.compile(r'^\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)\s*(:=|=>)', re.DOTALL)


def sql(con: duckdb.DuckDBPyConnection, statement: str) -> duckdb.DuckDBPyRelation | None:
    """``con.sql(statement)``, with a macro-argument error explained (same exception class)."""
    try:
        return con.sql(statement)
    except duckdb.BinderException as exc:
        better = explain_macro_error(str(exc), statement)
        if better is None:
            raise
        raise duckdb.BinderException(better) from None


def explain_macro_error(message: str, statement: str) -> str | None:
    """A message naming the bad argument of a macro call, or None when ``message`` is
    not DuckDB's 'does not support the supplied arguments' error or nothing is found."""
    m = _MACRO_ERROR.search(message)
    if not m:
        return None
    macro = m.group(1)
    signatures = _signatures(message, macro)
    if not signatures:
        return None
    names = {n for sig in signatures for n, _ in sig}
    shown = "; ".join(", ".join(n if d is None else f"{n} := {d}" for n, d in sig)
                      for sig in dict.fromkeys(tuple(s) for s in signatures)) or "none"
    said = f" (DuckDB: Macro {macro}() does not support the supplied arguments.)"
    for args in _calls(statement, macro):
        named = [a for a in args if a[0] is not None]
        for name, _ in named:
            if name.lower() not in {n.lower() for n in names}:
                match = _closest(name, names)
                hint = f"; did you mean {match!r}?" if match else "."
                return (f"Binder Error: {macro} has no parameter {name!r}{hint} Its "
                        f"parameters: {shown}.{said}")
        n_pos = sum(1 for a in args if a[0] is None)
        sig = signatures[0]
        required = [n for n, d in sig if d is None]
        given = {n.lower() for n, _ in named}
        missing = [n for n in required[n_pos:] if n.lower() not in given]
        if missing:
            return (f"Binder Error: {macro} needs {_count(len(required))} "
                    f"({', '.join(required)}); got {n_pos}, so {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing. Its parameters: "
                    f"{shown}.{said}")
        if n_pos > len(required):
            optional = [f"{n} := {d}" for n, d in sig if d is not None]
            if not sig:
                return f"Binder Error: {macro} takes no arguments; got {n_pos}.{said}"
            rest = f" Pass the others by name ({', '.join(optional)})." if optional else ""
            return (f"Binder Error: {macro} takes {_count(len(required))} "
                    f"({', '.join(required) or 'none'}); got {n_pos}.{rest} Its parameters: "
                    f"{shown}.{said}")
    return None


def _count(n: int) -> str:
    return f"{n} positional argument{'' if n == 1 else 's'}"


def _closest(name: str, names: set[str]) -> str | None:
    """The parameter ``name`` most likely meant; the last word of a parameter counts too
    ('treshold' -> 'assignment_threshold')."""
    keys = {n.lower(): n for n in names}
    keys.update({n.lower().rsplit("_", 1)[-1]: n for n in names if "_" in n
                 and n.lower().rsplit("_", 1)[-1] not in keys})
    match = difflib.get_close_matches(name.lower(), list(keys), n=1, cutoff=0.6)
    return keys[match[0]] if match else None


def _signatures(message: str, macro: str) -> list[list[tuple[str, str | None]]]:
    """[(name, default or None), ...] of each candidate DuckDB lists for ``macro``."""
    out = []
    for line in message.split("Candidate macros:", 1)[-1].splitlines():
        line = line.strip()
        if not line.lower().startswith(macro.lower() + "(") or not line.endswith(")"):
            continue
        params = []
        for part in _split_top(line[len(macro) + 1:-1]):
            if not part.strip():
                continue
            name, sep, default = part.partition(":=")
            params.append((name.strip().strip('"'), default.strip() if sep else None))
        out.append(params)
    return out


def _calls(statement: str, macro: str) -> list[list[tuple[str | None, str]]]:
    """The argument lists of every call of ``macro`` in ``statement``:
    [(name or None for a positional argument, text), ...] per call."""
    code = _mask(statement)
    out = []
    for m in re.finditer(rf"(?<![\w.\"]){re.escape(macro)}\s*\(", code, re.IGNORECASE):
        start = m.end()
        depth, i = 1, start
        while i < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        if depth:
            continue
        args = []
        for part in _split_top(statement[start:i - 1], code[start:i - 1]):
            if not part.strip():
                continue
            named = _NAMED.match(_mask(part, strings=False))  # comments blanked, names kept
            name = named.group(1) if named else None
            if name and name.startswith('"'):
                name = name[1:-1].replace('""', '"')
            args.append((name, part))
        out.append(args)
    return out


def _mask(sql: str, strings: bool = True) -> str:
    """``sql`` with the insides of strings, quoted names (unless not ``strings``) and
    comments blanked (same length), so parentheses and commas in them are not counted."""
    out, i, n = list(sql), 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            for k in range(i + 1, min(j, n)) if strings else ():
                out[k] = " "
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                out[k] = " "
            i = j
        else:
            i += 1
    return "".join(out)


def _split_top(text: str, masked: str | None = None) -> list[str]:
    """Split ``text`` at commas outside brackets (``masked``: the same text with strings
    blanked, used to find the commas)."""
    masked = _mask(text) if masked is None else masked
    parts, depth, last = [], 0, 0
    for i, c in enumerate(masked):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return parts
