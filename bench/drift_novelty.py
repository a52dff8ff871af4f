"""Novelty, diffusion and spectral statistics for the default drift test, on one graph
and the same relabellings, on real sentence embeddings.

    python bench/drift_novelty.py                           # drift_pool, 40 nulls, 40 new5
    python bench/drift_novelty.py --set packages10 --null 100 --reps 40

The statistics ``bench/drift_candidates.py`` compared are counts of same-side
neighbours, regions and mean shifts. This script compares what it did not:

- ``ratio{k}_q{q}``: a local density ratio per current row, log(distance to its
  ``k``-th nearest baseline row / distance to its ``k``-th nearest other current
  row) among its 40 pooled neighbours (as in kNN outlier tests), summed over the top
  ``q`` % of current rows (a tail: a 5 % new topic is a tail, a mean dilutes it);
- ``hc{k}``: higher criticism of the current rows' binomial p-values of their
  current-neighbour counts among ``k``;
- ``diff{k}_t{t}_q{q}``: the current share of a ``t``-step random walk on the ``k``-NN
  graph from each current row (label diffusion), summed over the top ``q`` % of
  current rows; ``diffe{k}_t{t}``: the squared deviation of that share from the
  current side's size, summed over all rows (a smoothed Schilling statistic);
- ``spec{k}_{L}``: energy of the centred current-side indicator on the ``L`` smoothest
  eigenvectors of the symmetric normalized ``k``-NN graph (soft regions);
- ``new20_18``: the default ``knn`` method's "new" component, for reference.

Each replicate draws both sides as ``bench/drift_power.py`` does; one exact
neighbour graph (cosine, 40 neighbours, with distances), built without the labels,
and ``--perms`` relabellings give every statistic an exact permutation p-value.
The table prints the share of replicates with p < 0.05.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.drift_power import ALPHA, Pool, wilson  # noqa: E402
from duckcluster.drift._base import permutation_labels  # noqa: E402

K = 40


def graph(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows of unit rows and their euclidean distances."""
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    idx = np.argpartition(-S, k, axis=1)[:, :k]
    v = np.take_along_axis(S, idx, axis=1)
    o = np.argsort(-v, axis=1)
    idx = np.take_along_axis(idx, o, axis=1)
    d = np.sqrt(np.maximum(2 - 2 * np.take_along_axis(v, o, axis=1), 1e-12))
    return idx, d


def tail_sum(score: np.ndarray, cur: np.ndarray, q: float) -> np.ndarray:
    """(P,) sum of the top ``q`` share of ``score`` (N, P) over rows with ``cur``."""
    s = np.where(cur, score, -np.inf)
    m = int(cur[:, 0].sum())
    t = max(1, int(round(q * m)))
    part = -np.partition(-s, t - 1, axis=0)[:t]
    return part.sum(axis=0)


