"""The duckcluster command line, run as a real subprocess (and compared with the stock
DuckDB CLI on the same file)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import duckcluster
from conftest import blobs, load_table, stock_cli

CLI = [sys.executable, "-m", "duckcluster.cli"]


def run(*args, cwd=None, timeout=600):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=env)


def make_db(path):
    con = duckcluster.connect(path)
    X, _ = blobs(n_per=40, k=3, d=8)
    load_table(con, "docs", X)
    con.close()


def test_sql_command_and_file(tmp_path):
    db = str(tmp_path / "a.duckdb")
    make_db(db)
    script = tmp_path / "s.sql"
    script.write_text(
        "SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', id := 'doc_id',\n"
        "                      algorithm := 'kmeans', params := {'n_clusters': 3});\n"
        "SELECT cluster_execute('topics') IS NOT NULL AS ok;\n"
        "-- a comment; with a semicolon\n"
        "SELECT cluster_id, count(*) AS n FROM cluster_members('topics') GROUP BY ALL ORDER BY 1;\n")
    r = run("sql", db, "-f", str(script))
    assert r.returncode == 0, r.stderr
    assert "topics" in r.stdout and "true" in r.stdout.lower()
    lines = [ln for ln in r.stdout.splitlines() if ln.endswith("│    40 │")]  # numbers right
    assert len(lines) == 3, r.stdout
    r = run("sql", db, "-c", "SELECT n_clusters FROM cluster_quality('topics')")
    assert r.returncode == 0 and "│          3 │" in r.stdout


def test_sql_error_exit_code_and_message(tmp_path):
    """One line that starts with what was wrong: no DuckDB "Python exception occurred
    while executing the UDF" wrapping, no ValueError, no traceback."""
    db = str(tmp_path / "a.duckdb")
    make_db(db)
    r = run("sql", db, "-c", "SELECT cluster_execute('missing')")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "UnknownNameError: No cluster definition named 'missing'. Existing definitions: "
        "none yet. Create one with SELECT cluster_create('missing', source := ..., "
        "embedding := ...)."]
    r = run("sql", db, "-c", "SELECT cluster_create('t', 'docs', 'embedding', "
            "algorithm := 'kmean')")
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith(
        "UnknownNameError: Unknown algorithm 'kmean'. Did you mean 'kmeans'?")
    r = run("sql", db, "-c", "SELECT * FROM nope")  # DuckDB's own errors as DuckDB says them
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == "Catalog Error: Table with name nope does not exist!"


MODES_TABLE = """
CREATE TABLE shown AS SELECT * FROM (VALUES
  (1, 'plain', 1.5::DOUBLE, true, [1.0, 2.0]::FLOAT[2], DATE '2024-01-02', NULL::VARCHAR,
   3.25::DECIMAL(5,2), {'a': 1, 'b': 'x'}),
  (-22, 'with, comma', -0.25, false, [0.5, 0.25]::FLOAT[2], DATE '1999-12-31', 'quote "q"',
   -1.00, {'a': 2, 'b': 'it''s'}),
  (NULL, '', 1e20, NULL, NULL, NULL, 'x', NULL, NULL)
) t(id, name, score, ok, emb, d, note, dec, st)
"""


ALL_MODES = ["csv", "json", "jsonlines", "markdown", "line", "list", "tabs", "box", "table",
             "html", "quote", "insert"]
MODES_QUERY = "SELECT * FROM shown ORDER BY id NULLS LAST"


def stock_output(db: str, mode: str, query: str = MODES_QUERY) -> str:
    out = subprocess.run([stock_cli(), "-readonly", "-no-init", "-c", f".mode {mode}", "-c",
                          query, db], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def modes_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("modes") / "m.duckdb")
    con = duckcluster.connect(db)
    con.execute(MODES_TABLE)
    con.close()
    return db


def test_output_modes_match_the_duckdb_cli(modes_db):
    """Every text mode writes what the stock CLI's ``.mode`` writes, byte for byte
    (the renderer `duckcluster sql` and the shell print with)."""
    import duckdb

    from duckcluster.cli.display import Result, Settings, render

    with duckdb.connect(modes_db, read_only=True) as con:
        result = Result.of(con.sql(MODES_QUERY))
    for mode in ALL_MODES:
        assert render(result, Settings(mode=mode)) == stock_output(modes_db, mode), mode


@pytest.mark.parametrize("flag", ["--csv", "-json"])
def test_sql_mode_flags(modes_db, flag):
    """`duckcluster sql --csv` / `-json` (DuckDB's own spelling) for pipes."""
    ours = run("sql", modes_db, "--read-only", flag, "-c", MODES_QUERY)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == stock_output(modes_db, flag.lstrip("-"))


def test_sql_json_for_pipes(tmp_path):
    """--json output parses, and the progress line never reaches a pipe."""
    import json

    db = str(tmp_path / "a.duckdb")
    make_db(db)
    r = run("sql", db, "--json", "-c", "SELECT cluster_create('topics', 'docs', 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3}) AS name; "
            "SELECT cluster_execute('topics') IS NOT NULL AS ok; "
            "SELECT n_clusters, should_recluster FROM cluster_quality('topics')")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    blocks = [json.loads(b) for b in r.stdout.split("\n[") if b.strip() for b in
              [b if b.startswith("[") else "[" + b]]
    assert blocks == [[{"name": "topics"}], [{"ok": True}],
                      [{"n_clusters": 3, "should_recluster": False}]]


def test_sql_timer(tmp_path):
    r = run("sql", "--timer", "--csv", "-c", "SELECT 42 AS answer")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["answer", "42"]
    assert lines[2].startswith("Run Time (s): real ") and " user " in lines[2]


def test_sql_cluster_by_embedding_sugar(tmp_path):
    db = str(tmp_path / "a.duckdb")
    make_db(db)
    r = run("sql", db, "-c", "SELECT cluster_id, count(*) AS n FROM docs CLUSTER BY "
            "EMBEDDING(embedding) USING kmeans(n_clusters = 3) GROUP BY cluster_id ORDER BY 1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("│    40 │") == 3


def test_demo(tmp_path):
    r = run("demo", "--digits", "--db", str(tmp_path / "demo.duckdb"), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "digits_kmeans" in out and "digits_hdbscan" in out and "Try next" in out
    con = duckcluster.connect(str(tmp_path / "demo.duckdb"))
    try:
        rows = con.sql("SELECT name, latest_status FROM cluster_list()").fetchall()
        assert rows == [("digits_hdbscan", "succeeded"), ("digits_kmeans", "succeeded")]
    finally:
        con.close()
