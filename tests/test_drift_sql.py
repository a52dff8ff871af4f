"""Drift from SQL on real DuckDB files: embedding_drift, embedding_drift_windows,
cluster_drift (also in the stock DuckDB CLI) and cluster_drift_test."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import blobs, load_table, stock_cli

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["method", "statistic", "p_value", "p_value_adjusted", "threshold", "drift_detected",
           "n_baseline", "n_current", "details"]


def rows(con, q, params=None):
    rel = con.execute(q, params) if params is not None else con.sql(q)
    cols = [d[0] for d in rel.description]
    out = [dict(zip(cols, r)) for r in rel.fetchall()]
    for r in out:
        if isinstance(r.get("details"), str):
            r["details"] = json.loads(r["details"])
    return out


def error_of(con, q) -> str:
    with pytest.raises(duckdb.Error) as info:
        con.sql(q).fetchall()
    return str(info.value)


@pytest.fixture
def shifted(con):
    """Table docs: 600 rows of 4 blobs; new_docs: 400 rows of 3 of them + a 5th blob."""
    X, _ = blobs(n_per=150, k=4, d=16, spread=0.3, seed=1)
    load_table(con, "docs", X)
    Xc, _ = blobs(n_per=100, k=5, d=16, spread=0.3, seed=1, sizes=[100, 100, 100, 0, 100])
    load_table(con, "new_docs", Xc)
    return X, Xc


def test_embedding_drift_from_queries_returns_one_typed_row(con, shifted):
    rel = con.sql("SELECT * FROM embedding_drift('(SELECT * FROM docs WHERE doc_id < 300)', "
                  "'(SELECT * FROM docs WHERE doc_id >= 300)', 'embedding')")
    assert rel.columns == COLUMNS
    assert [str(t) for t in rel.types] == ["VARCHAR", "DOUBLE", "DOUBLE", "DOUBLE", "DOUBLE",
                                           "BOOLEAN", "BIGINT", "BIGINT", "JSON"]
    (r,) = rel.fetchall()
    assert r[0] == "knn" and r[6] == 300 and r[7] == 300 and r[4] == 0.05
    assert r[3] == r[2]  # one test: nothing to adjust for
    d = json.loads(r[8])
    assert d["n_permutations"] == 500 and d["sampled"] is False
    assert (d["n_tested_baseline"], d["n_tested_current"]) == (300, 300)


def test_every_method_detects_a_new_blob_from_tables(con, shifted):
    out = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', method := 'all')")
    assert [r["method"] for r in out] == ["knn", "mmd", "energy", "wasserstein", "kl",
                                          "classifier", "cluster", "mean_shift"]
    from duckcluster.drift.explain import benjamini_hochberg

    want = benjamini_hochberg(np.array([r["p_value"] for r in out]))
    for r, adjusted in zip(out, want):
        assert r["drift_detected"] and r["p_value"] < 0.05, r
        assert r["p_value_adjusted"] == pytest.approx(adjusted) and r["p_value_adjusted"] < 0.05
        assert (r["n_baseline"], r["n_current"]) == (600, 400)
    cluster = next(r for r in out if r["method"] == "cluster")["details"]
    assert cluster["new_content_share"] > 0.2  # the 5th blob fits no baseline cluster


def test_sides_can_be_views_parquet_and_queries(con, shifted, tmp_path):
    pq = str(tmp_path / "new.parquet")
    con.execute(f"COPY new_docs TO '{pq}' (FORMAT parquet)")
    con.execute("CREATE VIEW old_view AS SELECT * FROM docs")
    a = rows(con, f"SELECT * FROM embedding_drift('old_view', '{pq}', 'embedding')")[0]
    b = rows(con, "SELECT * FROM embedding_drift('docs', '(SELECT * FROM new_docs)', 'embedding')")[0]
    assert a["statistic"] == b["statistic"] and a["p_value"] == b["p_value"]


def test_same_seed_same_rows_other_seed_other_permutations(con, shifted):
    q = ("SELECT p_value, details FROM embedding_drift('(SELECT * FROM docs WHERE doc_id % 2 = 0)', "
         "'(SELECT * FROM docs WHERE doc_id % 2 = 1)', 'embedding', seed := {})")
    assert con.sql(q.format(1)).fetchall() == con.sql(q.format(1)).fetchall()
    assert con.sql(q.format(1)).fetchall() != con.sql(q.format(2)).fetchall()


def test_params_per_method_struct_or_json(con, shifted):
    out = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                    "method := ['mmd', 'energy'], params := {'mmd': {'n_permutations': 99}, "
                    "'energy': {'n_components': 2}})")
    assert out[0]["details"]["n_permutations"] == 99 and out[1]["details"]["n_components"] == 2
    one = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                    "method := 'kl', params := '{\"bins\": 4}')")
    assert one[0]["details"]["bins"] == 4


def test_null_embeddings_are_skipped_and_counted(con, shifted):
    con.execute("INSERT INTO new_docs SELECT 10000 + i, NULL FROM range(7) t(i)")
    r = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                  "method := 'mean_shift')")[0]
    assert r["n_current"] == 400 and r["details"]["n_null_current"] == 7


def test_large_sides_test_every_row_and_say_how(con):
    """50k rows: the default method tests every row (approximate neighbours, recall
    reported); mmd switches to random features; max_samples samples and says so."""
    rng = np.random.default_rng(0)
    load_table(con, "big", rng.normal(size=(50_000, 8)).astype(np.float32))
    sides = ("'(SELECT * FROM big WHERE doc_id % 2 = 0)', '(SELECT * FROM big WHERE doc_id % 2 = 1)'")
    r = rows(con, f"SELECT * FROM embedding_drift({sides}, 'embedding', "
                  "params := {'n_permutations': 99})")[0]
    d = r["details"]
    assert (r["n_baseline"], r["n_current"]) == (25_000, 25_000)
    assert d["sampled"] is False and (d["n_tested_baseline"], d["n_tested_current"]) == (25_000, 25_000)
    assert d["neighbours"] == "approximate" and 0 < d["recall"] <= 1 and "cells" in d["search"]
    assert not r["drift_detected"]
    m = rows(con, f"SELECT * FROM embedding_drift({sides}, 'embedding', method := 'mmd', "
                  "params := {'n_permutations': 99})")[0]["details"]
    assert m["sampled"] is False and m["kernel_matrix"] == "512 random Fourier features"
    s = rows(con, f"SELECT * FROM embedding_drift({sides}, 'embedding', method := 'mmd', "
                  "params := {'max_samples': 300, 'n_permutations': 99})")[0]["details"]
    assert s["sampled"] is True and s["read_sample_rows"] == {"baseline": 300, "current": 300}
    assert (s["n_tested_baseline"], s["n_tested_current"]) == (300, 300)
    assert s["kernel_matrix"] == "exact"


def test_cluster_method_against_a_reference_definition(con, shifted):
    con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})").fetchall()
    run = con.sql("SELECT cluster_execute('topics')").fetchall()[0][0]
    r = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                  "method := 'cluster', reference := 'topics')")[0]
    d = r["details"]
    assert r["drift_detected"] and d["reference"] == f"run {run}"
    own = con.sql(f"SELECT assignment_threshold FROM duckcluster.runs WHERE run_id = '{run}'"
                  ).fetchall()[0][0]
    assert own is not None
    assert d["assignment_threshold"] == pytest.approx(own)  # assign_cluster's default
    r = rows(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                  "method := 'cluster', reference := 'topics', "
                  "params := {'assignment_threshold': 0.3})")[0]
    shares = {c["cluster_id"]: c for c in r["details"]["clusters"]}
    # baseline rows rarely fall below the threshold; most of the unseen blob (100 rows) does
    assert shares[-1]["baseline_count"] / 600 < 0.03 and shares[-1]["current_count"] >= 80
    assert r["details"]["new_content_share"] > 0.2
    gone = min((c for c in shares.values() if c["cluster_id"] >= 0),
               key=lambda c: c["current_count"])  # the blob the current side lacks
    assert gone["current_count"] <= 2 and gone["baseline_count"] > 140


def test_two_runs_of_one_definition(con, shifted):
    """'run:<id>' sides read the source rows each run saw; the cluster method then uses
    the baseline run's centroids."""
    con.execute("CREATE TABLE stream AS SELECT * FROM docs")
    con.sql("SELECT cluster_create('s', source := 'stream', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})").fetchall()
    first = con.sql("SELECT cluster_execute('s')").fetchall()[0][0]
    con.execute("INSERT INTO stream SELECT doc_id + 5000, embedding FROM new_docs")
    second = con.sql("SELECT cluster_execute('s')").fetchall()[0][0]
    out = rows(con, f"SELECT * FROM embedding_drift('run:{first}', 'run:{second}', NULL, "
                    "method := ['mmd', 'cluster'])")
    assert [(r["n_baseline"], r["n_current"]) for r in out] == [(600, 1000)] * 2
    assert all(r["drift_detected"] for r in out)
    assert out[1]["details"]["reference"] == f"run {first}"


