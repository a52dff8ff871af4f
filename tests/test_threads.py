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


# The tests below run in a fresh interpreter: OpenBLAS pools are per process, and what an
# earlier test set must not decide what these see.
_FRESH = """
import numpy as np
from duckcluster.core import threads

def counts():
    return [i["num_threads"] for i in threads.controller().info() if i["user_api"] == "blas"]
"""


def _in_fresh_process(body: str) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", _FRESH + textwrap.dedent(body)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_limited_sets_and_restores_the_pools():
    _in_fresh_process("""
        before = counts()
        with threads.limited(1):
            assert set(counts()) == {1}, counts()
            a = np.ones((64, 64), dtype=np.float32)
            assert float((a @ a)[0, 0]) == 64.0
        assert counts() == before, (counts(), before)
    """)


def test_limited_never_raises_a_lowered_pool():
    _in_fresh_process("""
        with threads.limited(1, user_api="blas"):
            with threads.limited(threads.cores() + 4, user_api="blas"):
                assert set(counts()) == {1}, counts()
            assert set(counts()) == {1}, counts()
    """)


def test_machine_sized_runs_the_function_and_restores():
    before = _blas_counts()

    @threads.machine_sized
    def work(x):
        assert max(_blas_counts()) <= threads.cores()
        return x * 2

    assert work(21) == 42
    assert _blas_counts() == before


def test_assign_pin_sets_one_blas_thread_and_restores():
    _in_fresh_process("""
        from duckcluster.functions.core import _BLAS_PIN
        before = counts()
        with _BLAS_PIN:
            with _BLAS_PIN:  # overlapping batches keep the pin
                assert set(counts()) == {1}, counts()
            assert set(counts()) == {1}, counts()
        assert counts() == before, (counts(), before)
    """)


def test_limited_works_from_any_thread_after_another_set_the_pools():
    """threadpoolctl 3.8 drops OpenBLAS sets from every thread but the first that set
    one (its 'controlling thread'); a DuckDB worker running a UDF took that role, and
    later runs on other threads kept two BLAS threads inside limited(1)."""
    _in_fresh_process("""
        import threading
        import duckdb
        import pyarrow as pa

        seen = {}

        def inside(tag):
            with threads.limited(1):
                seen[tag] = counts()

        con = duckdb.connect()
        con.create_function("f", lambda x: (inside("udf"), pa.array([1] * len(x)))[1],
                            ["INTEGER"], "INTEGER", type="arrow", side_effects=True)
        con.sql("SELECT f(i::INTEGER) FROM range(3) t(i)").fetchall()
        inside("main")
        t = threading.Thread(target=inside, args=("thread",))
        t.start()
        t.join()
        for tag, c in seen.items():
            assert set(c) == {1}, (tag, c)
    """)
