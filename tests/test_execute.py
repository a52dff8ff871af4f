"""End to end on a real DuckDB file: define, execute, read back, reopen, reproduce."""

from __future__ import annotations

import json
import os

import duckdb
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import duckcluster
from conftest import blobs, load_table

KMEANS = ("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
          "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})")


def q(con, sql, params=None):
    return con.execute(sql, params).fetchall() if params else con.sql(sql).fetchall()


def ari(con, name, y):
    rows = q(con, f"SELECT CAST(id AS BIGINT), cluster_id FROM cluster_members('{name}') ORDER BY 1")
    return adjusted_rand_score(y, [r[1] for r in rows])


def test_issue_example_hdbscan_whitening_umap(con, docs):
    """The foundation issue's example, verbatim apart from the sizes."""
    X, y = docs
    assert q(con, "SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
                  "id := 'doc_id', algorithm := 'hdbscan', params := {'min_cluster_size': 20}, "
                  "preprocessing := [{'method': 'whitening'}, {'method': 'umap', 'n_components': 10}])"
             ) == [("topics",)]
    run_id = q(con, "SELECT cluster_execute('topics')")[0][0]
    assert run_id.startswith("run_")
    sizes = q(con, "SELECT cluster_id, count(*) FROM cluster_members('topics') GROUP BY ALL ORDER BY 2 DESC")
    assert sum(n for _, n in sizes) == 500
    assert ari(con, "topics", y) > 0.95
    cents = q(con, "SELECT cluster_id, size, mean_cosine_similarity, min_cosine_similarity, "
                   "len(centroid) FROM cluster_centroids('topics')")
    assert {c[0] for c in cents} == {c for c, _ in sizes if c >= 0}
    assert all(c[4] == 32 and c[2] >= c[3] for c in cents)
    (qual,) = q(con, "SELECT n_clusters, noise_ratio, silhouette_score, cluster_size_entropy, "
                     "should_recluster FROM cluster_quality('topics')")
    assert qual[0] == 5 and 0 <= qual[1] < 0.1 and qual[2] > 0.5 and qual[3] > 0.95
    runs = q(con, "SELECT run_id, status, mode, n_rows, n_members, seed FROM cluster_runs('topics')")
    assert runs == [(run_id, "succeeded", "full", 500, 500, 42)]


@pytest.mark.parametrize("column_sql", [
    "CAST(embedding AS DOUBLE[32])",
    "CAST(embedding AS FLOAT[])",
    "CAST(embedding AS DOUBLE[])",
])
def test_embedding_column_types(con, docs, column_sql):
    X, y = docs
    con.sql(f"CREATE TABLE docs2 AS SELECT doc_id, {column_sql} AS e FROM docs").fetchall()
    q(con, "SELECT cluster_create('t', source := 'docs2', embedding := 'e', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 5})")
    q(con, "SELECT cluster_execute('t')")
    assert ari(con, "t", y) == 1.0


def test_several_columns_sparse_and_multivector(con, docs):
    X, y = docs
    con.sql("""CREATE TABLE multi AS SELECT doc_id,
        embedding AS a,
        CAST(embedding[1:8] AS FLOAT[]) AS b,
        map(list_transform(range(8), lambda i: i::INTEGER), list_transform(range(8), lambda i: embedding[i + 1])) AS sparse_map,
        {'indices': [0, 1, 2, 3], 'values': embedding[1:4]} AS sparse_struct,
        [embedding, embedding] AS mv
        FROM docs""").fetchall()
    for name, emb in [("two", "['a', 'b']"), ("smap", "'sparse_map'"),
                      ("sstruct", "'sparse_struct'"), ("mv", "'mv'")]:
        q(con, f"SELECT cluster_create('{name}', source := 'multi', embedding := {emb}, "
               "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})")
        q(con, f"SELECT cluster_execute('{name}')")
        dim = q(con, f"SELECT dim FROM cluster_runs('{name}')")[0][0]
        assert dim == {"two": 40, "smap": 8, "sstruct": 4, "mv": 32}[name]
        assert ari(con, name, y) > (0.9 if name != "sstruct" else 0.5), name


