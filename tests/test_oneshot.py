"""cluster_embeddings: the one-shot primitive behind GROUP BY over embeddings."""

from __future__ import annotations

import duckdb
import pytest
from sklearn.metrics import adjusted_rand_score

import duckcluster


def test_keeps_every_column_and_groups(con, docs):
    X, y = docs
    con.sql("ALTER TABLE docs ADD COLUMN title VARCHAR").fetchall()
    con.sql("UPDATE docs SET title = 'doc ' || doc_id").fetchall()
    rel = con.sql("SELECT * FROM cluster_embeddings('docs', 'embedding', algorithm := 'kmeans', "
                  "params := {'n_clusters': 5}, id := 'doc_id')")
    assert rel.columns == ["doc_id", "topic", "embedding", "title", "cluster_id",
                           "cosine_similarity_to_centroid"]
    rows = rel.fetchall()
    assert len(rows) == 500
    by_id = {r[0]: r[4] for r in rows}
    assert adjusted_rand_score(y, [by_id[i] for i in range(500)]) == 1.0
    assert all(0.9 < r[5] <= 1.0001 for r in rows)
    grouped = con.sql("SELECT cluster_id, count(*) AS n, any_value(title) FROM cluster_embeddings("
                      "'docs', 'embedding', algorithm := 'kmeans', params := {'n_clusters': 5}, "
                      "id := 'doc_id') GROUP BY ALL ORDER BY n DESC").fetchall()
    assert [g[1] for g in grouped] == [100] * 5


def test_deterministic_for_a_seed_and_json_params(con, docs):
    q = ("SELECT doc_id, cluster_id FROM cluster_embeddings('docs', 'embedding', algorithm := "
         "'hdbscan', params := '{\"min_cluster_size\": 10}', seed := 7) ORDER BY doc_id")
    assert con.sql(q).fetchall() == con.sql(q).fetchall()


def test_query_source_cte_and_nulls(con, docs):
    con.sql("UPDATE docs SET embedding = NULL WHERE doc_id < 3").fetchall()
    rows = con.sql("WITH d AS (SELECT * FROM docs WHERE topic < 2) SELECT doc_id, cluster_id FROM "
                   "cluster_embeddings('d', 'embedding', algorithm := 'kmeans', "
                   "params := {'n_clusters': 2}) ORDER BY doc_id").fetchall()
    assert len(rows) == 200 and [r[1] for r in rows[:3]] == [None, None, None]
    rows = con.sql("SELECT count(*) FROM cluster_embeddings('(SELECT * FROM docs WHERE topic = 4)', "
                   "'embedding', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    assert rows == [(100,)]


def test_errors(con, docs):
    for sql, message in [
        ("SELECT * FROM cluster_embeddings('docs', 'embedding', algorithm := 'kmeanz')",
         "Unknown algorithm 'kmeanz'. Did you mean 'kmeans'?"),
        ("SELECT * FROM cluster_embeddings('docs', 'embeding', algorithm := 'kmeans')",
         'column "embeding"'),
        ("SELECT * FROM cluster_embeddings('(SELECT * FROM docs LIMIT 2)', 'embedding', "
         "algorithm := 'kmeans', params := {'n_clusters': 5})",
         "kmeans with these params needs at least 5 rows with an embedding; the source has 2"),
    ]:
        with pytest.raises(duckdb.Error) as err:
            con.sql(sql).fetchall()
        assert message.lower() in str(err.value).lower(), sql


def test_sql_function_runs_sugar_and_scripts(con, docs):
    rel = duckcluster.sql(con, "SELECT cluster_id, count(*) AS n FROM docs CLUSTER BY "
                               "EMBEDDING(embedding) USING kmeans(n_clusters = 5) "
                               "GROUP BY cluster_id ORDER BY cluster_id")
    assert [r[1] for r in rel.fetchall()] == [100] * 5
    rel = duckcluster.sql(con, "CREATE TABLE t AS SELECT 1 AS a; SELECT a + 1 FROM t")
    assert rel.fetchall() == [(2,)]
