"""The streaming drift monitor on a real DuckDB file: a stream far larger than the
reservoir, uniform reservoirs, exact counts, bounded memory, replay, atomic batches."""

from __future__ import annotations

import json
import tracemalloc

import duckdb
import numpy as np
import pytest
from conftest import blobs, load_table
from scipy.stats import kstest

from duckcluster.drift import monitor as _drift_monitor

D = 16
RESERVOIR = 100
PER_BATCH = 1000
BATCHES_PER_DAY = 30  # 30,000 rows per daily window: 300 x the reservoir


def stream(n_days=3, shift_day=2, seed=0):
    """(X, day, arrival) for a stream: days before ``shift_day`` draw 4 blobs evenly;
    from ``shift_day`` on, blob 0 doubles and blob 3 disappears. The last coordinate
    holds the row's arrival fraction within its day x 1e-3 (invisible to cosine, but
    read back from the reservoir to check it is uniform)."""
    rng = np.random.default_rng(seed)
    parts, days, arrival = [], [], []
    n = PER_BATCH * BATCHES_PER_DAY
    for day in range(n_days):
        sizes = [n // 4] * 4 if day < shift_day else [n // 2, n // 4, n // 4, 0]
        X, _ = blobs(n_per=n // 4, k=4, d=D, spread=0.05, seed=1, sizes=sizes)
        X = X[rng.permutation(len(X))]
        X[:, -1] = np.arange(n) / n * 1e-3
        parts.append(X)
        days.append(np.full(n, day))
        arrival.append(np.arange(n) / n)
    return np.concatenate(parts), np.concatenate(days), np.concatenate(arrival)


@pytest.fixture
def reference(con):
    X, _ = blobs(n_per=200, k=4, d=D, spread=0.05, seed=1)
    load_table(con, "train", X)
    con.sql("SELECT cluster_create('topics', source := 'train', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})").fetchall()
    return con.sql("SELECT cluster_execute('topics')").fetchall()[0][0]


@pytest.fixture
def incoming(con):
    X, day, _ = stream()
    ts = (np.datetime64("2024-03-01") + day.astype("timedelta64[D]")
          + np.tile(np.arange(PER_BATCH * BATCHES_PER_DAY), 3).astype("timedelta64[s]"))
    load_table(con, "incoming", X, batch=np.arange(len(X)) // PER_BATCH,
               created_at=ts.astype("datetime64[us]"))
    return X


def feed(con, name, first, last):
    total = 0
    for b in range(first, last):
        total += con.sql(f"SELECT drift_monitor_add('{name}', '(SELECT * FROM incoming WHERE "
                         f"batch = {b})', 'embedding', time_column := 'created_at').rows_added"
                         ).fetchall()[0][0]
    return total


def test_stream_far_larger_than_the_reservoir(con, reference, incoming):
    assert con.sql("SELECT drift_monitor_create('m', reference := 'topics', "
                   f"reservoir_size := {RESERVOIR})").fetchall() == [("m",)]
    assert feed(con, "m", 0, 3 * BATCHES_PER_DAY) == len(incoming)
    windows = con.sql("SELECT window_start::DATE::VARCHAR, n_seen, n_null FROM duckcluster.drift_windows "
                      "WHERE monitor = 'm' ORDER BY 1").fetchall()
    assert windows == [("2024-03-01", 30000, 0), ("2024-03-02", 30000, 0), ("2024-03-03", 30000, 0)]
    # storage is bounded: exactly one embedding per slot per window
    res = con.sql("SELECT count(*), count(DISTINCT slot), min(slot), max(slot) FROM "
                  "duckcluster.drift_reservoirs WHERE monitor = 'm' GROUP BY window_start").fetchall()
    assert res == [(RESERVOIR, RESERVOIR, 0, RESERVOIR - 1)] * 3
    # counts are exact over the whole stream
    counts = con.sql("SELECT window_start::DATE::VARCHAR, list(n ORDER BY n DESC) FROM "
                     "duckcluster.drift_counts WHERE monitor = 'm' GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("2024-03-01", [7500] * 4), ("2024-03-02", [7500] * 4),
                      ("2024-03-03", [15000, 7500, 7500])]
    # every arrival position is equally likely to be in the reservoir
    arrivals = np.array([r[0] for r in con.sql(
        "SELECT embedding[16] * 1e3 FROM duckcluster.drift_reservoirs WHERE monitor = 'm'").fetchall()])
    assert kstest(arrivals, "uniform").pvalue > 0.001
    out = con.sql("SELECT * FROM drift_monitor_windows('m')")
    assert out.columns == ["window_start", "window_end", "is_baseline", "n_seen", "n_reservoir",
                           "method", "statistic", "p_value", "p_value_adjusted", "threshold",
                           "drift_detected", "cluster_js_divergence", "cluster_p_value",
                           "new_content_share", "details"]
    r = [dict(zip(out.columns, row)) for row in out.fetchall()]
    assert [x["is_baseline"] for x in r] == [True, False, False]
    assert r[0]["statistic"] is None and r[0]["n_reservoir"] == RESERVOIR
    assert r[0]["method"] == "knn" and r[0]["p_value_adjusted"] is None
    # two windows tested: Benjamini-Hochberg over both, and the decision on it
    from duckcluster.drift.explain import benjamini_hochberg

    want = benjamini_hochberg(np.array([r[1]["p_value"], r[2]["p_value"]]))
    assert [r[1]["p_value_adjusted"], r[2]["p_value_adjusted"]] == pytest.approx(list(want))
    assert [r[1]["drift_detected"], r[2]["drift_detected"]] == [bool(w < 0.05) for w in want]
    assert r[1]["drift_detected"] is False and r[2]["drift_detected"] is True
    assert r[1]["cluster_p_value"] > 0.05 and r[2]["cluster_p_value"] < 0.001
    assert r[2]["cluster_js_divergence"] > 0.05 and r[2]["new_content_share"] == 0.0
    assert json.loads(r[2]["details"])["n_tested_current"] == RESERVOIR


def test_memory_is_bounded_by_a_batch_not_the_stream(con, reference, incoming):
    """Peak Python memory of one add call is the same for 5k and 60k rows."""
    con.sql("SELECT drift_monitor_create('m', reference := 'topics', reservoir_size := 50)").fetchall()
    cur = con.cursor()

    def peak(rows: int) -> int:
        tracemalloc.start()
        _drift_monitor.add(cur, "m", f"(SELECT * FROM incoming WHERE doc_id < {rows})",
                           "embedding", "created_at")
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(5_000), peak(60_000)
    cur.close()
    assert large < 2 * small + (1 << 20), (small, large)


def test_replaying_a_stream_gives_the_same_reservoir(con, incoming):
    for name in ("a", "b"):
        con.sql(f"SELECT drift_monitor_create('{name}', reservoir_size := 50, seed := 7)").fetchall()
        feed(con, name, 0, 5)
    a, b = (con.sql(f"SELECT window_start, slot, embedding FROM duckcluster.drift_reservoirs "
                    f"WHERE monitor = '{n}' ORDER BY ALL").fetchall() for n in ("a", "b"))
    assert a == b and len(a) == 50
    # no reference: no cluster counts, NULL cluster columns
    r = con.sql("SELECT cluster_p_value, new_content_share FROM drift_monitor_windows('a')").fetchall()
    assert r == [(None, None)]


def test_a_failing_batch_changes_nothing(con, reference, incoming):
    con.sql("SELECT drift_monitor_create('m', reference := 'topics', reservoir_size := 50)").fetchall()
    feed(con, "m", 0, 2)
    before = [con.sql(f"SELECT * FROM duckcluster.{t} ORDER BY ALL").fetchall()
              for t in ("drift_windows", "drift_reservoirs", "drift_counts")]
    # 20,000 good rows then one with NaN: the whole call is rolled back
    con.execute("CREATE TABLE bad AS SELECT * FROM incoming WHERE batch BETWEEN 2 AND 21")
    nan_row = ", ".join(["'NaN'::FLOAT"] * (D - 1))
    con.execute(f"INSERT INTO bad SELECT 999999, 0, TIMESTAMP '2024-03-01', "
                f"[{nan_row}, 0]::FLOAT[{D}]")
    with pytest.raises(duckdb.Error, match="NaN or Inf"):
        con.sql("SELECT drift_monitor_add('m', 'bad', 'embedding', time_column := 'created_at')").fetchall()
    after = [con.sql(f"SELECT * FROM duckcluster.{t} ORDER BY ALL").fetchall()
             for t in ("drift_windows", "drift_reservoirs", "drift_counts")]
    assert after == before


def test_without_a_time_column_rows_land_in_the_current_window(con, incoming):
    con.sql("SELECT drift_monitor_create('now', window_size := INTERVAL 1 HOUR)").fetchall()
    n = con.sql("SELECT drift_monitor_add('now', '(SELECT * FROM incoming WHERE batch = 0)')").fetchall()
    assert n == [({"rows_read": PER_BATCH, "rows_added": PER_BATCH, "skipped_null_embedding": 0,
                   "skipped_null_time": 0},)]
    (w,) = con.sql("SELECT window_start FROM duckcluster.drift_windows WHERE monitor = 'now'").fetchall()
    now = con.sql("SELECT time_bucket(INTERVAL 1 HOUR, current_timestamp AT TIME ZONE 'UTC')").fetchall()[0][0]
    assert abs((now - w[0]).total_seconds()) <= 3600


def test_monitor_listing_named_baseline_and_delete(con, reference, incoming):
    con.sql("SELECT drift_monitor_create('m', reference := 'topics', reservoir_size := 50)").fetchall()
    feed(con, "m", 0, 1)
    feed(con, "m", 30, 31)
    feed(con, "m", 60, 61)
    (row,) = con.sql("SELECT name, reference_name, n_windows, n_seen, dim FROM drift_monitor_list()").fetchall()
    assert row == ("m", "topics", 3, 3000, D)
    r = con.sql("SELECT is_baseline FROM drift_monitor_windows('m', baseline := TIMESTAMP "
                "'2024-03-02 10:00', method := ['mean_shift', 'energy'])").fetchall()
    assert [x[0] for x in r] == [False, False, True, True, False, False]
    assert con.sql("SELECT drift_monitor_delete('m')").fetchall()[0][0] == "deleted drift monitor 'm'"
    for t in ("drift_monitors", "drift_windows", "drift_reservoirs", "drift_counts"):
        assert con.sql(f"SELECT count(*) FROM duckcluster.{t}").fetchall() == [(0,)]


def test_monitor_errors(con, reference, incoming):
    con.sql("SELECT drift_monitor_create('m', reference := 'topics')").fetchall()
    msg = str(pytest.raises(duckdb.Error, con.sql("SELECT drift_monitor_create('m')").fetchall).value)
    assert "already exists" in msg and '"replace" := true' in msg
    con.sql("SELECT drift_monitor_create('m', \"replace\" := true)").fetchall()
    msg = str(pytest.raises(duckdb.Error, con.sql(
        "SELECT * FROM drift_monitor_windows('mm')").fetchall).value)
    assert "No drift monitor named 'mm'. Did you mean 'm'? Existing monitors: 'm'." in msg
    msg = str(pytest.raises(duckdb.Error, con.sql(
        "SELECT * FROM drift_monitor_windows('m')").fetchall).value)
    assert "has no data yet" in msg
    msg = str(pytest.raises(duckdb.Error, con.sql(
        "SELECT drift_monitor_create('w', window_size := 'often')").fetchall).value)
    assert "window_size must be a positive INTERVAL" in msg
    msg = str(pytest.raises(duckdb.Error, con.sql(
        "SELECT drift_monitor_create('r', reference := 'nope')").fetchall).value)
    assert "No cluster definition named 'nope'" in msg
    feed(con, "m", 0, 1)
    load_table(con, "narrow", np.ones((5, 4), dtype=np.float32))
    msg = str(pytest.raises(duckdb.Error, con.sql(
        "SELECT drift_monitor_add('m', 'narrow')").fetchall).value)
    assert "holds 16-dimensional embeddings; this batch has 4" in msg
