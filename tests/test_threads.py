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