def test_sources_parquet_glob_query_and_view(con, docs, tmp_path):
    X, y = docs
    pq = str(tmp_path / "docs.parquet")
    con.sql(f"COPY docs TO '{pq}' (FORMAT parquet)").fetchall()
    con.sql("CREATE VIEW docs_view AS SELECT * FROM docs WHERE topic < 3").fetchall()
    for name, source in [("pq", pq), ("glob", str(tmp_path / "*.parquet")),
                         ("query", "(SELECT * FROM docs WHERE topic < 3)"), ("view", "docs_view")]:
        con.execute("SELECT cluster_create(?, source := ?, embedding := 'embedding', "
                    "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})",
                    [name, source]).fetchall()
        q(con, f"SELECT cluster_execute('{name}')")
        n = q(con, f"SELECT n_members FROM cluster_runs('{name}')")[0][0]
        assert n == (500 if name in ("pq", "glob") else 300)


def test_reopen_persistence_and_parquet_artifacts(db_path, docs, con):
    q(con, KMEANS)
    run_id = q(con, "SELECT cluster_execute('topics')")[0][0]
    before = {f: q(con, f"SELECT * FROM {f}('topics')") for f in
              ("cluster_members", "cluster_centroids", "cluster_quality", "cluster_runs")}
    con.close()
    con2 = duckcluster.connect(db_path)
    try:
        for f, rows in before.items():
            assert q(con2, f"SELECT * FROM {f}('topics')") == rows, f
        path = q(con2, "SELECT artifacts_path FROM cluster_runs('topics')")[0][0]
        assert os.path.basename(path) == run_id
        members_pq = q(con2, f"SELECT id, cluster_id FROM '{path}/members.parquet' ORDER BY id")
        assert members_pq == q(con2, "SELECT id, cluster_id FROM cluster_members('topics') ORDER BY id")
        cents_pq = q(con2, f"SELECT cluster_id, size FROM '{path}/centroids.parquet' ORDER BY 1")
        assert cents_pq == [(i, 100) for i in range(5)]
    finally:
        con2.close()
    # the stock format: the file is readable by DuckDB 1.4+ (storage v1.4.0)
    ro = duckdb.connect(db_path, read_only=True)
    assert ro.sql("SELECT tags['storage_version'] FROM duckdb_databases() "
                  "WHERE database_name = current_database()").fetchall()[0][0].startswith("v1.")
    ro.close()


def test_reproducible_runs(con, docs):
    """Same definition, unchanged data -> identical members and metrics."""
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'hdbscan', params := {'min_cluster_size': 15}, "
           "preprocessing := [{'method': 'umap', 'n_components': 5, 'n_neighbors': 15}], "
           "sample_size := 400)")
    r1 = q(con, "SELECT cluster_execute('t')")[0][0]
    r2 = q(con, "SELECT cluster_execute('t')")[0][0]
    assert r1 != r2
    m1 = q(con, f"SELECT id, cluster_id, cosine_similarity_to_centroid, x, y FROM cluster_members('t', run_id := '{r1}')")
    m2 = q(con, f"SELECT id, cluster_id, cosine_similarity_to_centroid, x, y FROM cluster_members('t', run_id := '{r2}')")
    assert m1 == m2
    cols = "input_hash, n_clusters, silhouette_score, noise_ratio, davies_bouldin, calinski_harabasz, n_fit"
    h1, h2 = (q(con, f"SELECT {cols} FROM cluster_runs('t') WHERE run_id = '{r}'")[0] for r in (r1, r2))
    assert h1 == h2 and h1[-1] == 400


def test_result_does_not_depend_on_physical_row_order(con, docs):
    """In-memory runs read in scan order and sort by id afterwards: a copy of the
    table stored in another order gives the same members, metrics and input hash."""
    con.sql("CREATE TABLE shuffled AS SELECT * FROM docs ORDER BY hash(doc_id)").fetchall()
    assert q(con, "SELECT list(doc_id) FROM (SELECT doc_id FROM shuffled LIMIT 5)") != \
        q(con, "SELECT list(doc_id) FROM (SELECT doc_id FROM docs LIMIT 5)")
    runs = {}
    for name, table in (("a", "docs"), ("b", "shuffled")):
        q(con, f"SELECT cluster_create('{name}', source := '{table}', embedding := 'embedding', "
               "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})")
        runs[name] = q(con, f"SELECT cluster_execute('{name}')")[0][0]
    members = {n: q(con, f"SELECT id, cluster_id, cosine_similarity_to_centroid, x, y "
                         f"FROM cluster_members('{n}') ORDER BY id") for n in runs}
    assert members["a"] == members["b"]
    cols = "input_hash, silhouette_score, davies_bouldin, calinski_harabasz"
    assert q(con, f"SELECT {cols} FROM cluster_runs('a')") == \
        q(con, f"SELECT {cols} FROM cluster_runs('b')")


