"""Hardening: streamed sampled runs, memory limits, kill -9 mid-run, concurrent writers,
threads sharing a connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import duckdb
import numpy as np
import pytest

import duckcluster
from duckcluster.engine import reader as _reader
from conftest import blobs, load_table


def q(con, sql):
    return con.sql(sql).fetchall()


def test_sampled_run_streams_in_batches(con, monkeypatch, tmp_path):
    """sample_size fits on a seeded sample and streams every row in small batches."""
    monkeypatch.setattr(_reader, "BATCH_ROWS", 97)
    X, y = blobs(n_per=300, k=4, d=16, seed=5)
    load_table(con, "big", X, topic=y.astype(np.int32))
    pq = str(tmp_path / "big.parquet")
    q(con, f"COPY big TO '{pq}' (FORMAT parquet)")
    for name, source, algo, params in [
        ("km", "big", "kmeans", "{'n_clusters': 4}"),
        ("hd", pq, "hdbscan", "{'min_cluster_size': 15}"),
    ]:
        q(con, f"SELECT cluster_create('{name}', source := '{source}', embedding := 'embedding', "
               f"id := 'doc_id', algorithm := '{algo}', params := {params}, sample_size := 200)")
        run = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        n_fit, n_members, n_clusters = q(con, f"SELECT n_fit, n_members, n_clusters FROM "
                                              f"cluster_runs('{name}')")[0]
        assert (n_fit, n_members, n_clusters) == (200, 1200, 4)
        rows = q(con, f"SELECT CAST(m.id AS INT), m.cluster_id, m.x IS NOT NULL FROM "
                      f"cluster_members('{name}') m ORDER BY 1")
        from sklearn.metrics import adjusted_rand_score

        assert adjusted_rand_score(y, [r[1] for r in rows]) > 0.97
        assert all(r[2] for r in rows)
        # the same run again: identical (seeded sample, deterministic pass)
        run2 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        a = q(con, f"SELECT id, cluster_id, cosine_similarity_to_centroid FROM cluster_members('{name}', run_id := '{run}')")
        b = q(con, f"SELECT id, cluster_id, cosine_similarity_to_centroid FROM cluster_members('{name}', run_id := '{run2}')")
        assert a == b


def test_memory_guard_says_what_to_do(con, monkeypatch):
    X, _ = blobs(n_per=500, k=4, d=64)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 4})")
    monkeypatch.setenv("DUCKCLUSTER_MEMORY_LIMIT", "1MB")
    with pytest.raises(duckdb.Error) as err:
        q(con, "SELECT cluster_execute('t')")
    msg = str(err.value)
    assert "ResourceError: Fitting kmeans on 2,000 rows x 64 dimensions would need about" in msg
    assert "Set sample_size := " in msg
    suggested = int(msg.split("sample_size := ")[1].split(" ")[0])
    q(con, f"SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           f"algorithm := 'kmeans', params := {{'n_clusters': 4}}, sample_size := {suggested}, "
           "\"replace\" := true)")
    q(con, "SELECT cluster_execute('t')")
    assert q(con, "SELECT status, n_members FROM cluster_runs('t') ORDER BY started_at DESC LIMIT 1") == [
        ("succeeded", 2000)]


def test_memory_guard_quadratic(con, monkeypatch):
    X, _ = blobs(n_per=500, k=4, d=8)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'agglomerative', params := {'n_clusters': 4})")
    monkeypatch.setenv("DUCKCLUSTER_MEMORY_LIMIT", "20MB")
    with pytest.raises(duckdb.Error, match="plus an n x n distance matrix"):
        q(con, "SELECT cluster_execute('t')")


CHILD = textwrap.dedent("""
    import os, signal, sys
    import duckcluster
    from duckcluster import functions as _sql
    from duckcluster.catalog import runs as _catalog
    stage = sys.argv[2]
    def kill(msg):
        if stage in msg:
            os.kill(os.getpid(), signal.SIGKILL)
    _sql.set_progress(kill)
    if stage == "rename":  # after the Parquet files are written, before they are renamed
        real = _catalog.os.replace
        def replace(a, b):
            os.kill(os.getpid(), signal.SIGKILL)
        _catalog.os.replace = replace
    con = duckcluster.connect(sys.argv[1])
    con.sql("SELECT cluster_execute('t')").fetchall()
