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


# The two tests below run in a fresh interpreter: OpenBLAS pools are per process, and once
# an earlier test of the same process has set them from another thread (a DuckDB worker
# running a UDF), OpenBLAS (scipy-openblas 0.3.x) ignores a later set from the main thread
# (measured: counts stay 2 inside limited(1)). That cross-thread behaviour is a known gap
# of the thread sizing (issue 19), not what these tests are about.
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