# -- errors ---------------------------------------------------------------------------

def test_unknown_method_error_lists_valid_methods(con, shifted):
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                        "method := 'energi')")
    assert "UnknownNameError: Unknown drift method 'energi'. Did you mean 'energy'?" in msg
    assert "'classifier', 'cluster', 'energy', 'kl', 'knn', 'mean_shift', 'mmd', 'wasserstein'" in msg


def test_wrong_dimensions_name_both_sides(con, shifted):
    load_table(con, "small", np.ones((50, 4), dtype=np.float32))
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'small', 'embedding')")
    assert "The baseline 'docs' has 16-dimensional embeddings but the current 'small' has 4" in msg
    # a LIST column with one odd row is caught even when that row is not in the sample
    con.execute("CREATE TABLE lists AS SELECT doc_id, embedding::FLOAT[] AS embedding FROM docs")
    con.execute("INSERT INTO lists VALUES (99999, [1.0, 2.0])")
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'lists', 'embedding', "
                        "params := {'max_samples': 10})")
    assert "Column 'embedding' of the current side 'lists' mixes dimensions: its embeddings " \
           "have between 2 and 16 values" in msg


def test_empty_or_all_null_side(con, shifted):
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', '(SELECT * FROM new_docs "
                        "WHERE doc_id < 0)', 'embedding')")
    assert "The current side '(SELECT * FROM new_docs WHERE doc_id < 0)' has no rows" in msg
    assert "Check its WHERE clause" in msg
    con.execute("CREATE TABLE nulls AS SELECT doc_id, NULL::FLOAT[16] AS embedding FROM docs")
    msg = error_of(con, "SELECT * FROM embedding_drift('nulls', 'docs', 'embedding')")
    assert "The baseline side 'nulls' has 600 rows but every embedding is NULL" in msg


