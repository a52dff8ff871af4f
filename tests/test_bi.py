"""BI access: a duckcluster database read the way a BI tool reads it.

SQLAlchemy + duckdb-engine, read-only, no duckcluster import on the reading
side: plain tables (the catalog and an enriched table), schema reflection, and
the read-side macros of sql/duckcluster.sql loaded as the connection's initial
SQL (what a BI tool's "init SQL" setting does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("duckdb_engine", reason="duckdb-engine is not installed")

from label_data import make_docs

import duckcluster

ROOT = Path(__file__).resolve().parents[1]

LABELS_BY_CLUSTER = """
    SELECT c.label, count(*) AS n, round(avg(m.cosine_similarity_to_centroid), 3) AS mean_similarity
    FROM duckcluster.members m
    JOIN duckcluster.centroids c USING (run_id, cluster_id)
    WHERE c.hierarchy_level = 0
      AND m.run_id = (SELECT max_by(run_id, run_seq) FROM duckcluster.runs
                      WHERE name = 'topics' AND status = 'succeeded')
    GROUP BY c.label ORDER BY c.label
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A file written by duckcluster: 4 topics x 30 docs, clustered, labeled, enriched."""
    path = str(tmp_path_factory.mktemp("bi") / "analytics.duckdb")
    with duckcluster.connect(path) as con:
        make_docs(con)
        con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
                "algorithm := 'kmeans', params := {'n_clusters': 4})").fetchall()
        con.sql("SELECT cluster_execute('topics')").fetchall()
        con.sql("SELECT cluster_label('topics', text := 'body')").fetchall()
        con.sql("SELECT cluster_enrich('topics', 'docs_enriched', "
                "fields := ['cluster_id', 'label', 'keywords'])").fetchall()
    return path


@pytest.fixture
def engine(db):
    eng = sqlalchemy.create_engine(f"duckdb:///{db}", connect_args={"read_only": True})
    yield eng
    eng.dispose()


def test_group_by_cluster_label_on_the_enriched_table(engine):
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(
            "SELECT label, string_agg(DISTINCT topic, ',') AS topics, count(*) AS n "
            "FROM docs_enriched GROUP BY label ORDER BY label")).fetchall()
    assert len(rows) == 4
    for label, topics, n in rows:
        assert n == 30 and "," not in topics  # one true topic per cluster
        assert label  # offline c-TF-IDF keywords, e.g. 'rocket, orbit, space'


def test_catalog_tables_join_members_to_labels(engine):
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(LABELS_BY_CLUSTER)).fetchall()
        (quality,) = conn.execute(sqlalchemy.text(
            "SELECT silhouette_score FROM duckcluster.runs WHERE name = 'topics'")).fetchall()
    assert [n for _, n, _ in rows] == [30, 30, 30, 30]
    assert all(label and sim > 0.5 for label, _, sim in rows)
    assert quality[0] > 0.5


@pytest.mark.filterwarnings("ignore:Did not recognize type:sqlalchemy.exc.SAWarning")
def test_schema_reflection(engine):
    insp = sqlalchemy.inspect(engine)
    assert {"centroids", "definitions", "members", "runs"} <= set(
        insp.get_table_names(schema="duckcluster"))
    assert "docs_enriched" in insp.get_table_names()
    cols = {c["name"] for c in insp.get_columns("members", schema="duckcluster")}
    assert {"run_id", "id", "cluster_id", "cosine_similarity_to_centroid", "x", "y"} <= cols
    cols = {c["name"] for c in insp.get_columns("docs_enriched")}
    assert {"cluster_id", "label", "keywords"} <= cols


def test_read_side_macros_as_initial_sql(engine):
    """A BI tool's init SQL: `.read sql/duckcluster.sql` without Python UDFs."""
    init_sql = (ROOT / "sql" / "duckcluster.sql").read_text(encoding="utf-8")

    @sqlalchemy.event.listens_for(engine, "connect")
    def _init(dbapi_conn, _record):
        dbapi_conn.execute(init_sql)

    with engine.connect() as conn:
        q = conn.execute(sqlalchemy.text(
            "SELECT n_clusters, should_recluster FROM cluster_quality('topics')")).fetchall()
        by_label = conn.execute(sqlalchemy.text(
            "SELECT c.label, count(*) FROM cluster_members('topics') m "
            "JOIN cluster_centroids('topics') c USING (cluster_id) GROUP BY ALL")).fetchall()
    assert q == [(4, False)]
    assert sorted(n for _, n in by_label) == [30, 30, 30, 30]


def test_no_initial_sql_the_file_holds_the_read_side(engine):
    """What a BI tool without per-connection SQL runs (Superset's SQL Lab, Metabase): the
    persistent views and macros in the file, with nothing loaded first."""
    text = sqlalchemy.text
    with engine.connect() as conn:
        quality = conn.execute(text(
            "SELECT name, n_clusters, should_recluster FROM duckcluster.latest_quality")).fetchall()
        by_label = conn.execute(text(
            "SELECT label, count(*) AS n FROM duckcluster.latest_members WHERE name = 'topics' "
            "GROUP BY label ORDER BY label")).fetchall()
        joined = conn.execute(text(
            "SELECT c.label, count(*) AS n FROM duckcluster.cluster_members('topics') m "
            "JOIN duckcluster.latest_centroids c USING (run_id, cluster_id) "
            "GROUP BY ALL ORDER BY ALL")).fetchall()
        macro = conn.execute(text(
            "SELECT n_clusters FROM duckcluster.cluster_quality('topics')")).fetchall()
    assert quality == [("topics", 4, False)] and macro == [(4,)]
    assert [n for _, n in by_label] == [30, 30, 30, 30] and all(label for label, _ in by_label)
    assert joined == by_label
    views = set(sqlalchemy.inspect(engine).get_view_names(schema="duckcluster"))
    assert {"latest_runs", "latest_quality", "latest_centroids", "latest_members"} <= views


def test_read_only_refuses_writes(engine):
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DBAPIError, match="read-only"):
        conn.execute(sqlalchemy.text("DELETE FROM duckcluster.members"))
