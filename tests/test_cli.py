"""The duckcluster command line, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import duckcluster
from conftest import blobs, load_table

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
    lines = [ln for ln in r.stdout.splitlines() if "│ 40" in ln.replace(" ", " ")]
    assert len(lines) == 3, r.stdout
    r = run("sql", db, "-c", "SELECT n_clusters FROM cluster_quality('topics')")
    assert r.returncode == 0 and "│ 3" in r.stdout


def test_sql_error_exit_code_and_message(tmp_path):
    db = str(tmp_path / "a.duckdb")
    make_db(db)
    r = run("sql", db, "-c", "SELECT cluster_execute('missing')")
    assert r.returncode == 1
    assert "No cluster definition named 'missing'" in r.stderr


def test_sql_cluster_by_embedding_sugar(tmp_path):
    db = str(tmp_path / "a.duckdb")
    make_db(db)
    r = run("sql", db, "-c", "SELECT cluster_id, count(*) AS n FROM docs CLUSTER BY "
            "EMBEDDING(embedding) USING kmeans(n_clusters = 3) GROUP BY cluster_id ORDER BY 1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("│ 40") == 3


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