def test_too_few_rows_unknown_column_unknown_source(con, shifted):
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', '(SELECT * FROM new_docs "
                        "LIMIT 3)', 'embedding', method := 'energy')")
    assert "needs at least 10 rows on each side; the current has 3" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embeding')")
    assert "The embedding column 'embeding' does not exist" in msg and "Did you mean 'embedding'?" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift('doc', 'new_docs', 'embedding')")
    assert "is not a table or view" in msg and "Did you mean 'docs'?" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', "
                        "method := ['mmd', 'kl'], params := {'bins': 3})")
    assert "With several methods, pass params per method" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift('docs', 'new_docs', 'embedding', alpha := 2)")
    assert "'alpha' parameter of embedding_drift must be a float in the range (0, 1)" in msg


def test_a_run_id_without_prefix_gets_a_hint(con, shifted):
    con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', id := 'doc_id', "
            "algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    run = con.sql("SELECT cluster_execute('t')").fetchall()[0][0]
    msg = error_of(con, f"SELECT * FROM embedding_drift('{run}', 'docs', 'embedding')")
    assert f"pass 'run:{run}'" in msg


# -- time windows -----------------------------------------------------------------------

@pytest.fixture
def timed(con):
    """4 weekly windows of 150 rows; the last one is 30% a blob never seen before."""
    X, _ = blobs(n_per=150, k=4, d=16, spread=0.3, seed=3)
    rng = np.random.default_rng(0)
    rng.shuffle(X)
    Xn, _ = blobs(n_per=45, k=1, d=16, spread=0.3, seed=77)
    X = np.concatenate([X[:450], X[450:555], Xn])
    days = np.repeat(np.arange(4) * 7, 150) + rng.integers(0, 7, 600)
    ts = (np.datetime64("2024-01-01") + days.astype("timedelta64[D]")).astype("datetime64[us]")
    load_table(con, "events", X, created_at=ts)
    con.execute("CREATE TABLE outcomes AS SELECT created_at + INTERVAL 1 HOUR AS ts, "
                "CASE WHEN created_at >= TIMESTAMP '2024-01-22' THEN 0.6 ELSE 0.9 END AS success "
                "FROM events")


def test_drift_windows_series_flags_only_the_shifted_window(con, timed):
    rel = con.sql("SELECT * FROM embedding_drift_windows('events', 'embedding', "
                  "time_column := 'created_at', window_size := INTERVAL 7 DAY)")
    assert rel.columns[:4] == ["window_start", "window_end", "is_baseline", "n_rows"]
    out = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    assert [str(r["window_start"].date()) for r in out] == ["2024-01-01", "2024-01-08",
                                                             "2024-01-15", "2024-01-22"]
    assert str(out[0]["window_end"].date()) == "2024-01-08"
    assert out[0]["is_baseline"] and out[0]["statistic"] is None and out[0]["n_rows"] == 150
    assert [r["drift_detected"] for r in out[1:]] == [False, False, True]