def test_streamed_run_over_a_view_reads_in_id_order(con, docs):
    """A view may return rows in any order (joins): sampled runs over one read it by
    id, so two runs agree; over a table they use its stable scan order."""
    con.sql("CREATE VIEW v AS SELECT d.doc_id, d.embedding FROM docs d "
            "JOIN (SELECT doc_id FROM docs) k USING (doc_id)").fetchall()
    q(con, "SELECT cluster_create('s', source := 'v', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 5}, sample_size := 200)")
    r1, r2 = (q(con, "SELECT cluster_execute('s')")[0][0] for _ in range(2))
    m1, m2 = (q(con, f"SELECT id, cluster_id, x FROM cluster_members('s', run_id := '{r}') "
                     "ORDER BY id") for r in (r1, r2))
    assert m1 == m2 and len(m1) == 500
    from duckcluster.engine import reader as _reader
    from duckcluster.core import spec as _spec

    spec = _spec.ClusterSpec.from_dict({"name": "s", "source": "v", "embedding": "embedding",
                                        "id": "doc_id", "algorithm": "kmeans",
                                        "params": {"n_clusters": 5}})
    assert _reader.plan(con, spec).ordered
    assert not _reader.plan(con, spec.replace(source="docs")).ordered


def test_every_algorithm_recovers_blobs(con):
    """ARI per algorithm on 5 well-separated blobs through the full SQL path."""
    X, y = blobs(n_per=60, k=5, d=16, spread=0.04, seed=3)
    load_table(con, "b", X)
    params = {
        "kmeans": "{'n_clusters': 5}", "dbscan": "{'eps': 0.05, 'min_samples': 5}",
        "hdbscan": "{'min_cluster_size': 10}", "agglomerative": "{'n_clusters': 5}",
        "spectral": "{'n_clusters': 5}", "gaussian_mixture": "{'n_components': 5}",
        "mean_shift": "{'bandwidth': 0.3}", "optics": "{'min_samples': 10}",
    }
    scores = {}
    for algo, p in params.items():
        q(con, f"SELECT cluster_create('{algo}', source := 'b', embedding := 'embedding', "
               f"id := 'doc_id', algorithm := '{algo}', params := {p})")
        q(con, f"SELECT cluster_execute('{algo}')")
        scores[algo] = ari(con, algo, y)
    assert all(s > 0.9 for s in scores.values()), scores


def test_hierarchical_ids_and_links(con):
    rng = np.random.default_rng(1)
    top = rng.normal(size=(2, 24))
    parts = []
    for t in top:
        for _ in range(2):
            sub = t + 0.35 * rng.normal(size=24)
            parts.append(sub + 0.03 * rng.normal(size=(120, 24)))
    load_table(con, "h", np.concatenate(parts).astype(np.float32))
    q(con, "SELECT cluster_create('h', source := 'h', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 2}, hierarchical := true, "
           "max_hierarchy_depth := 2)")
    q(con, "SELECT cluster_execute('h')")
    nodes = q(con, "SELECT node_id, parent_cluster_id, child_cluster_ids, hierarchy_level, size "
                   "FROM cluster_centroids('h')")
    levels = {n[0]: n for n in nodes}
    subs = [n for n in nodes if n[3] == 1]
    assert len(subs) >= 2 and all(n[0].startswith(n[1] + "_sub_") for n in subs)
    for n in subs:
        assert n[0] in levels[n[1]][2]
    leaf = q(con, "SELECT count(*) FROM cluster_members('h') WHERE hierarchy_level = 1 "
                  "AND node_id LIKE 'cl\\__\\_sub\\__%' ESCAPE '\\'")[0][0]
    assert leaf > 300


