"""The SQL surface is pinned: names, kinds, parameter lists and defaults of every public
function a fresh connection gets must equal ``tests/sql_surface.json``.

The snapshot was taken before the code moved into its folders (issue 13), so a refactor
cannot change a macro's name, parameter or default by accident. A deliberate change of the
surface regenerates it: ``python tests/test_sql_surface.py --update``, and the diff of the
JSON file is the review of the change.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import duckdb

SNAPSHOT = Path(__file__).with_name("sql_surface.json")
REFERENCE = Path(__file__).parent.parent / "docs" / "functions.md"
_HEADER = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+)?MACRO\s+"
                     r"((?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*)\s*\(", re.I)


class _Spy:
    """A connection that records the SQL text duckcluster executes while installing."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self.log: list[str] = []

    def execute(self, query, *args, **kwargs):
        if isinstance(query, str):
            self.log.append(query)
        return self._con.execute(query, *args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self._con, attr)


def _split_args(text: str) -> list[str]:
    """Top-level comma split of a macro's parameter list (quotes and brackets respected)."""
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def macro_headers(sql: str) -> dict[str, list[list[str]]]:
    """name -> one parameter list per overload, each ``'p'`` or ``'p := default'``."""
    found: dict[str, list[list[str]]] = {}
    for m in _HEADER.finditer(sql):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        params = [re.sub(r"\s+", " ", p) for p in _split_args(sql[m.end():i - 1])]
        found.setdefault(m.group(1).lower(), []).append(params)
    return found


def surface() -> dict:
    """The public SQL surface of a fresh duckcluster connection."""
    import duckcluster

    con = duckdb.connect()
    spy = _Spy(con)
    duckcluster.install(spy)
    headers = macro_headers("\n".join(spy.log))
    # the persistent read-side macros (catalog/read_side.py) are keyed schema-qualified:
    # duckcluster.cluster_members is not the TEMP cluster_members
    rows = con.execute(
        "SELECT CASE WHEN schema_name = 'main' THEN function_name "
        "ELSE schema_name || '.' || function_name END, function_type, parameters "
        "FROM duckdb_functions() "
        "WHERE NOT internal AND function_name NOT LIKE '\\_%' ESCAPE '\\' "
        "ORDER BY ALL").fetchall()
    out: dict[str, dict] = {}
    for name, kind, params in rows:
        entry = out.setdefault(name, {"kind": kind, "overloads": []})
        entry["overloads"].append(list(params))
    for name, entry in out.items():
        entry["overloads"].sort()
        entry["declared"] = sorted(headers.get(name, []))
    duckcluster._close_all()
    con.close()
    return out


def test_sql_surface_matches_the_snapshot():
    want = json.loads(SNAPSHOT.read_text())
    got = surface()
    assert sorted(got) == sorted(want), (
        f"functions added: {sorted(set(got) - set(want))}, removed: "
        f"{sorted(set(want) - set(got))}; if deliberate: python tests/test_sql_surface.py --update")
    for name in want:
        assert got[name] == want[name], f"{name} changed: {got[name]} != {want[name]}"


def test_the_function_reference_is_current():
    from duckcluster.functions import reference_markdown

    assert REFERENCE.read_text() == reference_markdown(), (
        "docs/functions.md is stale: python tests/test_sql_surface.py --update")


def test_every_public_function_is_in_the_reference():
    text = REFERENCE.read_text()
    # duckcluster.<name>: the persistent copy of a read-side macro, documented as <name>
    missing = [name for name in json.loads(SNAPSHOT.read_text())
               if f"`{name.removeprefix('duckcluster.')}(" not in text]
    assert not missing, missing


if __name__ == "__main__" and "--update" in sys.argv:
    from duckcluster.functions import reference_markdown

    SNAPSHOT.write_text(json.dumps(surface(), indent=1, sort_keys=True) + "\n")
    REFERENCE.write_text(reference_markdown())
    print(f"wrote {SNAPSHOT} and {REFERENCE}")