def test_drift_windows_join_outcomes(con, timed):
    """The playbook's step 3: which outcome degrades when drift spikes."""
    out = con.sql("""
        SELECT d.window_start, d.drift_detected, o.success
        FROM embedding_drift_windows('events', 'embedding', time_column := 'created_at',
                                     "window" := INTERVAL 7 DAY, method := 'mean_shift') d
        JOIN (SELECT time_bucket(INTERVAL 7 DAY, ts) AS window_start, avg(success) AS success
              FROM outcomes GROUP BY ALL) o USING (window_start)
        ORDER BY d.window_start""").fetchall()
    assert len(out) == 4 and out[-1][1] is True and out[-1][2] == pytest.approx(0.6)


def test_drift_windows_named_baseline_and_small_windows(con, timed):
    out = rows(con, "SELECT * FROM embedding_drift_windows('events', 'embedding', "
                    "time_column := 'created_at', window_size := INTERVAL 7 DAY, "
                    "baseline := TIMESTAMP '2024-01-10 12:00', method := 'mean_shift')")
    assert [r["is_baseline"] for r in out] == [False, True, False, False]
    daily = rows(con, "SELECT * FROM embedding_drift_windows('(SELECT * FROM events WHERE "
                      "doc_id < 160)', 'embedding', time_column := 'created_at', "
                      "window_size := INTERVAL 1 DAY, method := 'energy')")
    skipped = [r for r in daily if "skipped" in r["details"]]
    assert skipped and all(r["statistic"] is None for r in skipped)


def test_drift_windows_errors(con, timed):
    msg = error_of(con, "SELECT * FROM embedding_drift_windows('events', 'embedding', "
                        "time_column := 'created', window_size := INTERVAL 7 DAY)")
    assert "The time column 'created' does not exist" in msg and "Did you mean 'created_at'?" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift_windows('events', 'embedding', "
                        "time_column := 'created_at', window_size := 'soon')")
    assert "window_size must be a positive INTERVAL" in msg
    msg = error_of(con, "SELECT * FROM embedding_drift_windows('events', 'embedding', "
                        "time_column := 'created_at', baseline := TIMESTAMP '1999-01-01')")
    assert "No rows fall in the baseline window" in msg


# -- cluster_drift --------------------------------------------------------------------

def _fit(con, name="topics"):
    con.sql(f"SELECT cluster_create('{name}', source := 'corpus', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4}, "
            "\"replace\" := true)").fetchall()
    return con.sql(f"SELECT cluster_execute('{name}')").fetchall()[0][0]


@pytest.fixture
def two_runs(con):
    """Run 1: 4 blobs x 100. Run 2: blob 0 doubled, blob 3 gone, a new blob, 1 and 2 alike.
    Only the first 100 rows of blob 0 are the same rows (ids 0-99); every other row of
    run 2 is a new one with a new id, so most clusters are matched by their centroids."""
    X, _ = blobs(n_per=100, k=4, d=16, seed=1)
    load_table(con, "corpus", X)
    r1 = _fit(con)
    X2, _ = blobs(n_per=100, k=4, d=16, seed=1, sizes=[200, 100, 100, 0])
    Xn, _ = blobs(n_per=80, k=1, d=16, seed=99)
    load_table(con, "corpus", np.concatenate([X2, Xn]))
    con.execute("UPDATE corpus SET doc_id = doc_id + 1000 WHERE doc_id >= 100")
    r2 = _fit(con)
    return r1, r2


def test_cluster_drift_statuses_and_totals(con, two_runs):
    r1, r2 = two_runs
    out = rows(con, "SELECT * FROM cluster_drift('topics')")
    assert {r["baseline_run_id"] for r in out} == {r1} and {r["current_run_id"] for r in out} == {r2}
    by_status = {}
    for r in out:
        by_status.setdefault(r["status"], []).append(r)
    assert sorted(by_status) == ["grown", "new", "stable", "vanished"]
    (grown,) = by_status["grown"]
    assert (grown["baseline_size"], grown["current_size"]) == (100, 200)
    assert grown["baseline_share"] == 0.25 and grown["current_share"] == pytest.approx(200 / 480)
    assert grown["similarity"] > 0.99
    (new,) = by_status["new"]
    assert new["baseline_cluster_id"] is None and new["current_size"] == 80
    (gone,) = by_status["vanished"]
    assert gone["current_cluster_id"] is None and gone["baseline_size"] == 100
    assert len(by_status["stable"]) == 2
    first = out[0]
    assert (first["baseline_n_clusters"], first["current_n_clusters"], first["cluster_count_change"]) == (4, 4, 0)
    assert first["unmatched_share"] == pytest.approx(80 / 480)
    p = np.array([r["baseline_share"] for r in out])
    q = np.array([r["current_share"] for r in out])
    from duckcluster.drift import js_divergence

    assert first["js_divergence"] == pytest.approx(float(js_divergence(p, q)))
    assert first["drift_detected"] is True


