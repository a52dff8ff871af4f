"""cluster_enrich: create, update in place, idempotent re-runs, one transaction."""

from __future__ import annotations

import duckdb
import pytest
from label_data import cluster, make_docs


@pytest.fixture
def topics(con):
    make_docs(con)
    run = cluster(con)
    con.sql("SELECT cluster_label('topics', text := 'body')").fetchall()
    return con, run


def snapshot(con, table):
    return con.sql(f"SELECT * EXCLUDE (embedding) FROM {table} ORDER BY id").fetchall()


def test_creates_target_with_fields(topics):
    con, run = topics
    msg = con.sql("SELECT cluster_enrich('topics', 'docs_enriched', "
                  "fields := ['cluster_id', 'label', 'summary', 'keywords', 'node_id', "
                  "'cosine_similarity_to_centroid', 'run_id'])").fetchall()[0][0]
    assert msg.startswith("created docs_enriched: 120 row(s), 120 member(s) of run " + run)
    cols = [r[0] for r in con.sql("DESCRIBE docs_enriched").fetchall()]
    assert cols[:7] == ["id", "topic", "body", "meta", "extra", "document_blobs", "embedding"]
    assert cols[7:] == ["cluster_id", "label", "summary", "keywords", "node_id",
                        "cosine_similarity_to_centroid", "run_id"]
    bad = con.sql("SELECT count(*) FROM docs_enriched e JOIN cluster_members('topics') m "
                  "ON m.id = CAST(e.id AS VARCHAR) JOIN cluster_centroids('topics') c "
                  "ON c.cluster_id = m.cluster_id WHERE e.cluster_id <> m.cluster_id OR "
                  "e.label <> c.label OR e.keywords <> c.keywords OR e.node_id <> m.node_id "
                  "OR e.run_id <> ?", params=[run]).fetchall()[0][0]
    assert bad == 0
    assert con.sql("SELECT count(DISTINCT label) FROM docs_enriched").fetchall() == [(4,)]


def test_second_run_is_idempotent(topics):
    con, _ = topics
    q = "SELECT cluster_enrich('topics', 'docs_enriched', fields := ['cluster_id', 'label'])"
    con.sql(q).fetchall()
    first = snapshot(con, "docs_enriched")
    msg = con.sql(q).fetchall()[0][0]
    assert msg.startswith("updated docs_enriched: 120 row(s), 120 member(s)")
    assert snapshot(con, "docs_enriched") == first
    log = con.sql("SELECT created_target, n_rows, n_matched, n_inserted, columns FROM "
                  "cluster_enrichments('topics')").fetchall()
    assert log == [(True, 120, 120, 0, ["cluster_id", "label"]),
                   (False, 120, 120, 0, ["cluster_id", "label"])]


def test_in_place_on_a_primary_key_table_and_rows_outside_the_run(topics):
    con, _ = topics
    q = "SELECT cluster_enrich('topics', 'docs', fields := ['cluster_id', 'label', 'keywords'])"
    con.sql(q).fetchall()
    first = snapshot(con, "docs")
    con.sql(q).fetchall()
    assert snapshot(con, "docs") == first
    con.execute("INSERT INTO docs (id, topic, body, embedding) SELECT 999, 'new', 'late row', "
                "embedding FROM docs WHERE id = 0")
    con.sql(q).fetchall()
    assert con.sql("SELECT cluster_id, label, keywords FROM docs WHERE id = 999").fetchall() \
        == [(None, None, None)]
    assert con.sql("SELECT count(*) FROM docs WHERE cluster_id IS NULL").fetchall() == [(1,)]


def test_new_source_rows_are_inserted_into_an_existing_target(topics):
    con, _ = topics
    con.sql("SELECT cluster_enrich('topics', 'out', fields := ['cluster_id'])").fetchall()
    con.execute("INSERT INTO docs (id, topic, body, embedding) SELECT 500, 'new', 'late', "
                "embedding FROM docs WHERE id = 1")
    msg = con.sql("SELECT cluster_enrich('topics', 'out', fields := ['cluster_id'])"
                  ).fetchall()[0][0]
    assert "inserted 1 new source row(s)" in msg
    assert con.sql("SELECT count(*), count(cluster_id) FROM out").fetchall() == [(121, 120)]
    con.sql("SELECT cluster_enrich('topics', 'out', fields := ['cluster_id'], "
            "insert_missing := false)").fetchall()
    assert con.sql("SELECT count(*) FROM out").fetchall() == [(121,)]


