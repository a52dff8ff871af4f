"""Run tests/sql/*.test twice: with duckcluster.connect() (Python UDF versions) and in the
stock DuckDB CLI after ``.read sql/duckcluster.sql`` (pure SQL versions). Same expected
output both ways.

The files use a subset of DuckDB's sqllogictest format; records are separated by blank lines:

    # name: / # description: / # group:   header comments (any '#' line is a comment)
    require duckcluster_catalog            run sql/catalog.sql, then sql/catalog_*.sql (as
                                           duckcluster.install does): the duckcluster schema
    require python                         the file tests Python-backed functions: it runs
                                           on duckcluster.connect() only (skipped on the CLI)
    statement ok                           the SQL below must succeed
    statement error                        it must fail; the text after ---- (required) is a
                                           substring of the error message
    query <types> [rowsort]                its rows after ----, values separated by tabs;
                                           one type letter per column: R compares as a
                                           number within 1e-5 (any NaN equals NaN), others
                                           as text

Values are DuckDB's VARCHAR casts, NULL is NULL and '' is (empty). Each CLI record runs
in a fresh process on the same database file, so use tables, not TEMP objects.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_stock_cli import ROOT, run_cli

TEST_FILES = sorted((Path(__file__).parent / "sql").glob("*.test"))
CATALOG = "sql/catalog.sql"  # relative to ROOT, like the read side
#: the catalog files in the order duckcluster's catalog.ensure() runs them
CATALOG_FILES = (CATALOG, *sorted(f"sql/{p.name}" for p in (ROOT / "sql").glob("catalog_*.sql")))


@dataclass(frozen=True)
class Record:
    line: int
    kind: str  # require | statement ok | statement error | query
    sql: str
    expected: tuple[str, ...] = ()
    types: str = ""
    rowsort: bool = False


def parse(path: Path) -> list[Record]:
    lines = path.read_text().splitlines()
    records, i = [], 0
    while i < len(lines):
        head, start = lines[i].strip(), i + 1
        i += 1
        if not head or head.startswith("#"):
            continue
        words = head.split()
        if words[0] == "require":
            records.append(Record(start, "require", words[1]))
            continue
        body, expected = [], []
        while i < len(lines) and lines[i].strip() and lines[i] != "----":
            body.append(lines[i])
            i += 1
        if i < len(lines) and lines[i] == "----":
            i += 1
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i])
                i += 1
        if words[0] == "query":
            records.append(Record(start, "query", "\n".join(body), tuple(expected), words[1],
                                  "rowsort" in words[2:]))
        elif head in ("statement ok", "statement error"):
            if head == "statement error" and not "".join(expected).strip():
                raise ValueError(f"{path.name}:{start}: a statement error must pin its message "
                                 "after ----")
            records.append(Record(start, head, "\n".join(body), tuple(expected)))
        else:
            raise ValueError(f"{path.name}:{start}: unknown record {head!r}")
    return records


class EngineError(Exception):
    pass


class NeedsPython(Exception):
    """A ``require python`` file on an engine without duckcluster's Python functions."""


def as_text(sql: str) -> str:
    return f"SELECT COLUMNS(*)::VARCHAR FROM (\n{sql}\n)"


class PythonEngine:
    """duckcluster.connect(): read-side macros plus the Python assign_cluster UDFs."""

    def __init__(self, tmp_path: Path):
        import duckcluster

        self.con = duckcluster.connect(str(tmp_path / "python.duckdb"))

    def require(self, what: str) -> None:
        if what == "python":
            return
        for path in CATALOG_FILES:
            self.statement((ROOT / path).read_text())

    def statement(self, sql: str) -> None:
        try:
            self.con.execute(sql)
        except Exception as exc:
            raise EngineError(str(exc)) from None

    def query(self, sql: str) -> list[tuple]:
        try:
            return self.con.sql(as_text(sql)).fetchall()
        except Exception as exc:
            raise EngineError(str(exc)) from None

    def close(self) -> None:
        self.con.close()