def test_cluster_drift_explicit_runs_and_assign_runs(con, two_runs):
    r1, r2 = two_runs
    same = rows(con, f"SELECT * FROM cluster_drift('topics', baseline_run := '{r1}', "
                     f"current_run := '{r2}')")
    assert same == rows(con, "SELECT * FROM cluster_drift('topics')")
    # an assign run on the latest full run's centroids: every cluster matches itself
    a = con.sql("SELECT cluster_execute('topics', mode := 'assign')").fetchall()[0][0]
    out = rows(con, f"SELECT * FROM cluster_drift('topics', baseline_run := '{r2}')")
    assert {r["current_run_id"] for r in out} == {a}
    assert all(r["status"] == "stable" and r["similarity"] == pytest.approx(1.0) for r in out)
    assert out[0]["js_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_cluster_drift_errors(con, two_runs):
    r1, _ = two_runs
    msg = error_of(con, f"SELECT * FROM cluster_drift('topics', current_run := '{r1}')")
    assert "has no successful run before" in msg and "cluster_drift compares two runs" in msg
    msg = error_of(con, f"SELECT * FROM cluster_drift('topics', baseline_run := '{r1}', "
                        f"current_run := '{r1}')")
    assert "compares two different runs" in msg
    msg = error_of(con, "SELECT * FROM cluster_drift('topics', baseline_run := 'run_nope')")
    assert "No successful run 'run_nope'" in msg
    msg = error_of(con, "SELECT * FROM cluster_drift('topicz')")
    assert "No cluster definition named 'topicz'" in msg


def test_cluster_drift_test_gives_exact_p_values_overall_and_per_cluster(con, two_runs):
    out = rows(con, "SELECT * FROM cluster_drift_test('topics')")
    drift = rows(con, "SELECT * FROM cluster_drift('topics')")
    assert len(out) == len(drift) == 5
    r = out[0]
    assert r["method"] == "cluster" and r["drift_detected"]
    assert r["overall_p_value"] == pytest.approx(1 / 2001)
    assert r["chi2_dof"] == 4 and r["chi2_p_value"] < 1e-20
    from scipy.stats import fisher_exact

    from duckcluster.drift.explain import benjamini_hochberg

    nb, nc = sum(d["baseline_size"] for d in drift), sum(d["current_size"] for d in drift)
    want = [fisher_exact([[d["baseline_size"], nb - d["baseline_size"]],
                          [d["current_size"], nc - d["current_size"]]])[1] for d in drift]
    for t, d, p, adj in zip(out, drift, want, benjamini_hochberg(np.array(want))):
        assert (t["baseline_cluster_id"], t["current_cluster_id"], t["status"]) == \
            (d["baseline_cluster_id"], d["current_cluster_id"], d["status"])
        assert t["p_value"] == pytest.approx(p) and t["p_value_adjusted"] == pytest.approx(adj)
        assert t["changed"] == (adj < 0.05)
    by_status = {t["status"]: t for t in out}
    assert by_status["new"]["changed"] and by_status["vanished"]["changed"]
    assert by_status["grown"]["changed"] and not by_status["stable"]["changed"]




def test_cluster_drift_in_the_stock_cli_matches_python(db_path, two_runs, con):
    """The read side: `.read sql/duckcluster.sql` in the DuckDB CLI, no Python inside."""
    query = "SELECT * FROM cluster_drift('topics')"
    py = rows(con, query)
    con.close()
    out = subprocess.run([stock_cli(), "-no-init", "-bail", "-jsonlines", "-readonly", db_path,
                          "-c", ".read sql/duckcluster.sql", "-c", query],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and not out.stderr, out.stderr
    cli = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(cli) == len(py) == 5
    for p, c in zip(py, cli):
        assert list(c) == list(p)
        for k, v in p.items():
            if isinstance(v, float):
                assert math.isclose(v, c[k], rel_tol=1e-6, abs_tol=1e-9), k
            else:
                assert v == c[k], k
