"""Thread counts chosen from the machine (duckcluster/core/threads.py)."""

from __future__ import annotations

import numpy as np

from duckcluster.core import threads


def _blas_counts() -> list[int]:
    return [i["num_threads"] for i in threads.controller().info() if i["user_api"] == "blas"]


def test_for_machine_is_between_one_and_the_cores():
    n = threads.for_machine()
    assert 1 <= n <= threads.cores()
    assert threads.busy_elsewhere() >= 0


def test_limited_sets_and_restores_the_pools():
    before = _blas_counts()
    with threads.limited(1):
        assert set(_blas_counts()) == {1}
        a = np.ones((64, 64), dtype=np.float32)
        assert float((a @ a)[0, 0]) == 64.0
    assert _blas_counts() == before


def test_limited_never_raises_a_lowered_pool():
    with threads.limited(1, user_api="blas"):
        with threads.limited(threads.cores() + 4, user_api="blas"):
            assert set(_blas_counts()) == {1}
        assert set(_blas_counts()) == {1}


def test_machine_sized_runs_the_function_and_restores():
    before = _blas_counts()

    @threads.machine_sized
    def work(x):
        assert max(_blas_counts()) <= threads.cores()
        return x * 2

    assert work(21) == 42
    assert _blas_counts() == before


def test_assign_pin_holds_through_the_query_and_restores_after(tmp_path):
    """assign_cluster pins BLAS to one thread for its batches and gives the user's
    setting back shortly after the last batch (not after each one)."""
    import time

    import duckcluster
    import duckcluster.functions.core as dc

    rng = np.random.default_rng(0)
    con = duckcluster.connect(str(tmp_path / "pin.duckdb"))
    try:
        X = rng.normal(size=(5000, 16)).astype(np.float32)
        con.execute("CREATE TABLE docs AS SELECT range AS id, "
                    "$x[range + 1]::FLOAT[16] AS embedding FROM range(5000)",
                    {"x": X.tolist()})
        con.sql("SELECT cluster_create('p', source := 'docs', embedding := 'embedding', "
                "id := 'id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
        con.sql("SELECT cluster_execute('p')").fetchall()
        before = _blas_counts()
        n = con.sql("SELECT count(*) FILTER (WHERE assign_cluster(embedding, 'p', "
                    "threshold := -1) >= 0) FROM docs").fetchall()[0][0]
        assert n == 5000
        deadline = time.monotonic() + 5 * dc._SingleThreadBLAS.RESTORE_AFTER + 2
        while _blas_counts() != before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _blas_counts() == before
        dc._BLAS_PIN.restore_now()  # nothing pinned: a no-op
        assert _blas_counts() == before
    finally:
        con.close()
