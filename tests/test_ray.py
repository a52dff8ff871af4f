"""backend := 'ray' gives the same results as backend := 'local', on real data.

One local Ray runtime with 2 CPUs serves the whole module (started once, shut
down at the end). Tests that need no Ray (errors, the batch-independent
assignment kernel) run without it.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import sys

import duckdb
import numpy as np
import pytest
from conftest import blobs, load_table

import duckcluster
from duckcluster.core import backend as _backend
from duckcluster.core import hierarchy as _hierarchy
from duckcluster.engine import parquet as _partitioned


@pytest.fixture(scope="module")
def ray_runtime():
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'duckcluster[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A database with docs (6 blobs x 150 rows, 32-d), a k-means run, a Parquet dataset."""
    root = tmp_path_factory.mktemp("ray")
    con = duckcluster.connect(str(root / "db.duckdb"))
    X, _ = blobs(n_per=150, k=6, d=32, seed=3)
    load_table(con, "docs", X)
    con.sql("SELECT cluster_create('km', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 6})").fetchall()
    con.sql("SELECT cluster_execute('km')").fetchall()
    data = root / "data"
    for part in range(3):  # 3 files, several row groups, a few NULL embeddings
        (data / f"part={part}").mkdir(parents=True)
        # FLOAT[]: pyarrow cannot read NULL FLOAT[N] arrays as DuckDB 2.0 writes them
        con.sql(f"COPY (SELECT doc_id, CASE WHEN doc_id % 97 = 5 THEN NULL ELSE embedding END"
                f"::FLOAT[] AS embedding, doc_id * 2 AS extra FROM docs WHERE doc_id % 3 = {part} "
                f"ORDER BY doc_id) TO '{data}/part={part}/f.parquet' (ROW_GROUP_SIZE 64)")
    yield con, root
    con.close()


def outputs(con, folder):
    return con.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet') ORDER BY ALL").fetchall()


def assign_sql(root, out, backend, extra=""):
    return (f"SELECT * EXCLUDE (seconds) FROM cluster_assign_parquet('km', '{root}/data', "
            f"'{root}/{out}', id := 'doc_id', batch_rows := 100, backend := '{backend}'{extra})")


# -- assignment over a partitioned Parquet dataset -----------------------------------------

def test_assign_parquet_ray_matches_local(db, ray_runtime):
    con, root = db
    local = con.sql(assign_sql(root, "out_local", "local")).fetchall()
    ray = con.sql(assign_sql(root, "out_ray", "ray")).fetchall()
    n = 900
    n_null = con.sql("SELECT count(*) FROM docs WHERE doc_id % 97 = 5").fetchall()[0][0]
    assert local[0][3:] == ray[0][3:] == (3, n, n - n_null, 0, n_null)
    a, b = outputs(con, root / "out_local"), outputs(con, root / "out_ray")
    assert a == b and len(a) == n  # identical ids, cluster ids and similarities
    types = con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                    f"read_parquet('{root}/out_ray/*.parquet'))").fetchall()
    assert types == [("doc_id", "BIGINT"), ("cluster_id", "INTEGER"), ("similarity", "FLOAT")]
    # the same answer as the assign_cluster UDF over the table
    diff = con.sql(f"""
        SELECT count(*) FILTER (WHERE o.cluster_id IS DISTINCT FROM d.c.cluster_id),
               max(abs(o.similarity - d.c.similarity))
        FROM (SELECT doc_id, assign_cluster_detail(embedding, 'km') AS c FROM docs) d
        JOIN read_parquet('{root}/out_ray/*.parquet') o USING (doc_id)
        WHERE o.cluster_id IS NOT NULL""").fetchall()[0]
    assert diff[0] == 0 and diff[1] < 1e-6


def test_enrich_parquet_keeps_columns_on_ray(db, ray_runtime):
    """keep_columns + label fields: the enrichment of a Parquet dataset."""
    con, root = db
    con.sql("UPDATE duckcluster.centroids SET label = 'topic ' || cluster_id, "
            "keywords = ['k' || cluster_id] WHERE name = 'km'").fetchall()
    extra = (", keep_columns := true, threshold := 0.97, "
             "fields := ['cluster_id', 'label', 'keywords', 'run_id']")
    con.sql(assign_sql(root, "enr_local", "local", extra)).fetchall()
    con.sql(assign_sql(root, "enr_ray", "ray", extra)).fetchall()
    a, b = outputs(con, root / "enr_local"), outputs(con, root / "enr_ray")
    assert a == b and len(a) == 900
    cols = con.sql(f"SELECT * FROM read_parquet('{root}/enr_ray/*.parquet') LIMIT 0").columns
    assert cols == ["doc_id", "embedding", "extra", "cluster_id", "label", "keywords", "run_id"]
    labelled = con.sql(f"""
        SELECT count(*) FILTER (WHERE o.label = c.label), count(*) FILTER (WHERE o.cluster_id = -1)
        FROM read_parquet('{root}/enr_ray/*.parquet') o
        LEFT JOIN cluster_centroids('km') c USING (cluster_id)""").fetchall()[0]
    assert labelled[0] > 0 and labelled[1] > 0  # a high threshold makes some noise (-1)


