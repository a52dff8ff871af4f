"""Uniform random relabellings of the pooled rows, drawn by a numba kernel
(imported lazily: numba).

``numpy.random.Generator.choice(N, m, replace=False)`` permutes all ``N`` rows for
every relabelling and the ones are then scattered into a float matrix: 56 ms per
relabelling of 2M rows, 3.6 s of CPU per block of 64, as much as the four
statistics of the block. Here selection sampling (Knuth's Algorithm S: one pass
in row order, row i current with probability (m - picked) / (N - i), every set of
``m`` rows equally likely) writes each relabelling in sequence, from uniforms the
caller's generator draws in one call per relabelling.
Kernels are compiled with ``cache=True``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _select(row, m, u):
    """Set ``m`` entries of the zeroed ``row`` to 1.0, a uniform subset, from the (N,)
    uniforms ``u`` (selection sampling: entry i is picked with probability
    (m - picked so far) / (N - i), one pass in order)."""
    N = row.size
    need = float(m)
    for i in range(N):  # branch-free: a mispredicted branch per row cost more than the rest
        pick = u[i] * (N - i) < need
        row[i] = pick
        need -= pick


def fill_current(Zt: np.ndarray, first: int, m: int, rng: np.random.Generator) -> None:
    """Rows ``first..`` of the zeroed (b, N) float32 ``Zt``: each a uniformly drawn set of
    ``m`` current rows (1.0), from ``rng``."""
    u = np.empty(Zt.shape[1], dtype=np.float64)
    for j in range(first, Zt.shape[0]):
        rng.random(out=u)
        _select(Zt[j], m, u)
