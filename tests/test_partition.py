"""Per-partition clustering of definitions: cluster_create(..., partition_by := ...) (issue 15,
item 8; stable ids of issue 17 per partition).

Real DuckDB files, the catalog and its read side; the fixtures are blobs on the unit sphere
with a known cluster per row, so "each row is in a cluster of its own partition" and "the
clusters of a partition are its blobs" can be checked exactly."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from conftest import load_table

import duckcluster


class _Done(list):
    def fetchall(self):
        return list(self)


def _x(con, sql, params=None):
    """Run a statement to its end (a cluster_* call commits while its result is fetched)."""
    return _Done(con.execute(sql, params or []).fetchall())


def _rows(spec, d=16, seed=0, n_per=30, spread=0.03):
    """spec: {partition: list of centre indices}; a centre is a fixed random unit vector,
    so the same index in two partitions is the same place. Returns X, partition, centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X, part, centre = [], [], []
    for p, cs in spec.items():
        for c in cs:
            pts = centres[c] + spread * rng.normal(size=(n_per, d))
            X.append(pts)
            part += [p] * n_per
            centre += [c] * n_per
    return np.vstack(X).astype(np.float32), np.array(part, dtype=object), np.array(centre)


def _load(con, name, X, part, centre, start=0):
    load_table(con, name, X, lang=list(part), centre=centre.astype(np.int32))
    if start:
        con.sql(f"UPDATE {name} SET doc_id = doc_id + {start}")


def _kmeans(con, name="p", k=2, **extra):
    opts = "".join(f", {k_} := {v}" for k_, v in extra.items())
    _x(con, f"SELECT cluster_create('{name}', source := 'docs', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': {k}}}, "
            f"partition_by := 'lang'{opts})")


@pytest.fixture
def three(con):
    """Partitions en (centres 0, 1), de (2, 3), NULL (4, 5): 30 rows each."""
    X, part, centre = _rows({"en": [0, 1], "de": [2, 3], None: [4, 5]})
    _load(con, "docs", X, part, centre)
    return con


def test_each_partition_is_clustered_on_its_own(three):
    con = three
    _kmeans(con)
    run = _x(con, "SELECT cluster_execute('p')").fetchall()[0][0]
    got = con.sql("SELECT d.lang, m.partition, m.cluster_id, d.centre FROM cluster_members('p') m "
                  "JOIN docs d ON d.doc_id = m.id").fetchall()
    assert all(lang == part for lang, part, _, _ in got)  # NULL lang: NULL partition
    clusters = {}
    for lang, _, cid, centre in got:
        clusters.setdefault(cid, set()).add((lang, centre))
    assert len(clusters) == 6 and all(len(v) == 1 for v in clusters.values())  # pure blobs
    cents = con.sql("SELECT partition, cluster_id, size FROM cluster_centroids('p') "
                    "ORDER BY cluster_id").fetchall()
    assert [p for p, _, _ in cents] == ["de", "de", "en", "en", None, None]  # text order, NULL last
    assert sorted(c for _, c, _ in cents) == list(range(6))  # unique in the run
    assert con.sql("SELECT n_clusters, n_members FROM cluster_runs('p')").fetchall() == [(6, 180)]
    q = con.sql("SELECT scope, partition, n_clusters, n_members, noise_ratio FROM "
                "cluster_quality('p')").fetchall()
    assert q == [("run", None, 6, 180, 0.0), ("partition", "de", 2, 60, 0.0),
                 ("partition", "en", 2, 60, 0.0), ("partition", None, 2, 60, 0.0)]
    choices = con.sql("SELECT choices FROM duckcluster.runs WHERE run_id = ?", params=[run]
                      ).fetchall()[0][0]
    assert '"partition_by":"lang"' in choices.replace(" ", "")
    # the artifacts carry the partition too
    path = con.sql("SELECT artifacts_path FROM cluster_runs('p')").fetchall()[0][0]
    assert con.sql(f"SELECT count(DISTINCT partition), count(*) FROM '{path}/members.parquet'"
                   ).fetchall() == [(2, 180)]
    assert con.sql(f"SELECT partition FROM '{path}/centroids.parquet' ORDER BY cluster_id"
                   ).fetchall() == [(p,) for p, _, _ in cents]