""")


@pytest.mark.parametrize("stage", ["fitting", "rename"])
def test_kill_9_mid_run(db_path, tmp_path, stage):
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=200, k=4, d=16)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 4})")
    good = q(con, "SELECT cluster_execute('t')")[0][0]
    art = os.path.dirname(q(con, "SELECT artifacts_path FROM cluster_runs('t')")[0][0])
    con.close()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    r = subprocess.run([sys.executable, str(script), db_path, stage], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    if stage == "rename":  # the half-done run left a .tmp folder with Parquet files in it
        leftovers = [d for d in os.listdir(art) if d.endswith(".tmp")]
        assert leftovers and os.listdir(os.path.join(art, leftovers[0]))
    con = duckcluster.connect(db_path)
    try:
        runs = q(con, "SELECT run_id, status FROM cluster_runs('t') ORDER BY started_at")
        assert runs[0] == (good, "succeeded") and runs[1][1] == "abandoned"
        assert q(con, "SELECT count(*) FROM cluster_members('t')") == [(800,)]
        assert sorted(os.listdir(art)) == [good]  # nothing of the killed run looks complete
    finally:
        con.close()


def test_second_writer_gets_a_clear_message(db_path):
    con = duckcluster.connect(db_path)
    try:
        code = ("import duckcluster, sys\n"
                "try:\n    duckcluster.connect(sys.argv[1])\n"
                "except duckcluster.DatabaseBusyError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, db_path], capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 3, r.stderr
        assert "is open for writing in another process (PID " in r.stdout
        assert "read_only=True does not help then" in r.stdout
        # read-only while a writer holds it: DuckDB refuses that too; say so (it used to
        # tell the user to pass read_only=True, which they had done)
        ro = code.replace("connect(sys.argv[1])", "connect(sys.argv[1], read_only=True)")
        r = subprocess.run([sys.executable, "-c", ro, db_path], capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 3, r.stderr
        assert ("is open for writing in another process (PID " in r.stdout and
                "does not let another process open a file, not even read-only, while one holds "
                "it for writing" in r.stdout and "open it here with read_only=True" not in r.stdout)
        r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "sql", db_path, "-c",
                            "SELECT 1"], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode != 0 and "is open for writing in another process" in r.stderr
    finally:
        con.close()


def test_a_writer_blocked_by_a_reader_is_told_to_read_only(db_path):
    duckcluster.connect(db_path).close()
    reader = duckcluster.connect(db_path, read_only=True)
    try:
        code = ("import duckcluster, sys\n"
                "try:\n    duckcluster.connect(sys.argv[1])\n"
                "except duckcluster.DatabaseBusyError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, db_path], capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 3, r.stderr
        assert "is open read-only in another process (PID " in r.stdout
        assert "or open it here with read_only=True to read runs and results" in r.stdout
    finally:
        reader.close()


def test_threads_share_a_connection(con, docs):
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 5})")
    q(con, "SELECT cluster_execute('t')")
    sql = "SELECT doc_id, assign_cluster(embedding, 't') FROM docs ORDER BY doc_id"
    expected = q(con, sql)
    results, errors = [None] * 8, []

    def work(i):
        try:
            cur = duckcluster.install(con.cursor())
            for _ in range(5):
                results[i] = cur.sql(sql).fetchall()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results)


def test_install_on_read_only_file_without_catalog(tmp_path):
    path = str(tmp_path / "plain.duckdb")
    plain = duckdb.connect(path)
    X, _ = blobs(n_per=20, k=2, d=4)
    load_table(plain, "docs", X)
    plain.close()
    con = duckcluster.connect(path, read_only=True)
    try:  # the one-shot primitive needs no catalog
        rows = con.sql("SELECT count(DISTINCT cluster_id) FROM cluster_embeddings('docs', "
                       "'embedding', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
        assert rows == [(2,)]
    finally:
        con.close()


ENRICH_CHILD = textwrap.dedent("""
    import os, signal, sys
    import duckcluster
    from duckcluster.labels import enrich as _enrich
    def die(*a, **k):  # every UPDATE of the target is done, COMMIT is next
        os.kill(os.getpid(), signal.SIGKILL)
    _enrich.store.record_enrichment = die
    con = duckcluster.connect(sys.argv[1])
    con.sql("SELECT cluster_enrich('t', target := 'docs_enriched', "
            "fields := ['cluster_id', 'cosine_similarity_to_centroid'])").fetchall()
