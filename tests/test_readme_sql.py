"""The ```sql blocks of README.md, run statement by statement in README order on one real
database that has the tables the README names (docs, new_docs, q1_docs, q3_docs, search_log,
incoming_batch); what cannot run here is skipped by a rule with its reason (LLM endpoints,
Ray, placeholders, dbt's Jinja), and what the prose assumes happened first is set up by a
rule (a second full run before cluster_lineage). Every SELECT must return rows; the joins
need no cast and keep every member, noise included.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import duckcluster
from duckcluster._syntax import split_statements

from conftest import blobs

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern, why it cannot run in the test suite)
SKIP = (
    (r"\{\{|\{%", "a dbt model (Jinja); tests/test_dbt.py builds the example project"),
    (r"provider := '(openai|gemini)'", "needs an LLM endpoint; tests/test_label_llm.py runs one"),
    (r"backend := 'ray'", "needs a Ray runtime; tests/test_ray.py runs one"),
    (r"run_…|TIMESTAMP '…'", "a placeholder for a run id or time"),
)

#: (pattern, SQL run once before the first statement that matches): what the README's
#: prose assumes happened before that statement
SETUP = (
    (r"\bcluster_lineage\(", "SELECT cluster_execute('topics')"),  # a second full run
)

TOPICS = (("fruit", "apple banana juice"), ("space", "rocket orbit nasa"),
          ("code", "python compiler bug"), ("sport", "football league goal"))


def sql_blocks(text: str) -> list[tuple[int, str]]:
    """(line, statement) of every statement in the README's ```sql blocks."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```sql":
            start, body = i + 2, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            line = start
            for stmt in split_statements("\n".join(body)):
                code = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--"))
                if code.strip().strip(";").strip():
                    out.append((line + stmt.count("\n", 0, len(stmt) - len(stmt.lstrip())),
                                code.strip()))
                line += stmt.count("\n")
        i += 1
    return out


def skip_reason(stmt: str) -> str | None:
    return next((why for pat, why in SKIP if re.search(pat, stmt)), None)


STATEMENTS = sql_blocks(README.read_text(encoding="utf-8"))


def _docs_table(con, name: str, X: np.ndarray, y: np.ndarray, start: int, days: int) -> None:
    n = len(y)
    tbl = pa.table({
        "doc_id": pa.array(np.arange(start, start + n), pa.int64()),
        "title": [TOPICS[t][0] for t in y],
        "body": [f"{TOPICS[t][1]} note {i}" for i, t in enumerate(y)],
        "quarter": ["Q1" if i % 2 == 0 else "Q3" for i in range(n)],
        "created_at": pa.array(np.datetime64("2024-01-01") + (np.arange(n) % days)
                               .astype("timedelta64[D]")).cast(pa.timestamp("us")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1]),
    })
    con.register("__readme", tbl)
    con.sql(f"CREATE TABLE {name} AS SELECT * EXCLUDE (embedding), CAST(embedding AS "
            f"FLOAT[{X.shape[1]}]) AS embedding FROM __readme").fetchall()
    con.unregister("__readme")


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    c = duckcluster.connect(str(tmp_path_factory.mktemp("readme") / "analytics.duckdb"))
    X, y = blobs(n_per=60, k=4, d=16, seed=5)
    _docs_table(c, "docs", X, y, 1, 28)
    Xn, yn = blobs(n_per=10, k=4, d=16, seed=5)
    _docs_table(c, "new_docs", Xn, yn, 10_000, 7)
    for sql in ("CREATE TABLE q1_docs AS SELECT * FROM docs WHERE quarter = 'Q1'",
                "CREATE TABLE q3_docs AS SELECT * FROM docs WHERE quarter = 'Q3'",
                "CREATE TABLE incoming_batch AS SELECT embedding, created_at FROM new_docs",
                "CREATE TABLE search_log AS SELECT TIMESTAMP '2024-01-01' + INTERVAL (i) HOUR AS ts, "
                "i % 3 = 0 AS retrieved_ok, i % 5 = 0 AS no_answer FROM range(24 * 28) t(i)"):
        c.sql(sql).fetchall()
    yield c
    c.close()


def test_the_readme_has_sql_to_check():
    assert len(STATEMENTS) > 30
    ran = [s for _, s in STATEMENTS if skip_reason(s) is None]
    assert len(ran) >= 0.7 * len(STATEMENTS), "most README statements must run"


def test_every_readme_statement_runs(con):
    """In README order: later statements read what earlier ones wrote (the 'topics' runs)."""
    ran, done = 0, set()
    for line, stmt in STATEMENTS:
        if skip_reason(stmt):
            continue
        for pat, setup in SETUP:
            if re.search(pat, stmt) and setup not in done:
                duckcluster.sql(con, setup).fetchall()
                done.add(setup)
        try:
            rel = duckcluster.sql(con, stmt)
            rows = rel.fetchall() if rel is not None else None
        except Exception as exc:  # noqa: BLE001 - the README line is the message
            pytest.fail(f"README.md:{line}: {stmt}\n{exc}")
        if re.match(r"(?is)\s*(WITH|SELECT)\b", stmt):
            assert rows, f"README.md:{line} returned no rows: {stmt}"
        ran += 1
    assert ran > 25


def test_readme_joins_need_no_cast_and_keep_noise(con):
    joins = [s for _, s in STATEMENTS if re.search(r"\bJOIN\b", s)]
    assert joins
    for stmt in joins:
        for cond in re.findall(r"(?is)\bON\s+(.+?)(?=\bJOIN\b|\bWHERE\b|\bGROUP\b|$)", stmt):
            assert "CAST(" not in cond.upper() and "::" not in cond, stmt
    join = next(s for s in joins if "JOIN docs d ON d.doc_id = m.id" in s)
    n = con.sql("SELECT count(*) FROM cluster_members('topics')").fetchall()[0][0]
    rows = duckcluster.sql(con, join).fetchall()
    assert sum(r[1] for r in rows) == n  # every member, noise included
    noise = con.sql("SELECT count(*) FROM cluster_members('topics') WHERE cluster_id = -1").fetchall()
    if noise[0][0]:
        assert ("noise", noise[0][0]) in [(r[0], r[1]) for r in rows]