def test_same_seed_same_result(three):
    con = three
    _kmeans(con)
    _x(con, "SELECT cluster_execute('p')")
    first = con.sql("SELECT id, cluster_id FROM cluster_members('p') ORDER BY id").fetchall()
    _kmeans(con, name="q")
    _x(con, "SELECT cluster_execute('q')")
    assert con.sql("SELECT id, cluster_id FROM cluster_members('q') ORDER BY id"
                   ).fetchall() == first


def test_default_auto_per_partition(three):
    """No algorithm: 'auto' runs in each partition and says what it chose there."""
    con = three
    _x(con, "SELECT cluster_create('a', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', partition_by := 'lang')")
    run = _x(con, "SELECT cluster_execute('a')").fetchall()[0][0]
    rows = con.sql("SELECT m.partition, m.cluster_id, d.centre FROM cluster_members('a') m "
                   "JOIN docs d ON d.doc_id = m.id WHERE m.cluster_id >= 0").fetchall()
    by_cluster = {}
    for part, cid, centre in rows:
        by_cluster.setdefault(cid, set()).add((part, centre))
    assert all(len({p for p, _ in v}) == 1 for v in by_cluster.values())  # never across
    import json

    choices = json.loads(con.sql("SELECT choices FROM duckcluster.runs WHERE run_id = ?",
                                 params=[run]).fetchall()[0][0])
    assert [p["partition"] for p in choices["partitions"]] == ["de", "en", None]
    assert all(p["choices"] for p in choices["partitions"])


def test_a_tiny_partition_is_noise_with_a_reason(con):
    """k-means with 2 clusters needs 2 rows: a partition of 1 row is not fitted."""
    X, part, centre = _rows({"en": [0, 1], "xx": [2]}, n_per=30)
    X, part, centre = X[:61], part[:61], centre[:61]  # xx keeps 1 row
    _load(con, "docs", X, part, centre)
    _kmeans(con, name="h")
    run = _x(con, "SELECT cluster_execute('h')").fetchall()[0][0]
    assert con.sql("SELECT DISTINCT cluster_id FROM cluster_members('h') WHERE partition = 'xx'"
                   ).fetchall() == [(-1,)]
    assert con.sql("SELECT count(DISTINCT cluster_id) FROM cluster_members('h') "
                   "WHERE partition = 'en'").fetchall() == [(2,)]
    choices = con.sql("SELECT choices FROM duckcluster.runs WHERE run_id = ?", params=[run]
                      ).fetchall()[0][0]
    assert "not clustered: 1 rows, kmeans with these params needs at least 2" in choices
    assert con.sql("SELECT n_clusters, noise_ratio FROM cluster_quality('h') "
                   "WHERE partition = 'xx'").fetchall() == [(0, 1.0)]


