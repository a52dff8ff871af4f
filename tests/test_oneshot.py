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


# -- every input form and option of a definition (issue 15, item 9) -----------------------

FORMS = """
CREATE TABLE forms AS SELECT doc_id, topic, embedding,
    CAST(embedding AS DOUBLE[]) AS dbl,
    CAST(map_from_entries(list_transform(range(32), lambda i: {'k': i::INTEGER,
        'v': CASE WHEN abs(embedding[i + 1]) > 0.1 THEN embedding[i + 1] ELSE 0 END}))
        AS MAP(INTEGER, FLOAT)) AS sparse_map,
    {'indices': list_transform(range(32), lambda i: i::INTEGER),
     'values': CAST(embedding AS FLOAT[])} AS sparse_struct,
    [CAST(embedding AS FLOAT[]), list_transform(CAST(embedding AS FLOAT[]), lambda x: x * 0.5)]
        AS multi
FROM docs
"""


def _labels(con, sql):
    return dict(con.sql(sql).fetchall())


@pytest.mark.parametrize("column, extra", [
    ("'dbl'", ""), ("'sparse_map'", ""), ("'sparse_struct'", ""), ("'multi'", ""),
    ("'multi'", ", pooling := 'max'"), ("'multi'", ", pooling := 'first'"),
    ("['embedding', 'sparse_map']", ""), ("'embedding'", ", sample_size := 200"),
])
def test_every_input_form_clusters_like_a_definition(con, docs, column, extra):
    """The one-shot gives a definition's labels for the same column and options (same
    seed), and the known topics; cluster_embeddings on a MAP column used to fail with
    'Unimplemented type for cast (MAP(INTEGER, FLOAT) -> FLOAT[])'."""
    _, y = docs
    con.sql(FORMS).fetchall()
    got = _labels(con, f"SELECT doc_id, cluster_id FROM cluster_embeddings('forms', {column}, "
                       f"algorithm := 'kmeans', params := {{'n_clusters': 5}}, id := 'doc_id'"
                       f"{extra})")
    con.sql(f"SELECT cluster_create('d', source := 'forms', embedding := {column}, "
            f"algorithm := 'kmeans', params := {{'n_clusters': 5}}, id := 'doc_id'{extra})"
            ).fetchall()
    con.sql("SELECT cluster_execute('d')").fetchall()
    want = _labels(con, "SELECT id, cluster_id FROM cluster_members('d')")
    assert got == want
    assert adjusted_rand_score(y, [got[i] for i in range(500)]) == 1.0


def test_null_values_of_every_form_stay_unclustered(con, docs):
    con.sql(FORMS).fetchall()
    con.sql("UPDATE forms SET sparse_map = NULL, multi = NULL WHERE doc_id < 4").fetchall()
    for col in ("sparse_map", "multi"):
        rows = con.sql(f"SELECT doc_id, cluster_id, cosine_similarity_to_centroid FROM "
                       f"cluster_embeddings('forms', '{col}', algorithm := 'kmeans', "
                       "params := {'n_clusters': 5}, id := 'doc_id') WHERE doc_id < 6 "
                       "ORDER BY doc_id").fetchall()
        assert [r[1] is None for r in rows] == [True] * 4 + [False] * 2, col


def test_pooling_is_validated_and_reaches_the_fit(con, docs):
    con.sql(FORMS).fetchall()
    with pytest.raises(duckdb.Error, match="'pooling' parameter .* must be one of 'mean', 'max', "
                                           "'first'. Got 'median' instead"):
        con.sql("SELECT * FROM cluster_embeddings('forms', 'multi', pooling := 'median')").fetchall()