def test_assign_stable_does_not_depend_on_the_batch():
    """A 1-row batch (BLAS gemv) gives the same bits as a 10,000-row one."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10_000, 64)).astype(np.float32)
    C = rng.standard_normal((40, 64)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    C[1] = C[0]  # an exact tie: the lowest index wins everywhere
    idx, sims = _partitioned.assign_stable(X, C)
    for bs in (1, 7, 17, 333):
        parts = [_partitioned.assign_stable(X[s:s + bs], C) for s in range(0, 2000, bs)]
        assert np.array_equal(np.concatenate([p[0] for p in parts])[:2000], idx[:2000])
        assert np.array_equal(np.concatenate([p[1] for p in parts])[:2000], sims[:2000])
    assert not (idx == 1).any()
    ref = np.argmax((X / np.linalg.norm(X, axis=1, keepdims=True)) @ C.T, axis=1)
    assert (ref == idx).mean() > 0.999


def test_assign_parquet_errors_write_nothing(db):
    con, root = db
    (root / "taken").mkdir(exist_ok=True)
    (root / "taken" / "notes.txt").write_text("keep me")
    cases = [
        (assign_sql(root, "x1", "rya"),
         "Unknown backend 'rya'. Did you mean 'ray'? Valid values: 'local', 'ray'."),
        (assign_sql(root, "x2", "local", ", embedding := 'embeding'"),
         "The embedding column 'embeding' is not in"),
        (assign_sql(root, "x3", "local", ", fields := ['cluster_id', 'lable']"),
         "Unknown field 'lable' for cluster_assign_parquet. Did you mean 'label'?"),
        (assign_sql(root, "taken", "local"),
         "output folder"),
        (assign_sql(root, "taken", "local", ", overwrite := true"),
         "holds files that are not Parquet (notes.txt)"),
        (assign_sql(root, "x4", "local", ", run_id := 'run_nope'"),
         "No successful run 'run_nope' of cluster 'km'"),
        ("SELECT * FROM cluster_assign_parquet('km', 'nowhere/*.parquet', 'x5')",
         "No Parquet files match 'nowhere/*.parquet'"),
        (assign_sql(root, "data", "local", ", overwrite := true"), "contains source files"),
    ]
    for sql, message in cases:
        with pytest.raises(duckdb.Error) as err:
            con.sql(sql).fetchall()
        assert message in str(err.value), sql
    assert (root / "taken" / "notes.txt").read_text() == "keep me"
    assert not glob.glob(str(root / "x*")) and not glob.glob(str(root / ".x*"))


def test_assign_parquet_bad_rows_leave_no_partial_output(db):
    """A wrong dimension found in the second file: no output folder, no temporary left."""
    con, root = db
    bad = root / "bad"
    bad.mkdir()
    con.sql(f"COPY (SELECT doc_id, embedding FROM docs LIMIT 50) TO '{bad}/a.parquet'")
    con.sql(f"COPY (SELECT 9999 AS doc_id, [1.0, 2.0]::FLOAT[] AS embedding) TO '{bad}/b.parquet'")
    with pytest.raises(duckdb.Error, match="have 2 dimensions but run"):
        con.sql(f"SELECT * FROM cluster_assign_parquet('km', '{bad}', '{root}/bad_out', "
                "id := 'doc_id')").fetchall()
    assert not glob.glob(str(root / "bad_out*")) and not glob.glob(str(root / ".bad_out*"))


def test_null_fixed_size_arrays_get_a_hint(db):
    con, root = db
    nulls = root / "nulls"
    nulls.mkdir()
    con.sql(f"COPY (SELECT doc_id, CASE WHEN doc_id = 3 THEN NULL ELSE embedding END AS "
            f"embedding FROM docs LIMIT 50) TO '{nulls}/a.parquet'")
    with pytest.raises(duckdb.Error, match=r"write the column as a list instead"):
        con.sql(f"SELECT * FROM cluster_assign_parquet('km', '{nulls}', '{root}/nulls_out', "
                "id := 'doc_id')").fetchall()
    assert not glob.glob(str(root / "nulls_out*"))


def test_overwrite_replaces_a_previous_output(db):
    con, root = db
    con.sql(assign_sql(root, "again", "local")).fetchall()
    first = outputs(con, root / "again")
    with pytest.raises(duckdb.Error, match="exists and is not empty. Pass overwrite := true"):
        con.sql(assign_sql(root, "again", "local")).fetchall()
    con.sql(assign_sql(root, "again", "local", ", overwrite := true, threshold := 0.999")
            ).fetchall()
    second = outputs(con, root / "again")
    assert len(second) == len(first) and second != first


# -- errors without Ray --------------------------------------------------------------------

DOCUMENTED = [
    "Unknown backend 'rya'. Did you mean 'ray'? Valid values: 'local', 'ray'.",
    ("backend := 'ray' needs Ray, which is not installed. Install it with pip install "
     "'duckcluster[ray]' (or use backend := 'local')."),
    "Unknown field 'lable' for cluster_assign_parquet. Did you mean 'label'?",
    "No Parquet files match 'nowhere/*.parquet'.",
    "exists and is not empty. Pass overwrite := true to replace it, or pick a new folder.",
    ("holds files that are not Parquet (notes.txt); overwrite only replaces a folder of Parquet "
     "files."),
    "contains source files; pick a folder outside the source dataset.",
    ("write the column as a list instead: COPY (SELECT * REPLACE (CAST(embedding AS FLOAT[]) AS "
     "embedding) FROM ...) TO '...parquet'."),
    ("grid point 1 {\"n_cluster\": 4}: Unknown parameter 'n_cluster' for kmeans. Did you mean "
     "'n_clusters'?"),
]


def test_errors_are_documented():
    """docs/errors.md lists the scale-out messages this file checks."""
    import pathlib

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "errors.md").read_text("utf-8")
    for message in DOCUMENTED:
        assert message in doc, message


def test_ray_missing_says_how_to_install(db, monkeypatch):
    con, _ = db
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(duckcluster.MissingDependencyError, match=r"pip install 'duckcluster\[ray\]'"):
        _backend.get_executor("ray")
    with pytest.raises(duckdb.Error) as err:
        con.sql("SELECT * FROM cluster_sweep('km', {'n_clusters': [2, 3]}, backend := 'ray')"
                ).fetchall()
    assert "MissingDependencyError: backend := 'ray' needs Ray" in str(err.value)
    assert "pip install 'duckcluster[ray]'" in str(err.value)


def test_backend_validation():
    with pytest.raises(duckcluster.UnknownNameError, match="Valid values: 'local', 'ray'"):
        _backend.get_executor("dask")
    with pytest.raises(duckcluster.SpecError, match="ray_address must be a Ray address"):
        _backend.get_executor("ray", ray_address="  ")
    with pytest.raises(duckcluster.SpecError, match="must be one of 'local', 'ray'"):
        duckcluster.ClusterSpec.from_dict({"name": "a", "source": "t", "embedding": "e",
                                           "backend": "spark"})


# -- hierarchical sub-clustering ---------------------------------------------------------

def _nested_blobs():
    """3 top clusters of 2-3 sub-blobs each (in 48-d), 600 rows."""
    rng = np.random.default_rng(7)
    tops = rng.normal(size=(3, 48))
    rows, labels = [], []
    for t, n_sub in zip(range(3), (2, 3, 2)):
        for _ in range(n_sub):
            c = tops[t] + 0.5 * rng.normal(size=48)
            rows.append(c + 0.05 * rng.normal(size=(90, 48)))
            labels.append(np.full(90, t))
    X = np.concatenate(rows).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.concatenate(labels)


def test_hierarchy_ray_matches_local(ray_runtime):
    X, top = _nested_blobs()
    local = _hierarchy.build_hierarchy(X, top, max_depth=3, seed=1)
    ray = _hierarchy.build_hierarchy(X, top, max_depth=3, seed=1,
                                     executor=_backend.get_executor("ray"))
    assert len(local.nodes) > 3  # there was something to split
    assert [(n.node_id, n.parent_id, n.child_ids, n.level) for n in local.nodes] == \
        [(n.node_id, n.parent_id, n.child_ids, n.level) for n in ray.nodes]
    assert all(np.array_equal(a.members, b.members) for a, b in zip(local.nodes, ray.nodes))
    assert local.leaf_of.tolist() == ray.leaf_of.tolist()


def test_cluster_execute_with_backend_ray(db, ray_runtime):
    """A definition with backend 'ray' stores the same members as one with 'local'."""
    con, _ = db
    X, _ = _nested_blobs()
    load_table(con, "nested", X)
    for name, backend in (("h_local", "local"), ("h_ray", "ray")):
        con.sql(f"SELECT cluster_create('{name}', source := 'nested', embedding := "
                "'embedding', id := 'doc_id', algorithm := 'kmeans', "
                "params := {'n_clusters': 3}, hierarchical := true, max_hierarchy_depth := 2, "
                f"backend := '{backend}')").fetchall()
        con.sql(f"SELECT cluster_execute('{name}')").fetchall()
    q = ("SELECT id, cluster_id, node_id, parent_cluster_id, hierarchy_level, "
         "cosine_similarity_to_centroid FROM cluster_members('{}') ORDER BY id")
    a = con.sql(q.format("h_local")).fetchall()
    b = con.sql(q.format("h_ray")).fetchall()
    assert a == b and any(r[4] == 1 for r in a)
    spec = json.loads(con.sql("SELECT spec FROM duckcluster.definitions WHERE name = 'h_ray'"
                              ).fetchall()[0][0])
    assert spec["backend"] == "ray"


# -- parameter sweeps ---------------------------------------------------------------------

def test_sweep_ray_matches_local(db, ray_runtime):
    con, _ = db
    q = ("SELECT * EXCLUDE (seconds) FROM cluster_sweep('km', {{'n_clusters': [3, 6, 9]}}, "
         "backend := '{}') ORDER BY point")
    local = con.sql(q.format("local")).fetchall()
    ray = con.sql(q.format("ray")).fetchall()
    assert local == ray and [r[2] for r in local] == [3, 6, 9]
    best = max(local, key=lambda r: r[4])  # silhouette
    assert json.loads(best[1])["n_clusters"] == 6
    # an explicit list of points, and a bad point rejected before any work
    rows = con.sql("SELECT point, n_clusters FROM cluster_sweep('km', "
                   "'[{\"n_clusters\": 2}, {\"n_clusters\": 4, \"max_iter\": 20}]')").fetchall()
    assert rows == [(0, 2), (1, 4)]
    with pytest.raises(duckdb.Error, match=r"grid point 1 \{\"n_cluster\": 4\}: Unknown parameter "
                                           r"'n_cluster' for kmeans"):
        con.sql("SELECT * FROM cluster_sweep('km', [{'n_clusters': 2}, {'n_cluster': 4}])"
                ).fetchall()


# -- drift over many windows ------------------------------------------------------------------

def test_drift_windows_ray_matches_local(db, ray_runtime):
    con, _ = db
    X, _ = blobs(n_per=100, k=4, d=16, seed=5)
    shifted = X[np.random.default_rng(0).permutation(len(X))]  # every week a mix of blobs
    shifted[300:] += 0.3  # the last week moves
    start = dt.datetime(2024, 1, 1)  # a Monday: weekly buckets start here
    ts = np.array([start + dt.timedelta(hours=int(h)) for h in np.arange(400) * 24 * 7 // 100])
    load_table(con, "events", shifted, created_at=ts)
    q = ("SELECT * FROM embedding_drift_windows('events', 'embedding', time_column := "
         "'created_at', window_size := INTERVAL 7 DAY, method := ['mmd', 'energy'], "
         "params := {{'mmd': {{'n_permutations': 100}}}}, backend := '{}')")
    rel = con.sql(q.format("local"))
    cols, local = rel.columns, rel.fetchall()
    ray = con.sql(q.format("ray")).fetchall()
    assert local == ray and len(local) == 8
    at = {c: i for i, c in enumerate(cols)}  # by name: the result gained columns before
    flags = [r[at["drift_detected"]] for r in local if r[at["method"]] == "mmd"]
    assert flags == [None, False, False, True]


def test_python_api_matches_sql(db):
    """duckcluster.scaleout: the same rows as the SQL functions."""
    import doctest

    from duckcluster import scaleout

    con, root = db
    r = scaleout.assign_parquet(con, "km", str(root / "data"), str(root / "py_out"), id="doc_id",
                                batch_rows=100)
    con.sql(assign_sql(root, "sql_out", "local")).fetchall()
    assert outputs(con, root / "py_out") == outputs(con, root / "sql_out")
    assert (r.n_files, r.n_rows, r.backend) == (3, 900, "local")
    rows = scaleout.sweep(con, "km", {"n_clusters": [2, 3]})
    sql = con.sql("SELECT * FROM cluster_sweep('km', {'n_clusters': [2, 3]})")
    as_dicts = [dict(zip(sql.columns, t)) for t in sql.fetchall()]
    drop = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "reasons")}
    assert [drop(d) for d in rows] == [drop(d) for d in as_dicts]
    assert doctest.testmod(scaleout, optionflags=doctest.ELLIPSIS).failed == 0