def test_tiny_partitions_under_auto_are_noise(con):
    """auto needs more distinct rows than one cluster: partitions of 1 and 3 rows are noise
    with the reason, the others are clustered, nothing fails."""
    X, part, centre = _rows({"en": [0, 1], "a": [2], "b": [3]}, n_per=30)
    keep = np.r_[0:60, 60:61, 90:93]
    _load(con, "docs", X[keep], part[keep], centre[keep])
    _x(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', partition_by := 'lang')")
    run = _x(con, "SELECT cluster_execute('t')").fetchall()[0][0]
    got = dict(con.sql("SELECT partition, max(cluster_id) FROM cluster_members('t') "
                       "GROUP BY ALL").fetchall())
    assert got["a"] == -1 and got["b"] == -1 and got["en"] >= 0
    choices = con.sql("SELECT choices FROM duckcluster.runs WHERE run_id = ?", params=[run]
                      ).fetchall()[0][0]
    assert choices.count("not clustered: ") == 2


def test_an_expression_partition(three):
    con = three
    _x(con, "SELECT cluster_create('e', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2}, "
            "partition_by := 'upper(coalesce(lang, ''none''))')")
    _x(con, "SELECT cluster_execute('e')")
    assert con.sql("SELECT DISTINCT partition FROM cluster_members('e') ORDER BY 1"
                   ).fetchall() == [("DE",), ("EN",), ("NONE",)]


@pytest.mark.parametrize("value, message", [
    ("'lagn'", "The partition_by column 'lagn' does not exist in source 'docs'. Did you "
               "mean 'lang'?"),
    ("'count(*)'", "partition_by 'count(*)' of source 'docs' is not a column or a per-row "
                   "expression"),
    ("'[lang]'", "has type VARCHAR[]; a partition is one scalar value per row"),
    ("'lang; DROP TABLE docs'", "'partition_by' must name a column of the source or be one "
                                "SQL expression"),
    ("'  '", "'partition_by' must name a column"),
])
def test_bad_partition_is_refused_at_create(three, value, message):
    con = three
    with pytest.raises(duckdb.Error) as err:
        _x(con, "SELECT cluster_create('bad', source := 'docs', embedding := 'embedding', "
                f"id := 'doc_id', partition_by := {value})").fetchall()
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert con.sql("SELECT count(*) FROM duckcluster.definitions").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM docs").fetchall() == [(180,)]


def test_unpartitioned_definitions_keep_their_tables(con, docs):
    _x(con, "SELECT cluster_create('u', source := 'docs', embedding := 'embedding', id := 'doc_id', "
            "algorithm := 'kmeans', params := {'n_clusters': 5})")
    _x(con, "SELECT cluster_execute('u')")
    path = con.sql("SELECT artifacts_path FROM cluster_runs('u')").fetchall()[0][0]
    cols = [r[0] for r in con.sql(f"DESCRIBE SELECT * FROM '{path}/members.parquet'").fetchall()]
    assert "partition" not in cols
    assert con.sql("SELECT count(*) FROM cluster_members('u') WHERE partition IS NULL"
                   ).fetchall() == [(500,)]
    assert con.sql("SELECT scope FROM cluster_quality('u')").fetchall() == [("run",)]
    assert con.sql("SELECT count(*) FROM duckcluster.latest_centroids WHERE name = 'u' AND "
                   "partition IS NULL").fetchall() == [(5,)]


def test_stable_ids_match_within_a_partition_only(con):
    """Run 2: partition en's rows move to centre 4, where de's cluster is. Matching by
    centroid alone would continue de's cluster from en's rows; per partition, en's clusters
    die and one is born, de's continue."""
    X, part, centre = _rows({"en": [0, 1], "de": [4, 5]})
    _load(con, "docs", X, part, centre)
    _kmeans(con)
    _x(con, "SELECT cluster_execute('p')")
    before = dict(con.sql("SELECT partition || ':' || centre, m.cluster_id FROM "
                          "cluster_members('p') m JOIN docs d ON d.doc_id = m.id "
                          "GROUP BY ALL").fetchall())
    _x(con, "SELECT cluster_execute('p')")  # unchanged data: every cluster continues
    ev = con.sql("SELECT event, partition, previous_cluster_id = cluster_id FROM "
                 "cluster_lineage('p')").fetchall()
    assert sorted(ev, key=str) == sorted([("continued", p, True) for p in
                                          ("de", "de", "en", "en")], key=str)
    X2, part2, centre2 = _rows({"en": [4, 6]}, seed=0)
    con.sql("DELETE FROM docs WHERE lang = 'en'")
    load_table(con, "new_en", X2, lang=list(part2), centre=centre2.astype(np.int32))
    con.sql("INSERT INTO docs SELECT doc_id + 1000, lang, centre, embedding FROM new_en")
    run3 = _x(con, "SELECT cluster_execute('p')").fetchall()[0][0]
    events = con.sql("SELECT event, partition, previous_cluster_id, cluster_id FROM "
                     "cluster_lineage('p', run_id := ?)", params=[run3]).fetchall()
    got = sorted((e, p) for e, p, _, _ in events)
    assert got == [("born", "en"), ("born", "en"), ("continued", "de"), ("continued", "de"),
                   ("died", "en"), ("died", "en")]
    after = dict(con.sql("SELECT partition || ':' || centre, m.cluster_id FROM "
                         "cluster_members('p') m JOIN docs d ON d.doc_id = m.id "
                         "GROUP BY ALL").fetchall())
    assert after["de:4"] == before["de:4"] and after["de:5"] == before["de:5"]
    assert after["en:4"] not in before.values()  # fresh ids, never used before


def test_assign_runs_stay_in_the_rows_partition(con):
    """en has one cluster (centre 0) and de one (centre 1). A new en row at centre 1 goes to
    en's cluster (threshold -1 keeps every assignment), not de's nearer one; a row of a
    partition the base run lacks is -1."""
    X, part, centre = _rows({"en": [0], "de": [1]})
    _load(con, "docs", X, part, centre)
    _kmeans(con, k=1)
    _x(con, "SELECT cluster_execute('p')")
    ids = dict(con.sql("SELECT partition, cluster_id FROM cluster_centroids('p')").fetchall())
    Xn, _, _ = _rows({"x": [1]}, n_per=2)
    _x(con, "INSERT INTO docs VALUES (5000, 'en', 1, ?), (5001, 'fr', 1, ?)",
                [Xn[0].tolist(), Xn[1].tolist()])
    _x(con, "SELECT cluster_execute('p', mode := 'assign', assignment_threshold := 0.0)")
    got = dict(con.sql("SELECT id, cluster_id FROM cluster_members('p') WHERE id >= 5000"
                       ).fetchall())
    assert got[5001] == -1
    # 0.0 threshold: en's cluster is about orthogonal to centre 1, so -1 or en's; never de's
    assert got[5000] in (-1, ids["en"]) and got[5000] != ids["de"]
    kept = con.sql("SELECT count(*) FROM cluster_members('p') m JOIN docs d ON d.doc_id = m.id "
                   "WHERE d.doc_id < 5000 AND m.cluster_id = CASE d.lang WHEN 'en' THEN ? "
                   "ELSE ? END", params=[ids["en"], ids["de"]]).fetchall()
    assert kept == [(60,)]  # unchanged rows keep their clusters
    assert con.sql("SELECT count(*) FROM cluster_members('p') WHERE partition = 'fr'"
                   ).fetchall() == [(1,)]
    assert con.sql("SELECT scope, partition, n_members, n_clusters FROM cluster_quality('p')"
                   ).fetchall() == [("run", None, 62, 2), ("partition", "de", 30, 1),
                                    ("partition", "en", 31, 1), ("partition", "fr", 1, 0)]


@pytest.mark.parametrize("d", [16, 32])  # the generic FLOAT[] UDF, a FLOAT[32] one
def test_assign_cluster_takes_the_partition(con, d):
    X, part, centre = _rows({"en": [0, 1], "de": [0, 1], None: [2, 3]}, n_per=1000, d=d)
    _load(con, "docs", X, part, centre)  # 6,000 rows: several UDF batches
    _kmeans(con)
    _x(con, "SELECT cluster_execute('p')")
    for fn in ("assign_cluster", "duckcluster.assign_cluster"):
        wrong = con.sql(f"SELECT count(*) FROM docs d JOIN cluster_members('p') m ON m.id = "
                        f"d.doc_id WHERE {fn}(d.embedding, 'p', partition := d.lang) "
                        "IS DISTINCT FROM m.cluster_id").fetchall()
        assert wrong == [(0,)], fn
        assert con.sql(f"SELECT DISTINCT {fn}(embedding, 'p', partition := 'klingon') FROM docs"
                       ).fetchall() == [(-1,)]
        with pytest.raises(duckdb.Error, match="cluster 'p' is partitioned by 'lang'; pass "
                                               "each row's partition"):
            con.sql(f"SELECT {fn}(embedding, 'p') FROM docs").fetchall()
    detail = con.sql("SELECT assign_cluster_detail(embedding, 'p', partition := 'klingon') "
                     "FROM docs LIMIT 1").fetchall()[0][0]
    assert detail == {"cluster_id": -1, "similarity": None}


def test_assign_cluster_refuses_a_partition_for_an_unpartitioned_definition(con, docs):
    _x(con, "SELECT cluster_create('u', source := 'docs', embedding := 'embedding', id := 'doc_id', "
            "algorithm := 'kmeans', params := {'n_clusters': 5})")
    _x(con, "SELECT cluster_execute('u')")
    for fn in ("assign_cluster", "duckcluster.assign_cluster"):
        with pytest.raises(duckdb.Error, match="cluster 'u' has no partition_by, so it takes "
                                               "no partition"):
            con.sql(f"SELECT {fn}(embedding, 'u', partition := 'x') FROM docs").fetchall()


def test_a_version_1_catalog_is_migrated(db_path, tmp_path):
    """A file whose catalog has no partition columns (version 1, before partition_by) opens,
    keeps its runs readable, and then takes partitioned definitions."""
    con = duckcluster.connect(db_path)
    X, part, centre = _rows({"en": [0, 1], "de": [2, 3]})
    _load(con, "docs", X, part, centre)
    _x(con, "SELECT cluster_create('old', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    _x(con, "SELECT cluster_execute('old')")
    for t in ("members", "centroids", "lineage"):
        con.sql(f"ALTER TABLE duckcluster.{t} DROP COLUMN partition")
    con.sql("UPDATE duckcluster.meta SET value = '1' WHERE key = 'catalog_version'")
    con.close()
    con = duckcluster.connect(db_path, read_only=True)  # read as it is: partition NULL
    assert con.sql("SELECT count(*), count(partition) FROM cluster_members('old')"
                   ).fetchall() == [(120, 0)]
    assert con.sql("SELECT count(*), count(partition) FROM cluster_centroids('old')"
                   ).fetchall() == [(4, 0)]
    assert con.sql("SELECT count(*) FROM docs d JOIN cluster_members('old') m ON m.id = "
                   "d.doc_id WHERE assign_cluster(d.embedding, 'old', threshold := -1) = "
                   "m.cluster_id AND duckcluster.assign_cluster(d.embedding, 'old', "
                   "threshold := -1) = m.cluster_id").fetchall() == [(120,)]
    con.close()
    con = duckcluster.connect(db_path)
    assert con.sql("SELECT value FROM duckcluster.meta WHERE key = 'catalog_version'"
                   ).fetchall() == [("2",)]
    assert con.sql("SELECT count(*), count(partition) FROM cluster_members('old')"
                   ).fetchall() == [(120, 0)]
    _x(con, "SELECT cluster_execute('old')")
    _kmeans(con)
    _x(con, "SELECT cluster_execute('p')")
    assert con.sql("SELECT count(DISTINCT partition) FROM duckcluster.latest_members "
                   "WHERE name = 'p'").fetchall() == [(2,)]
    con.close()


def test_cluster_by_embedding_partition_by(three):
    """The clause form: PARTITION BY column is partition_by := 'column' of the one-shot."""
    con = three
    got = duckcluster.sql(con, "SELECT lang, count(DISTINCT cluster_id) AS k, count(*) AS n "
                               "FROM docs CLUSTER BY EMBEDDING(embedding) USING "
                               "kmeans(n_clusters = 2) PARTITION BY lang ID doc_id "
                               "GROUP BY lang ORDER BY lang NULLS LAST").fetchall()
    assert got == [("de", 2, 60), ("en", 2, 60), (None, 2, 60)]
    with pytest.raises(duckcluster.SpecError, match="PARTITION BY and OPTIONS"):
        duckcluster.sql(con, "SELECT * FROM docs CLUSTER BY EMBEDDING(embedding) PARTITION BY "
                             "lang OPTIONS(partition_by = 'lang')")


def test_dbt_cluster_run_with_partition_by(tmp_path):
    """A real dbt build of a cluster_run model with partition_by: the example project with
    one model of its own, clustered per month of publication."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("dbt.adapters.duckdb", reason="dbt-duckdb is not installed")
    root = Path(__file__).resolve().parents[1]
    project = tmp_path / "proj"
    shutil.copytree(root / "examples" / "dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "dbt_packages", "logs", "*.duckdb*",
                                                  "package-lock.yml"))
    (project / "models" / "topics_by_month.sql").write_text(
        "{{ config(materialized='cluster_run', embedding='embedding', id='doc_id', "
        "algorithm='kmeans', params={'n_clusters': 2}, "
        "partition_by=\"strftime(published_on, '%Y-%m')\") }}\n"
        "select doc_id, published_on, body, embedding from {{ ref('docs') }}\n")
    db = tmp_path / "analytics.duckdb"
    env = {**{k: v for k, v in os.environ.items() if k != "DUCKCLUSTER_DBT_PACKAGE"},
           "DUCKCLUSTER_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_USE_COLORS": "false", "DO_NOT_TRACK": "1"}
    dbt = str(Path(sys.executable).with_name("dbt"))
    for args in (["deps"], ["seed"], ["run", "--select", "+topics_by_month"]):
        r = subprocess.run([dbt, *args, "--profiles-dir", str(project), "--project-dir",
                            str(project)], capture_output=True, text=True, env=env,
                           cwd=project, timeout=300, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    with duckdb.connect(str(db), read_only=True) as c:
        got = c.execute("SELECT partition = strftime(published_on, '%Y-%m'), count(*), "
                        "count(DISTINCT cluster_id) FROM topics_by_month GROUP BY ALL").fetchall()
        months = c.execute("SELECT count(DISTINCT strftime(published_on, '%Y-%m')) "
                           "FROM topics_by_month").fetchall()[0][0]
        per_cluster = c.execute("SELECT max(n) FROM (SELECT cluster_id, count(DISTINCT "
                                "partition) AS n FROM topics_by_month GROUP BY ALL)").fetchall()
    assert len(got) == 1 and got[0][0] is True and got[0][2] == 2 * months
    assert per_cluster == [(1,)]  # no cluster spans two months


def test_a_partition_is_clustered_as_its_own_definition_would_be(three):
    """Same seed, same rows: a partition's clusters are those of a definition over that
    partition alone (the ids differ by an offset only)."""
    con = three
    _x(con, "SELECT cluster_create('p', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'hdbscan', params := {'min_cluster_size': 5}, "
            "partition_by := 'lang')")
    _x(con, "SELECT cluster_execute('p')")
    for lang in ("en", "de"):
        _x(con, f"SELECT cluster_create('only_{lang}', source := '(SELECT * FROM docs WHERE "
                f"lang = ''{lang}'')', embedding := 'embedding', id := 'doc_id', "
                "algorithm := 'hdbscan', params := {'min_cluster_size': 5})")
        _x(con, f"SELECT cluster_execute('only_{lang}')")
        pairs = con.sql(f"SELECT DISTINCT a.cluster_id, b.cluster_id FROM cluster_members('p') a "
                        f"JOIN cluster_members('only_{lang}') b ON a.id = b.id").fetchall()
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs) >= 2


def test_hierarchical_partitions(con):
    """Sub-clusters hang under their partition's clusters; node ids follow the run's ids."""
    rng = np.random.default_rng(0)
    X, part = [], []
    for lang in ("en", "de"):
        for _ in range(2):
            centre = rng.normal(size=16)
            for _ in range(2):
                sub = centre + 0.3 * rng.normal(size=16)
                X.append(sub + 0.03 * rng.normal(size=(150, 16)))
                part += [lang] * 150
    X = np.vstack(X).astype(np.float32)
    _load(con, "docs", X, np.array(part, dtype=object), np.zeros(len(X), dtype=np.int32))
    _kmeans(con, hierarchical="true", max_hierarchy_depth=2)
    _x(con, "SELECT cluster_execute('p')")
    nodes = con.sql("SELECT partition, cluster_id, node_id, parent_cluster_id FROM "
                    "cluster_centroids('p') WHERE hierarchy_level = 1").fetchall()
    top = dict(con.sql("SELECT cluster_id, partition FROM cluster_centroids('p') "
                       "WHERE hierarchy_level = 0").fetchall())
    assert len(top) == 4 and len(nodes) >= 4
    assert all(top[c] == p and node.startswith(f"cl_{c}_sub_") and parent == f"cl_{c}"
               for p, c, node, parent in nodes)


def test_cluster_sweep_refuses_a_partitioned_definition(three):
    """A sweep fits one clustering of every row: for a partitioned definition it says so
    instead of mixing the partitions."""
    con = three
    _kmeans(con)
    with pytest.raises(duckdb.Error, match="cluster_sweep fits one clustering of all rows, "
                                           "but 'p' clusters each value of 'lang' on its own"):
        con.sql("SELECT * FROM cluster_sweep('p', grid := {'n_clusters': [2, 3]})").fetchall()


def test_cluster_assign_parquet_refuses_a_partitioned_definition(three, tmp_path):
    con = three
    _kmeans(con)
    _x(con, "SELECT cluster_execute('p')")
    con.sql(f"COPY docs TO '{tmp_path}/docs.parquet' (FORMAT parquet)")
    with pytest.raises(duckdb.Error, match="cluster_assign_parquet assigns each row to the "
                                           "nearest centroid of the whole run, but 'p'"):
        con.sql(f"SELECT * FROM cluster_assign_parquet('p', '{tmp_path}/docs.parquet', "
                f"'{tmp_path}/out', id := 'doc_id')").fetchall()
    assert not (tmp_path / "out").exists()


def _near_own_cluster(con, new_ids) -> bool:
    """Each new row's map position is nearest the median position of its own cluster's
    other rows among its partition's clusters."""
    m = con.sql("SELECT id, cluster_id, partition, x, y FROM cluster_members('p')").fetchall()
    pos = {}
    for i, c, part, x, y in m:
        if i not in new_ids:
            pos.setdefault((part, c), []).append((x, y))
    med = {key: np.median(np.array(v), axis=0) for key, v in pos.items()}
    for i, c, part, x, y in m:
        if i in new_ids:
            mine = {key: v for key, v in med.items() if key[0] == part}
            best = min(mine, key=lambda key: float(np.sum((mine[key] - (x, y)) ** 2)))
            if best != (part, c):
                return False
    return True


@pytest.mark.parametrize("algorithm,kind,d", [("kmeans", "pca", 16), ("auto", "graph", 48)])
def test_each_partition_has_its_own_map_and_assign_runs_place_new_rows_on_it(
        con, algorithm, kind, d):
    """A partitioned run stores a map per partition, of the kind an unpartitioned run of the
    pipeline gets (PCA for k-means, the graph layout for auto's UMAP); an assign run places
    new rows of a partition on that partition's map, near their cluster's rows."""
    X, part, centre = _rows({"en": [0, 1, 2], "de": [3, 4, 5]}, d=d, n_per=50)
    _load(con, "docs", X, part, centre)
    if algorithm == "kmeans":
        _kmeans(con, k=3)
    else:
        _x(con, "SELECT cluster_create('p', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', partition_by := 'lang')")
    run = _x(con, "SELECT cluster_execute('p')")[0][0]
    maps = con.sql("SELECT partition, kind FROM duckcluster.partition_projections "
                   f"WHERE run_id = '{run}' ORDER BY partition").fetchall()
    assert maps == [("de", kind), ("en", kind)]
    refs = con.sql("SELECT partition, count(*) > 0 FROM duckcluster.map_references "
                   f"WHERE run_id = '{run}' GROUP BY ALL ORDER BY 1").fetchall()
    assert refs == ([("de", True), ("en", True)] if kind == "graph" else [])
    assert not con.sql(f"SELECT count(*) FROM duckcluster.projections WHERE run_id = '{run}'"
                       ).fetchall()[0][0]
    rng = np.random.default_rng(2)
    pick = rng.choice(len(X), 12, replace=False)
    new = X[pick] + rng.normal(scale=0.005, size=(12, d)).astype(np.float32)
    for n, i in enumerate(pick):
        _x(con, "INSERT INTO docs VALUES (?, ?, ?, ?)",
           [9000 + n, part[i], int(centre[i]), new[n].tolist()])
    _x(con, "SELECT cluster_execute('p', mode := 'assign', assignment_threshold := 0.0)")
    got = con.sql("SELECT count(*), count(x), count(y) FROM cluster_members('p') "
                  "WHERE id >= 9000").fetchall()
    assert got == [(12, 12, 12)]
    assert _near_own_cluster(con, set(range(9000, 9012)))