def test_cluster_by_embedding_takes_the_same_options(con, docs):
    con.sql(FORMS).fetchall()
    sugar = duckcluster.sql(con, "SELECT doc_id, cluster_id FROM forms CLUSTER BY EMBEDDING(multi) "
                                 "USING kmeans(n_clusters = 5) ID doc_id "
                                 "OPTIONS (pooling = 'max', seed = 7, sample_size = 300)").fetchall()
    plain = con.sql("SELECT doc_id, cluster_id FROM cluster_embeddings('forms', 'multi', "
                    "algorithm := 'kmeans', params := {'n_clusters': 5}, id := 'doc_id', "
                    "pooling := 'max', seed := 7, sample_size := 300)").fetchall()
    assert sorted(sugar) == sorted(plain) and len(plain) == 500
    maps = duckcluster.sql(con, "SELECT cluster_id, count(*) FROM forms CLUSTER BY "
                                "EMBEDDING(sparse_map) USING kmeans(n_clusters = 5) "
                                "GROUP BY ALL").fetchall()
    assert sorted(n for _, n in maps) == [100] * 5
    with pytest.raises(duckcluster.SpecError, match="Unknown option 'poolng' in OPTIONS.*did you "
                                                    "mean 'pooling'"):
        duckcluster.sql(con, "SELECT * FROM forms CLUSTER BY EMBEDDING(multi) USING kmeans "
                             "OPTIONS (poolng = 'max')")


# -- partition_by: one clustering per group in one call (issue 15, item 8) ------------------

def _regions(con):
    con.sql("ALTER TABLE docs ADD COLUMN region VARCHAR").fetchall()
    con.sql("UPDATE docs SET region = CASE WHEN topic < 2 THEN 'eu' WHEN topic < 4 THEN 'us' "
            "ELSE NULL END").fetchall()


def test_partition_by_clusters_each_group_on_its_own(con, docs):
    """Each region is clustered alone (its own k clusters, numbered from 0); NULL is a
    partition of its own; the result equals one call per region."""
    _regions(con)
    q = ("SELECT doc_id, region, topic, cluster_id FROM cluster_embeddings('docs', 'embedding', "
         "algorithm := 'kmeans', params := {'n_clusters': 2}, id := 'doc_id', "
         "partition_by := 'region')")
    rows = con.sql(q).fetchall()
    assert len(rows) == 500
    by_region = {}
    for doc_id, region, topic, cluster_id in rows:
        by_region.setdefault(region, {})[doc_id] = (topic, cluster_id)
    assert set(by_region) == {"eu", "us", None}
    for region, members in by_region.items():
        assert {c for _, c in members.values()} == {0, 1}, region  # ids within the partition
        where = "region IS NULL" if region is None else f"region = '{region}'"
        alone = dict(con.sql(
            f"SELECT doc_id, cluster_id FROM cluster_embeddings('(SELECT * FROM docs WHERE "
            f"{where.replace(chr(39), chr(39) * 2)})', 'embedding', algorithm := 'kmeans', "
            "params := {'n_clusters': 2}, id := 'doc_id')").fetchall())
        assert alone == {i: c for i, (_, c) in members.items()}, region
    eu = by_region["eu"].values()
    assert adjusted_rand_score([t for t, _ in eu], [c for _, c in eu]) == 1.0


def test_partition_by_errors_name_the_partition(con, docs):
    _regions(con)
    with pytest.raises(duckdb.Error, match="partition region = 'us': kmeans with these params "
                                           "needs at least 3 rows with an embedding; the source "
                                           "has 2"):
        con.sql("SELECT * FROM cluster_embeddings('(SELECT * FROM docs WHERE region = ''eu'' OR "
                "doc_id IN (200, 201))', 'embedding', algorithm := 'kmeans', "
                "params := {'n_clusters': 3}, partition_by := 'region')").fetchall()
    with pytest.raises(duckdb.Error, match='column "regio" not found'):
        con.sql("SELECT * FROM cluster_embeddings('docs', 'embedding', partition_by := 'regio')"
                ).fetchall()
    with pytest.raises(duckdb.Error, match="the source is empty or every embedding is NULL"):
        con.sql("SELECT * FROM cluster_embeddings('(SELECT * FROM docs WHERE false)', "
                "'embedding', algorithm := 'kmeans', partition_by := 'region')").fetchall()


def test_partition_by_in_the_clause(con, docs):
    _regions(con)
    got = duckcluster.sql(con, "SELECT region, count(DISTINCT cluster_id) AS k FROM docs CLUSTER BY "
                               "EMBEDDING(embedding) USING kmeans(n_clusters = 2) "
                               "OPTIONS (partition_by = 'region') GROUP BY ALL ORDER BY ALL"
                          ).fetchall()
    assert got == [("eu", 2), ("us", 2), (None, 2)]