def statistics(X: np.ndarray, n: int, perms: int, rng) -> dict[str, np.ndarray]:
    from scipy import sparse
    from scipy.sparse.linalg import eigsh
    from scipy.stats import binom

    N = len(X)
    m = N - n
    idx, dist = graph(X, K)
    Z = permutation_labels(n, m, perms, rng)  # 1 = baseline
    cur = Z < 0.5  # (N, P)
    out: dict[str, np.ndarray] = {}
    nb_cur = cur[idx]  # (N, K, P)
    cum = np.cumsum(nb_cur, axis=1, dtype=np.int16)  # current among first j+1
    share = m / (N - 1)
    # reference: the knn method's "new" component
    out["new20_18"] = (cur & (cum[:, 19] >= 18)).sum(axis=0).astype(float)
    # local density ratio
    pos = np.arange(1, K + 1, dtype=np.int16)[None, :, None]
    ncum = pos - cum  # baseline among first j+1
    for k in (1, 3, 5, 10):
        # position of the k-th current / baseline neighbour (K-1 if not reached)
        pc = np.minimum(np.argmax(cum >= k, axis=1) + (cum[:, -1] < k) * K, K - 1)
        pb = np.minimum(np.argmax(ncum >= k, axis=1) + (ncum[:, -1] < k) * K, K - 1)
        dc = np.take_along_axis(dist, pc, axis=1)
        db = np.take_along_axis(dist, pb, axis=1)
        r = np.log(db / dc)
        for q in (0.05, 0.1, 0.2):
            out[f"ratio{k}_q{int(q * 100)}"] = tail_sum(r, cur, q)
    # higher criticism of count p-values
    for k in (10, 20, 40):
        c = cum[:, k - 1].astype(int)
        pv = binom.sf(c - 1, k, share)  # (N, P)
        pv = np.where(cur, pv, np.inf)
        ps = np.sort(pv, axis=0)[: m // 2]
        i = np.arange(1, m // 2 + 1)[:, None]
        psc = np.clip(ps, 1e-12, 1 - 1e-12)
        hc = np.sqrt(m) * (i / m - psc) / np.sqrt(psc * (1 - psc))
        out[f"hc{k}"] = hc.max(axis=0)
    # diffusion on the kNN graph
    C = cur.astype(np.float32)
    for k in (10, 20):
        rows = np.repeat(np.arange(N), k)
        A = sparse.csr_matrix((np.full(N * k, 1.0 / k, np.float32),
                               (rows, idx[:, :k].ravel())), shape=(N, N))
        h = C
        for t in range(1, 5):
            h = A @ h
            if t in (1, 2, 4):
                for q in (0.05, 0.1):
                    out[f"diff{k}_t{t}_q{int(q * 100)}"] = tail_sum(h, cur, q)
                out[f"diffe{k}_t{t}"] = ((h - m / N) ** 2).sum(axis=0)
        # spectral energy
        W = A + A.T
        deg = np.asarray(W.sum(axis=1)).ravel()
        Dm = sparse.diags(1 / np.sqrt(deg))
        Sn = Dm @ W @ Dm
        vals, vecs = eigsh(Sn, k=129, which="LA")
        order = np.argsort(-vals)
        U = vecs[:, order[1:]]  # drop the trivial one
        Cc = C - C.mean(axis=0, keepdims=True)
        proj = U.T @ Cc  # (128, P)
        for L in (16, 32, 64, 128):
            out[f"spec{k}_{L}"] = (proj[:L] ** 2).sum(axis=0)
    return out


def p_of(s: np.ndarray) -> float:
    tol = 1e-9 * max(abs(s[0]), 1e-300)
    return float((1 + np.sum(s[1:] >= s[0] - tol)) / s.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="drift_pool")
    ap.add_argument("--side", type=int, default=1200)
    ap.add_argument("--null", type=int, default=40)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--scenarios", default="null,new5")
    a = ap.parse_args()
    pool = Pool(a.set, None)
    print(f"{a.set}: {len(pool.X):,} rows, {len(pool.names)} categories; {a.side} per side; "
          f"{a.perms} relabellings", flush=True)
    res: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for kind in a.scenarios.split(","):
        reps = a.null if kind == "null" else a.reps
        for s in range(reps):
            b, c = pool.draw(kind, s, a.side)
            X = np.concatenate([pool.X[b], pool.X[c]]).astype(np.float32)
            st = statistics(X, len(b), a.perms, np.random.default_rng([s, 5]))
            for name, v in st.items():
                res.setdefault(name, {}).setdefault(kind, []).append(p_of(v))
        print(f"  {kind} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    kinds = a.scenarios.split(",")
    print("\n| statistic | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
    rows = []
    for name, by in res.items():
        cells = []
        for kind in kinds:
            ps = np.array(by.get(kind, []))
            hits = int((ps < ALPHA).sum())
            if kind == "null":
                lo, hi = wilson(hits, ps.size)
                cells.append(f"{hits / ps.size:.2f} ({lo:.2f}-{hi:.2f})")
            else:
                cells.append(f"{hits / ps.size:.2f}")
        rows.append((name, cells))
    for name, cells in rows:
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