def test_a_new_run_updates_the_values(topics):
    con, run1 = topics
    q = "SELECT cluster_enrich('topics', 'out', fields := ['label', 'run_id'])"
    con.sql(q).fetchall()
    run2 = con.sql("SELECT cluster_execute('topics')").fetchall()[0][0]
    con.sql("SELECT cluster_label('topics', text := 'upper(topic)')").fetchall()
    con.sql(q).fetchall()
    assert con.sql("SELECT DISTINCT run_id FROM out").fetchall() == [(run2,)]
    assert {r[0] for r in con.sql("SELECT DISTINCT label FROM out").fetchall()} == \
        {"fruit", "space", "code", "sport"}
    con.sql(f"SELECT cluster_enrich('topics', 'out', fields := ['label', 'run_id'], "
            f"run_id := '{run1}')").fetchall()
    assert con.sql("SELECT DISTINCT run_id FROM out").fetchall() == [(run1,)]


def test_user_columns_are_never_overwritten(topics):
    con, _ = topics
    con.execute("CREATE TABLE mine AS SELECT id, 'keep me' AS label FROM docs")
    with pytest.raises(duckdb.Error, match=r"already has column\(s\) 'label' that cluster_enrich "
                                           r"did not write; pass prefix := 'cluster_'"):
        con.sql("SELECT cluster_enrich('topics', 'mine', fields := ['cluster_id', 'label'])"
                ).fetchall()
    assert [r[0] for r in con.sql("DESCRIBE mine").fetchall()] == ["id", "label"]
    con.sql("SELECT cluster_enrich('topics', 'mine', fields := ['cluster_id', 'label'], "
            "prefix := 'cluster_')").fetchall()
    assert con.sql("SELECT DISTINCT label FROM mine").fetchall() == [("keep me",)]
    assert con.sql("SELECT count(cluster_label) FROM mine").fetchall() == [(120,)]
    con.execute("ALTER TABLE docs ADD COLUMN label VARCHAR")
    with pytest.raises(duckdb.Error, match=r"The source already has column\(s\) 'label'; pass "
                                           r"prefix := 'cluster_'"):
        con.sql("SELECT cluster_enrich('topics', 'fresh', fields := ['label'])").fetchall()
    assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'fresh'"
                   ).fetchall() == [(0,)]


def test_failure_midway_leaves_nothing_behind(topics):
    """A NOT NULL violation on the insert step rolls back the added column too."""
    con, _ = topics
    con.sql("SELECT cluster_enrich('topics', 'out', fields := ['cluster_id'])").fetchall()
    con.execute("ALTER TABLE out ALTER cluster_id SET NOT NULL")
    con.execute("INSERT INTO docs (id, topic, body, embedding) SELECT 777, 'n', 'x', embedding "
                "FROM docs WHERE id = 2")
    before = snapshot(con, "out")
    with pytest.raises(duckdb.Error, match="NOT NULL"):
        con.sql("SELECT cluster_enrich('topics', 'out', fields := ['cluster_id', 'label'])"
                ).fetchall()
    assert [r[0] for r in con.sql("DESCRIBE out").fetchall()][-1] == "cluster_id"
    assert snapshot(con, "out") == before
    assert con.sql("SELECT count(*) FROM cluster_enrichments('topics')").fetchall() == [(1,)]


def test_bad_arguments(topics):
    con, _ = topics
    with pytest.raises(duckdb.Error, match="Unknown field 'lable' for cluster_enrich. Did you "
                                           "mean 'label'?"):
        con.sql("SELECT cluster_enrich('topics', 'x', fields := ['lable'])").fetchall()
    con.execute("CREATE VIEW v AS SELECT * FROM docs")
    with pytest.raises(duckdb.Error, match="target 'v' is a view"):
        con.sql("SELECT cluster_enrich('topics', 'v')").fetchall()
    con.execute("CREATE TABLE nokey AS SELECT body FROM docs")
    with pytest.raises(duckdb.Error, match="The id column 'id' does not exist"):
        con.sql("SELECT cluster_enrich('topics', 'nokey')").fetchall()
    assert con.sql("SELECT count(*) FROM cluster_enrichments('topics')").fetchall() == [(0,)]