class CliEngine:
    """The stock DuckDB CLI; the read side is loaded once the catalog exists."""

    def __init__(self, tmp_path: Path):
        self.db, self.reads = str(tmp_path / "cli.duckdb"), ()

    def require(self, what: str) -> None:
        if what == "python":
            raise NeedsPython(what)
        for path in CATALOG_FILES:
            self._run(f".read {path}")
        self.reads = ("sql/duckcluster.sql",)

    def statement(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str) -> list[tuple]:
        out = self._run(as_text(sql))
        return [tuple(json.loads(line).values()) for line in out.splitlines() if line.strip()]

    def _run(self, command: str) -> str:
        out = run_cli(self.db, command, read_only=False, reads=self.reads)
        if out.returncode or out.stderr:
            raise EngineError(out.stderr.strip())
        return out.stdout

    def close(self) -> None:
        pass


ENGINES = {"python": PythonEngine, "stock_cli": CliEngine}


def render(value: str | None) -> str:
    return "NULL" if value is None else value or "(empty)"


def same_value(kind: str, actual: str, expected: str) -> bool:
    if kind == "R" and actual != expected and "NULL" not in (actual, expected):
        a, e = float(actual), float(expected)
        return (math.isnan(a) and math.isnan(e)) or math.isclose(a, e, rel_tol=1e-5, abs_tol=1e-5)
    return actual == expected


def check(record: Record, engine) -> str | None:
    """None if the record holds on ``engine``, else what went wrong."""
    if record.kind == "require":
        engine.require(record.sql)
        return None
    try:
        if record.kind == "query":
            rows = [[render(v) for v in row] for row in engine.query(record.sql)]
        else:
            engine.statement(record.sql)
    except EngineError as exc:
        if record.kind == "statement error" and "\n".join(record.expected) in str(exc):
            return None
        return f"error: {exc}"
    if record.kind == "statement error":
        return "succeeded; expected an error"
    if record.kind == "statement ok":
        return None
    expected = [line.split("\t") for line in record.expected]
    if record.rowsort:
        rows, expected = sorted(rows), sorted(expected)
    ok = len(rows) == len(expected) and all(
        len(a) == len(e) == len(record.types) and all(map(same_value, record.types, a, e))
        for a, e in zip(rows, expected))
    return None if ok else "got\n" + "\n".join("\t".join(r) for r in rows)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("path", TEST_FILES, ids=[p.stem for p in TEST_FILES])
def test_sqllogic(path: Path, engine_name: str, tmp_path: Path):
    engine = ENGINES[engine_name](tmp_path)
    try:
        for record in parse(path):
            try:
                problem = check(record, engine)
            except NeedsPython:
                pytest.skip(f"{path.name} tests Python-backed functions (require python)")
            assert problem is None, (f"{path.name}:{record.line} on {engine_name}\n{record.sql}\n"
                                     f"expected\n" + "\n".join(record.expected) + f"\n{problem}")
    finally:
        engine.close()


def test_every_read_side_function_has_a_test_file():
    names = {p.stem for p in TEST_FILES}
    assert {"cluster_runs", "cluster_members", "cluster_centroids", "cluster_quality",
            "cluster_list", "assign_cluster"} <= names


def test_python_backed_functions_have_test_files():
    names = {p.stem for p in TEST_FILES}
    assert {"cluster_create", "cluster_execute", "cluster_embeddings", "cluster_delete",
            "embedding_drift"} <= names
    for stem in ("cluster_create", "cluster_execute", "cluster_embeddings", "embedding_drift"):
        assert any(r.kind == "require" and r.sql == "python"
                   for r in parse(Path(__file__).parent / "sql" / f"{stem}.test"))


def test_a_statement_error_without_its_message_is_refused(tmp_path):
    bad = tmp_path / "bad.test"
    bad.write_text("statement error\nSELECT 1/0\n")
    with pytest.raises(ValueError, match="must pin its message"):
        parse(bad)
