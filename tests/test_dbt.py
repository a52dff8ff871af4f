"""dbt: a real `dbt build` of examples/dbt_project with the duckcluster.dbt plugin.

One module-scoped build (seed -> Python embedding model -> one-shot clusters ->
cluster_run -> enriched docs -> drift models and tests), then a second build
with a month whose documents bring a new topic: the drift tests must fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dbt.adapters.duckdb", reason="dbt-duckdb is not installed")

import duckdb

import duckcluster

ROOT = Path(__file__).resolve().parents[1]
DBT = str(Path(sys.executable).with_name("dbt"))


def installed_package() -> str:
    """The dbt package's folder inside the installed duckcluster (`duckcluster dbt-package`)."""
    out = subprocess.run([str(Path(sys.executable).with_name("duckcluster")), "dbt-package"],
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def dbt(project: Path, *args: str, db: Path) -> subprocess.CompletedProcess:
    # no DUCKCLUSTER_DBT_PACKAGE: the project finds everything it needs by itself
    env = {**{k: v for k, v in os.environ.items() if k != "DUCKCLUSTER_DBT_PACKAGE"},
           "DUCKCLUSTER_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_USE_COLORS": "false", "DO_NOT_TRACK": "1"}
    return subprocess.run([DBT, *args, "--profiles-dir", str(project), "--project-dir",
                           str(project)], capture_output=True, text=True, env=env, cwd=project,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The example project copied to a folder outside the repository, as a user copies
    it, after `dbt deps && dbt build` with no environment variable about duckcluster."""
    tmp = tmp_path_factory.mktemp("dbt")
    project = tmp / "somewhere" / "my_copy"
    shutil.copytree(ROOT / "examples" / "dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "dbt_packages", "logs", "*.duckdb*",
                                                  "package-lock.yml"))
    db = tmp / "analytics.duckdb"
    r = dbt(project, "deps", db=db)
    assert r.returncode == 0, r.stdout + r.stderr
    r = dbt(project, "build", db=db)
    assert r.returncode == 0, r.stdout + r.stderr
    return project, db, r.stdout


def read(db: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query).fetchall()


def test_build_passes_every_model_and_test(built):
    _, _, out = built
    assert "Completed successfully" in out
    for model in ("raw_docs", "docs", "doc_topics", "topics", "docs_enriched", "docs_latest",
                  "topic_drift", "docs_lake", "lake_topics"):
        assert f"main.{model} " in out, model
    assert "PASS dbt_duckcluster_no_embedding_drift_topic_drift_" in out
    assert "PASS docs_latest_embedding_no_drift" in out


def test_one_shot_model(built):
    _, db, _ = built
    rows = read(db, "SELECT count(*), count(DISTINCT cluster_id), min(cosine_similarity_to_centroid) "
                    "FROM doc_topics")
    assert rows[0][:2] == (400, 4) and rows[0][2] > 0


def test_a_parquet_source_declared_the_dbt_duckdb_way(built):
    """sources: with meta.external_location render as a path; duckcluster reads the files."""
    project, db, _ = built
    assert (project / "docs_lake.parquet").is_file()
    assert read(db, "SELECT count(*), count(DISTINCT cluster_id) FROM lake_topics") == [(400, 4)]
    assert read(db, "SELECT count(*) FROM lake_topics l JOIN doc_topics d USING (doc_id) "
                    "WHERE l.cluster_id IS NULL") == [(0,)]


def test_cluster_run_model_stores_a_labeled_run(built):
    _, db, _ = built
    assert read(db, "SELECT count(*), count(DISTINCT cluster_id), count(x), count(DISTINCT run_id) "
                    "FROM topics") == [(160, 4, 160, 1)]
    with duckcluster.connect(str(db), read_only=True) as con:
        runs = con.execute("SELECT status, mode, n_members FROM cluster_runs('topics')").fetchall()
        assert runs == [("succeeded", "full", 160)]
        labels = con.execute("SELECT label FROM cluster_centroids('topics') "
                             "WHERE hierarchy_level = 0").fetchall()
        assert len(labels) == 4 and all(lbl for (lbl,) in labels)
        (silhouette,) = con.execute("SELECT silhouette_score FROM cluster_quality('topics')"
                                    ).fetchone()
        assert silhouette > 0.1
        # the run members are exactly the model's rows
        assert con.execute("SELECT count(*) FROM cluster_members('topics') m "
                           "JOIN topics t ON m.id = t.doc_id "
                           "AND m.cluster_id = t.cluster_id").fetchone() == (160,)


def test_enriched_model_assigns_new_docs_and_flags_new_content(built):
    _, db, _ = built
    rows = {(m, a): (n, neg) for m, a, n, neg in read(db, """
        SELECT strftime(published_on, '%Y-%m'), assigned, count(*), count(*) FILTER (cluster_id = -1)
        FROM docs_enriched GROUP BY ALL""")}
    assert rows[("2024-01", False)] == (160, 0)  # members of the run
    feb_n, feb_new = rows[("2024-02", True)]
    mar_n, mar_new = rows[("2024-03", True)]
    assert feb_n == 160 and feb_new < 0.1 * feb_n  # same topics as January
    assert mar_n == 80 and mar_new > 0.5 * mar_n  # March brings a topic January lacks
    # every assigned topic carries the run's label
    assert read(db, "SELECT count(*) FROM docs_enriched WHERE cluster_id >= 0 AND label IS NULL"
                ) == [(0,)]


def test_drift_model_and_file_format(built):
    _, db, _ = built
    assert read(db, "SELECT method, drift_detected, n_baseline, n_current FROM topic_drift") == [
        ("mmd", False, 160, 160)]
    # profiles.yml asks for v1.4.0 storage: the file opens in DuckDB 1.4+
    assert read(db, "SELECT tags['storage_version'] FROM duckdb_databases() "
                    "WHERE database_name = 'analytics'") == [("v1.4.0+",)]


def test_stock_duckdb_cli_reads_what_dbt_built(built):
    """The file opens in the duckdb-cli wheel (DuckDB 1.5) with the read-side macros."""
    cli = Path(sys.executable).with_name("duckdb")
    if not cli.exists():
        pytest.skip("the duckdb-cli wheel is not installed")
    _, db, _ = built
    r = subprocess.run([str(cli), "-readonly", "-csv", str(db), "-c",
                        f".read {ROOT / 'sql' / 'duckcluster.sql'}", "-c",
                        ("SELECT count(*) AS n, count(label) AS labeled "
                         "FROM cluster_centroids('topics')")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["n,labeled", "4,4"]


def test_shifted_month_fails_the_drift_tests(built):
    """A second build (the cluster_run model again, the drift models and their tests)
    where March is compared with January."""
    project, db, _ = built
    r = dbt(project, "build", "--select", "topics", "docs_latest+", "topic_drift+",
            "--vars", "{drift_month: '2024-03'}", db=db)
    assert r.returncode != 0
    assert "FAIL 1 dbt_duckcluster_no_embedding_drift_topic_drift_" in r.stdout
    assert "FAIL 1 docs_latest_embedding_no_drift" in r.stdout
    # the failing test says which method flagged what: statistic, p-value, threshold
    said = [line for line in r.stdout.splitlines() if "no_embedding_drift on" in line]
    assert len(said) == 2, r.stdout
    for line in said:
        assert re.search(r": (mmd|energy) detected drift \(statistic [0-9.e-]+, p-value [0-9.e-]+ < "
                         r"threshold 0\.05; \d+ baseline vs \d+ current rows\)", line), line
    assert read(db, "SELECT drift_detected FROM topic_drift") == [(True,)]
    # the cluster_run model was rebuilt over its existing table: a second run, one table
    assert read(db, "SELECT count(*), count(DISTINCT run_id) FROM topics") == [(160, 1)]
    assert read(db, "SELECT count(*) FROM duckcluster.runs WHERE name = 'topics' "
                    "AND status = 'succeeded'") == [(2,)]


def test_plugin_installs_on_connection_and_cursor():
    from duckcluster.dbt import Plugin

    plugin = Plugin(name="duckcluster", plugin_config={})
    config: dict = {}
    plugin.update_connection_config(None, config)
    assert config == {"storage_compatibility_version": duckcluster.DEFAULT_STORAGE_VERSION}
    con = duckdb.connect()
    try:
        plugin.configure_connection(con)
        cur = con.cursor()
        plugin.configure_cursor(cur)
        assert cur.execute("SELECT count(*) FROM cluster_list()").fetchall() == [(0,)]
        cur.close()
    finally:
        con.close()


def test_the_example_keeps_the_installed_package(tmp_path):
    """examples/dbt_project/dbt_duckcluster is the package duckcluster installs, file for
    file (refresh it with `duckcluster dbt-package --into examples/dbt_project`)."""
    installed, kept = Path(installed_package()), ROOT / "examples" / "dbt_project" / "dbt_duckcluster"
    files = sorted(p.relative_to(installed) for p in installed.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    assert files and files == sorted(p.relative_to(kept) for p in kept.rglob("*") if p.is_file())
    for f in files:
        assert (installed / f).read_bytes() == (kept / f).read_bytes(), f


def test_dbt_package_into_a_project(tmp_path):
    cli = str(Path(sys.executable).with_name("duckcluster"))
    (tmp_path / "dbt_project.yml").write_text("name: p\n")
    (tmp_path / "dbt_duckcluster").mkdir()
    (tmp_path / "dbt_duckcluster" / "stale.sql").write_text("-- from an older duckcluster")
    out = subprocess.run([cli, "dbt-package", "--into", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "- local: dbt_duckcluster" in out.stdout
    assert (tmp_path / "dbt_duckcluster" / "macros" / "cluster_run.sql").is_file()
    assert not (tmp_path / "dbt_duckcluster" / "stale.sql").exists()
    bad = subprocess.run([cli, "dbt-package", "--into", str(tmp_path / "dbt_duckcluster" / "macros")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no dbt_project.yml there" in bad.stderr
    assert "Traceback" not in bad.stderr