def test_hierarchical_with_sample_size_streams_rows_down_the_tree(con):
    """Fit the hierarchy on a seeded sample, then send every row down it: rows
    outside the sample land in the right sub-cluster, sample rows keep their
    fitted leaf, node sizes count every row, and a second run is identical."""
    rng = np.random.default_rng(1)
    top = rng.normal(size=(2, 24))
    parts, truth = [], []
    for t in top:
        for _ in range(2):
            sub = t + 0.35 * rng.normal(size=24)
            parts.append(sub + 0.03 * rng.normal(size=(400, 24)))
            truth += [len(parts) - 1] * 400
    load_table(con, "h", np.concatenate(parts).astype(np.float32))
    for name, extra in (("whole", ""), ("sampled", ", sample_size := 600")):
        q(con, f"SELECT cluster_create('{name}', source := 'h', embedding := 'embedding', "
               "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2}, "
               f"hierarchical := true, max_hierarchy_depth := 2{extra})")
    runs = [q(con, "SELECT cluster_execute('sampled')")[0][0] for _ in range(2)]
    q(con, "SELECT cluster_execute('whole')")
    assert q(con, f"SELECT n_fit, n_members FROM cluster_runs('sampled') "
                  f"WHERE run_id = '{runs[0]}'") == [(600, 1600)]
    m1, m2 = (q(con, "SELECT id, cluster_id, node_id, parent_cluster_id, hierarchy_level, x "
                     f"FROM cluster_members('sampled', run_id := '{r}') ORDER BY id")
              for r in runs)
    assert m1 == m2
    leaves = {int(r[0]): r[2] for r in m1}
    assert adjusted_rand_score(truth, [leaves[i] for i in range(1600)]) > 0.95
    whole = {r[0]: r[1] for r in q(con, "SELECT CAST(id AS INT), node_id FROM "
                                             "cluster_members('whole')")}
    assert adjusted_rand_score([whole[i] for i in range(1600)],
                               [leaves[i] for i in range(1600)]) > 0.95
    assert all(r[4] == 1 and r[2].startswith(r[3] + "_sub_") for r in m1 if r[3])
    nodes = q(con, "SELECT node_id, parent_cluster_id, child_cluster_ids, hierarchy_level, "
                   "size, min_cosine_similarity <= mean_cosine_similarity "
                   "FROM cluster_centroids('sampled') ORDER BY node_id")
    by_id = {n[0]: n for n in nodes}
    tops = [n for n in nodes if n[3] == 0]
    assert sum(n[4] for n in tops) == 1600 and all(n[5] for n in nodes)
    for n in nodes:
        if n[3] == 1:
            assert n[0] in by_id[n[1]][2]
    for t in tops:  # children hold at most their parent's rows
        assert sum(by_id[c][4] for c in t[2]) <= t[4]
        assert sum(1 for r in m1 if r[2] == t[0] or r[3] == t[0]) == t[4]