""")


def test_kill_9_during_enrich_leaves_target_as_it_was(db_path, tmp_path):
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=100, k=4, d=16)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 4})")
    q(con, "SELECT cluster_execute('t')")
    q(con, "SELECT cluster_enrich('t', target := 'docs_enriched', "
           "fields := ['cluster_id', 'cosine_similarity_to_centroid'])")
    before = q(con, "SELECT * EXCLUDE (embedding) FROM docs_enriched ORDER BY doc_id")
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 2}, \"replace\" := true)")
    q(con, "SELECT cluster_execute('t')")  # a newer run with other cluster ids
    con.close()
    script = tmp_path / "child.py"
    script.write_text(ENRICH_CHILD)
    r = subprocess.run([sys.executable, str(script), db_path], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    con = duckcluster.connect(db_path)
    try:
        assert q(con, "SELECT * EXCLUDE (embedding) FROM docs_enriched ORDER BY doc_id") == before
        assert q(con, "SELECT count(*) FROM duckcluster.enrichments") == [(1,)]
        q(con, "SELECT cluster_enrich('t', target := 'docs_enriched', "
           "fields := ['cluster_id', 'cosine_similarity_to_centroid'])")
        assert q(con, "SELECT count(DISTINCT cluster_id) FROM docs_enriched") == [(2,)]
    finally:
        con.close()


def test_closing_one_connection_never_breaks_another(db_path, tmp_path):
    """DuckDB 2.0 segfaults when a UDF is called after the connection that registered
    it was closed; every connection registers its own copies (a Jupyter cell run twice
    drops the first connection while the second is in use). Run in a child: a crash
    would otherwise take pytest down."""
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=20, k=2, d=4)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 2})")
    con.close()
    code = textwrap.dedent("""
        import gc, sys
        import duckcluster
        a = duckcluster.connect(sys.argv[1])
        b = duckcluster.connect(sys.argv[1])
        cur = a.cursor(); duckcluster.install(cur); cur.close()
        a.close(); del a; gc.collect()
        b.sql("SELECT cluster_execute('t')").fetchall()
        n = b.sql("SELECT count(*) FROM docs WHERE assign_cluster(embedding, 't') >= 0").fetchall()
        print(n[0][0])
    """)
    r = subprocess.run([sys.executable, "-c", code, db_path], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.strip() == "40"


# -- issue 14, round 2: silent wrong answers -------------------------------------------------

def test_relative_parquet_source_reads_the_same_file_from_any_directory(con, tmp_path, monkeypatch):
    """A relative path is stored absolute at cluster_create (shown by cluster_list), so a
    run from another working directory reads the file the definition was checked on."""
    here, there = tmp_path / "here", tmp_path / "there"
    for folder, n_per in ((here, 60), (there, 20)):  # same relative name, other rows
        (folder / "data").mkdir(parents=True)
        X, _ = blobs(n_per=n_per, k=3, d=8, seed=n_per)
        load_table(con, "tmp_rows", X)
        q(con, f"COPY tmp_rows TO '{folder}/data/rows.parquet' (FORMAT parquet)")
    monkeypatch.chdir(here)
    q(con, "SELECT cluster_create('t', source := 'data/*.parquet', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})")
    assert q(con, "SELECT source FROM cluster_list()") == [(f"{here}/data/*.parquet",)]
    monkeypatch.chdir(there)
    q(con, "SELECT cluster_execute('t')")
    assert q(con, "SELECT n_members FROM cluster_runs('t')") == [(180,)]
    # a URL or a table name is kept as given
    from duckcluster.engine.reader import pin_source

    assert pin_source("s3://bucket/data/*.parquet") == "s3://bucket/data/*.parquet"
    assert pin_source("tmp_rows") == "tmp_rows"


def test_drift_monitor_add_counts_rows_with_a_null_time(con):
    """Rows whose time is NULL belong to no window: they were dropped without a word; now
    drift_monitor_add returns them as skipped_null_time (and NULL embeddings apart)."""
    X, _ = blobs(n_per=25, k=4, d=8, seed=3)
    ts = np.datetime64("2024-03-01") + np.arange(100).astype("timedelta64[h]")
    load_table(con, "incoming", X, created_at=ts.astype("datetime64[us]"))
    q(con, "UPDATE incoming SET created_at = NULL WHERE doc_id % 10 = 3")
    q(con, "UPDATE incoming SET embedding = NULL WHERE doc_id % 10 = 5")
    q(con, "SELECT drift_monitor_create('m', reservoir_size := 20)")
    (r,) = q(con, "SELECT drift_monitor_add('m', 'incoming', 'embedding', time_column := 'created_at')")[0]
    assert r == {"rows_read": 100, "rows_added": 80, "skipped_null_embedding": 10,
                 "skipped_null_time": 10}
    assert q(con, "SELECT sum(n_seen), sum(n_null) FROM duckcluster.drift_windows") == [(80, 10)]


def test_whitening_few_rows_of_very_wide_vectors_is_fast_and_exact():
    """Whitening 20 rows of 20,000-d vectors built a 20,000 x 20,000 covariance (> 14
    minutes, 6.6 GB). With fewer rows than dimensions it works in the rows' span: an
    n x d SVD, the same soft ZCA as the covariance formula."""
    from duckcluster.core.preprocess import run_preprocessing, validate_steps

    steps = validate_steps([{"method": "whitening"}])
    rng = np.random.default_rng(0)
    for n, d in ((30, 100), (99, 100)):  # against the covariance formula itself
        X = rng.normal(size=(n, d)).astype(np.float32)
        Xc = X.astype(np.float64) - X.mean(axis=0)
        s, U = np.linalg.eigh(Xc.T @ Xc / (n - 1))
        ref = Xc @ ((U * (1 / np.sqrt(np.clip(s, 0, None) + 1e-5))) @ U.T)
        np.testing.assert_allclose(run_preprocessing(X, steps, 0), ref, atol=1e-4)
    out = run_preprocessing(rng.normal(size=(20, 20_000)).astype(np.float32), steps, 0)
    assert out.shape == (20, 20_000) and np.isfinite(out).all()


def test_memory_guard_counts_the_whitening_covariance(con, monkeypatch):
    rng = np.random.default_rng(1)
    load_table(con, "wide", rng.normal(size=(1200, 1024)).astype(np.float32))
    q(con, "SELECT cluster_create('t', source := 'wide', embedding := 'embedding', id := 'doc_id', "
           "algorithm := 'kmeans', params := {'n_clusters': 4}, "
           "preprocessing := [{'method': 'whitening'}])")
    monkeypatch.setenv("DUCKCLUSTER_MEMORY_LIMIT", "25MB")
    with pytest.raises(duckdb.Error) as err:
        q(con, "SELECT cluster_execute('t')")
    assert ("ResourceError: Whitening 1,200 rows x 1024 dimensions needs 1,024 x 1,024 float64 "
            "matrices") in str(err.value)
    assert "preprocessing := [{'method': 'pca', 'n_components': 256}, {'method': 'whitening'}]" \
        in str(err.value)