def test_coordinates_2d_and_3d(con, docs):
    for dims in (2, 3):
        q(con, f"SELECT cluster_create('c{dims}', source := 'docs', embedding := 'embedding', "
               f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': 5}}, dimensions := {dims})")
        q(con, f"SELECT cluster_execute('c{dims}')")
        nz = q(con, f"SELECT count(x), count(y), count(z) FROM cluster_members('c{dims}')")[0]
        assert nz == (500, 500, 500 if dims == 3 else 0)


def test_null_embeddings_skipped_and_counted(con, docs):
    con.sql("UPDATE docs SET embedding = NULL WHERE doc_id % 50 = 0").fetchall()
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    assert q(con, "SELECT n_rows, n_null, n_members FROM cluster_runs('topics')") == [(500, 10, 490)]


def test_assign_mode_records_a_run(con, docs):
    q(con, KMEANS)
    full = q(con, "SELECT cluster_execute('topics')")[0][0]
    con.sql("INSERT INTO docs SELECT doc_id + 1000, topic, embedding FROM docs WHERE doc_id < 50").fetchall()
    run = q(con, "SELECT cluster_execute('topics', mode := 'assign', assignment_threshold := 0.5)")[0][0]
    runs = q(con, "SELECT run_id, mode, base_run_id, n_members FROM cluster_runs('topics')")
    assert runs[-1] == (run, "assign", full, 550)
    same = q(con, "SELECT count(*) FROM cluster_members('topics') a JOIN cluster_members('topics', "
                  f"run_id := '{full}') b USING (id) WHERE a.cluster_id = b.cluster_id")[0][0]
    assert same == 500
    new = q(con, "SELECT a.cluster_id = b.cluster_id FROM cluster_members('topics') a "
                 "JOIN cluster_members('topics') b ON b.id = CAST(CAST(a.id AS INT) - 1000 AS VARCHAR) "
                 "WHERE CAST(a.id AS INT) >= 1000")
    assert len(new) == 50 and all(r[0] for r in new)
    # the assign run reuses the full run's plotting projection: same rows, same x/y
    xy = q(con, f"SELECT count(*), max(abs(a.x - b.x)), max(abs(a.y - b.y)) FROM "
                f"cluster_members('topics', run_id := '{run}') a JOIN cluster_members("
                f"'topics', run_id := '{full}') b USING (id)")[0]
    assert xy[0] == 500 and xy[1] < 1e-6 and xy[2] < 1e-6
    # geometric quality from a seeded sample of the streamed rows (here: every row)
    full_q, assign_q = (q(con, f"SELECT silhouette_score, davies_bouldin, calinski_harabasz, "
                               f"noise_ratio FROM cluster_quality('topics', run_id := '{r}')")[0]
                        for r in (full, run))
    assert None not in assign_q and assign_q[0] > 0.5
    assert assign_q[0] == pytest.approx(full_q[0], abs=0.05)


def test_assign_mode_quality_sample_is_seeded(con, docs, monkeypatch):
    """Above ASSIGN_QUALITY_SAMPLE rows the geometric metrics use a seeded sample:
    two assign runs agree, and the sample size is reported."""
    from duckcluster.engine import stream

    monkeypatch.setattr(stream, "ASSIGN_QUALITY_SAMPLE", 120)
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    runs = [q(con, "SELECT cluster_execute('topics', mode := 'assign')")[0][0] for _ in range(2)]
    got = [q(con, "SELECT silhouette_score, davies_bouldin, calinski_harabasz, "
                  f"silhouette_sample_size FROM cluster_quality('topics', run_id := '{r}')")[0]
           for r in runs]
    assert got[0] == got[1] and got[0][0] > 0.5 and 0 < got[0][3] <= 120


def test_assign_cluster_udf_matches_members(con, docs):
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    agree = q(con, "SELECT count(*) FROM docs d JOIN cluster_members('topics') m ON m.id = d.doc_id "
                   "WHERE assign_cluster(d.embedding, 'topics') = m.cluster_id")[0][0]
    assert agree == 500
    far = q(con, "SELECT assign_cluster(CAST([1] || list_transform(range(31), lambda i: 0.0) AS FLOAT[32]), "
                 "'topics', threshold := 0.99)")[0][0]
    assert far == -1


def test_cluster_list_and_delete(con, docs, tmp_path):
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    path = q(con, "SELECT artifacts_path FROM cluster_runs('topics')")[0][0]
    rows = q(con, "SELECT name, algorithm, n_runs, latest_status, latest_n_clusters FROM cluster_list()")
    assert rows == [("topics", "kmeans", 1, "succeeded", 5)]
    msg = q(con, "SELECT cluster_delete('topics')")[0][0]
    assert "kept" in msg and os.path.isdir(path)
    assert q(con, "SELECT count(*) FROM cluster_list()") == [(0,)]
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    path2 = q(con, "SELECT artifacts_path FROM cluster_runs('topics') ORDER BY started_at DESC LIMIT 1")[0][0]
    q(con, "SELECT cluster_delete('topics', drop_artifacts := true)")
    assert not os.path.exists(path2)
    for table in ("runs", "members", "centroids", "projections"):
        assert q(con, f"SELECT count(*) FROM duckcluster.{table} WHERE name = 'topics'") == [(0,)]


def test_digits_umap_hdbscan(con):
    """The demo's digits chain (umap(5, 15) -> hdbscan) runs end to end: every row is a
    member, several clusters are found, and the spec records the chain. Its ARI is a
    benchmark figure (bench/algorithms_ari.py --digits), not a test threshold; the demo
    dropped whitening, which cost ARI on digits (issue 15, item 5; README, Whitening)."""
    from duckcluster.cli.demo import DEFINITIONS, load_digits_table

    tbl, truth = load_digits_table()
    con.register("__d", tbl)
    con.sql("CREATE TABLE digits AS SELECT id, label, CAST(embedding AS FLOAT[64]) AS embedding FROM __d").fetchall()
    q(con, DEFINITIONS["digits_hdbscan"])
    q(con, "SELECT cluster_execute('digits_hdbscan')")
    print(f"digits umap+hdbscan ARI = {ari(con, 'digits_hdbscan', truth):.3f}")
    (n, k, spec) = q(con, "SELECT n_members, n_clusters, spec FROM cluster_runs('digits_hdbscan')")[0]
    assert n == len(truth)
    assert k >= 2
    steps = [s["method"] for s in json.loads(spec)["preprocessing"]]
    assert steps == ["umap"]


def test_run_duration_recorded(con, docs):
    q(con, KMEANS)
    q(con, "SELECT cluster_execute('topics')")
    (d,) = q(con, "SELECT duration_s FROM cluster_runs('topics')")[0]
    assert d is not None and d > 0


def test_every_assignment_path_defaults_to_the_runs_own_threshold(con, tmp_path):
    """assign_cluster, cluster_execute(mode := 'assign') and cluster_assign_parquet all
    default to the full run's own threshold (loose blobs: below 0.5); the call's
    threshold, then the definition's, win over it."""
    X, y = blobs(n_per=120, spread=0.25)
    held = np.arange(len(X)) % 6 == 0
    load_table(con, "docs", X[~held], topic=y[~held].astype(np.int32))
    load_table(con, "far", X[held], topic=y[held].astype(np.int32))
    con.sql("UPDATE far SET doc_id = doc_id + 1000").fetchall()
    q(con, KMEANS)
    full = q(con, "SELECT cluster_execute('topics')")[0][0]
    own = q(con, f"SELECT assignment_threshold FROM duckcluster.runs WHERE run_id = '{full}'")[0][0]
    assert own is not None and 0.0 < own < 0.5
    sims = [r[0] for r in q(con, "SELECT (assign_cluster_detail(embedding, 'topics')).similarity "
                                 "FROM far")]
    assert sum(own <= s < 0.5 for s in sims) > 0, (own, sims)  # the default makes a difference
    udf = dict(q(con, "SELECT doc_id, assign_cluster(embedding, 'topics') FROM far"))
    assert sum(c >= 0 for c in udf.values()) == sum(s >= own for s in sims)

    con.sql("INSERT INTO docs SELECT * FROM far").fetchall()
    run = q(con, "SELECT cluster_execute('topics', mode := 'assign')")[0][0]
    assert q(con, f"SELECT assignment_threshold FROM duckcluster.runs WHERE run_id = '{run}'"
             )[0][0] == pytest.approx(own)
    members = dict(q(con, f"SELECT id, cluster_id FROM cluster_members('topics', run_id := "
                          f"'{run}') WHERE id >= 1000"))
    assert members == udf

    src = tmp_path / "far.parquet"
    con.sql(f"COPY (SELECT doc_id AS id, embedding FROM far) TO '{src}'").fetchall()
    q(con, f"SELECT * FROM cluster_assign_parquet('topics', '{src}', '{tmp_path / 'out'}', "
           f"run_id := '{full}')")
    pq = dict(q(con, f"SELECT id, cluster_id FROM read_parquet('{tmp_path / 'out'}/*.parquet')"))
    assert pq == udf
    # -1 keeps every row; an explicit threshold wins
    q(con, f"SELECT * FROM cluster_assign_parquet('topics', '{src}', '{tmp_path / 'all'}', "
           f"run_id := '{full}', threshold := -1)")
    assert q(con, f"SELECT min(cluster_id) FROM read_parquet('{tmp_path / 'all'}/*.parquet')"
             )[0][0] >= 0
    strict = q(con, "SELECT cluster_execute('topics', mode := 'assign', "
                    "assignment_threshold := 0.5)")[0][0]
    assert q(con, f"SELECT count(*) FROM cluster_members('topics', run_id := '{strict}') "
                  "WHERE id >= 1000 AND cluster_id >= 0")[0][0] == sum(s >= 0.5 for s in sims)
    # a definition's own assignment_threshold wins over the run's
    q(con, KMEANS.replace("{'n_clusters': 5})", "{'n_clusters': 5}, assignment_threshold := 0.45, "
                          "\"replace\" := true)"))
    q(con, "SELECT cluster_execute('topics')")
    run45 = q(con, "SELECT cluster_execute('topics', mode := 'assign')")[0][0]
    assert q(con, f"SELECT assignment_threshold FROM duckcluster.runs WHERE run_id = '{run45}'"
             )[0][0] == pytest.approx(0.45)
