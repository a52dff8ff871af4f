"""Benchmark of every drift method on 50k vs 50k rows x 384 dims, against a
hand-written permutation MMD in numpy; optionally, calibration on digits.

    python bench/drift_methods.py                    # speed: 50k vs 50k x 384
    python bench/drift_methods.py --rows 10000       # smaller
    python bench/drift_methods.py --methods knn,mmd  # some methods only
    python bench/drift_methods.py --calibration 200  # FPR over 200 null splits of digits,
                                                     # power over 100 10%-new-class shifts

Speed: the data (20 clusters on the unit sphere; the current side has 10% of its
rows from a 21st cluster) lives in a DuckDB file. Each method runs end to end
through SQL (``SELECT * FROM embedding_drift(...)``: reading 2 x 50k rows from
DuckDB, seeded sampling, the test) and as the pure core on arrays already in
memory. The kNN peer is the kNN two-sample test one writes with faiss over all rows
(IVF-flat neighbours with the same cells and probes as ``knn``, Schilling's count, 500
permutations; exact numpy neighbours up to 20,000 pooled rows). The MMD reference is what
one would write by hand in numpy: the same
1,000 + 1,000 row samples (a permutation MMD on all 100k rows would need a
100k x 100k kernel, 80 GB), an RBF kernel with the median bandwidth, and a loop
over 500 permutations that re-indexes the kernel blocks. The ratio is method
time / hand-written time (below 1 = faster).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa

import duckcluster
from bench._common import scratch_dir
from duckcluster.core.assign import normalize_rows
from duckcluster.drift import DRIFT_METHODS, run_method


def sphere_clusters(n: int, d: int, k: int, rng, centers=None, spread=0.6):
    centers = centers if centers is not None else normalize_rows(rng.normal(size=(k, d)))
    labels = rng.integers(0, len(centers), n)
    X = centers[labels] + spread * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return X.astype(np.float32), centers


def build(path: str, rows: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    B, centers = sphere_clusters(rows, d, 20, rng)
    C, _ = sphere_clusters(rows, d, 20, rng, centers=centers)
    new, _ = sphere_clusters(rows // 10, d, 1, rng)
    C[: rows // 10] = new
    con = duckcluster.connect(path)
    X = np.concatenate([B, C])
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d)
    con.register("__x", pa.table({"id": np.arange(len(X)), "side": np.repeat([0, 1], rows),
                                  "embedding": emb}))
    con.execute(f"CREATE TABLE emb AS SELECT id, side, CAST(embedding AS FLOAT[{d}]) AS embedding "
                "FROM __x")
    con.unregister("__x")
    con.close()
    return normalize_rows(B), normalize_rows(C)


def handwritten_mmd(B: np.ndarray, C: np.ndarray, n_samples: int = 1000, n_perm: int = 500,
                    seed: int = 0) -> float:
    """What one writes by hand: sample, kernel, a Python loop over permutations."""
    rng = np.random.default_rng(seed)
    X = B[rng.choice(len(B), min(n_samples, len(B)), replace=False)].astype(np.float64)
    Y = C[rng.choice(len(C), min(n_samples, len(C)), replace=False)].astype(np.float64)
    Z = np.concatenate([X, Y])
    sq = (Z * Z).sum(1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0)
    sigma = np.sqrt(np.median(D2[np.triu_indices(len(Z), 1)]))
    K = np.exp(-D2 / (2 * sigma**2))
    n = len(X)

    def mmd(idx):
        a, b = idx[:n], idx[n:]
        return K[np.ix_(a, a)].mean() + K[np.ix_(b, b)].mean() - 2 * K[np.ix_(a, b)].mean()

    obs = mmd(np.arange(len(Z)))
    null = [mmd(rng.permutation(len(Z))) for _ in range(n_perm)]
    return (1 + sum(s >= obs for s in null)) / (1 + n_perm)


def knn_peer(B: np.ndarray, C: np.ndarray, k: int = 20, n_perm: int = 500, seed: int = 0,
             exact: bool = False) -> tuple[float, str]:
    """A kNN two-sample test as one writes it with faiss (or numpy): the neighbours of all
    pooled rows once (faiss IVF-flat with the same cells and probes as ``knn``, or exact
    blocked products with ``exact``), then Schilling's count of same-side neighbour pairs
    for the real labels and ``n_perm`` permutations (vectorized, 64 at a time)."""
    X = np.ascontiguousarray(np.concatenate([B, C]), dtype=np.float32)
    N, n = len(X), len(B)
    if exact:
        nb = np.empty((N, k), dtype=np.int64)
        for s in range(0, N, 2048):
            S = X[s:s + 2048] @ X.T
            S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = -np.inf
            nb[s:s + 2048] = np.argpartition(S, N - k, axis=1)[:, N - k:]
        how = "exact numpy"
    else:
        import faiss

        nlist = max(2, N // 192)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(X.shape[1]), X.shape[1], nlist)
        rng = np.random.default_rng(seed)
        index.train(X[rng.choice(N, min(N, 40 * nlist), replace=False)])
        index.add(X)
        index.nprobe = 4
        _, I = index.search(X, k + 1)
        nb = np.where(I[:, :1] == np.arange(N)[:, None], I[:, 1:], I[:, :k])
        nb = np.where(nb < 0, np.arange(N)[:, None], nb)
        how = f"faiss IVF-flat ({nlist} cells, 4 probes)"
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_perm + 1, 64):
        b = min(64, n_perm + 1 - start)
        L = np.zeros((b, N), dtype=bool)
        for j in range(b):
            if start + j == 0:
                L[j, n:] = True
            else:
                L[j, rng.choice(N, N - n, replace=False, shuffle=False)] = True
        same = np.zeros(b)
        for c in range(k):
            same += (L[:, nb[:, c]] == L).sum(axis=1)
        stats.append(same)
    stats = np.concatenate(stats)
    return float((1 + np.sum(stats[1:] >= stats[0])) / stats.size), how


def speed(rows: int, d: int, methods: list[str]) -> None:
    tmp = scratch_dir()  # removed at exit: the file is hundreds of MB
    path = os.path.join(tmp, "bench.duckdb")
    t = time.perf_counter()
    B, C = build(path, rows, d)
    print(f"data: {rows:,} vs {rows:,} rows x {d} dims (DuckDB file built in "
          f"{time.perf_counter() - t:.1f} s); 2 cores")
    t, cpu = time.perf_counter(), time.process_time()
    p_hand = handwritten_mmd(B, C)
    hand, hand_cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"hand-written numpy permutation MMD (1,000 + 1,000 rows, 500 permutations): "
          f"{hand:.2f} s wall, {hand_cpu:.2f} s CPU, p = {p_hand:.4f}")
    peers = {"mmd": hand}
    try:
        t, cpu = time.perf_counter(), time.process_time()
        p_knn, how = knn_peer(B, C, exact=2 * rows <= 20_000)
        peers["knn"] = time.perf_counter() - t
        print(f"kNN test peer on all rows ({how}, k 20, Schilling's count, 500 permutations):"
              f" {peers['knn']:.2f} s wall, {time.process_time() - cpu:.2f} s CPU, "
              f"p = {p_knn:.4f}")
    except ImportError:
        print("kNN test peer: faiss-cpu is not installed (pip install duckcluster[bench])")
    print()
    con = duckcluster.connect(path, read_only=True)
    header = f"{'method':12s} {'SQL end to end':>15s} {'SQL CPU':>9s} {'core on arrays':>15s} " \
             f"{'ratio SQL/hand':>15s} {'ratio core/hand':>16s}  p-value  rows tested  " \
             f"{'SQL/kNN peer':>12s}"
    print(header)
    print("-" * len(header))
    try:
        for name in methods:
            t, cpu = time.perf_counter(), time.process_time()
            row = con.sql(
                "SELECT p_value, details FROM embedding_drift('(SELECT embedding FROM emb WHERE "
                f"side = 0)', '(SELECT embedding FROM emb WHERE side = 1)', 'embedding', "
                f"method := '{name}')").fetchall()[0]
            sql_s, sql_cpu = time.perf_counter() - t, time.process_time() - cpu
            t = time.perf_counter()
            run_method(name, B, C)
            core_s = time.perf_counter() - t
            import json

            det = json.loads(row[1])
            tested = f"{det.get('n_tested_baseline')} + {det.get('n_tested_current')}"
            vs_knn = f"{sql_s / peers['knn']:12.2f}" if "knn" in peers else ""
            print(f"{name:12s} {sql_s:14.2f}s {sql_cpu:8.2f}s {core_s:14.2f}s {sql_s / hand:15.2f} "
                  f"{core_s / hand:16.2f}  {row[0]:.4f}  {tested}  {vs_knn}", flush=True)
    finally:
        con.close()


def calibration(n_null: int, n_shift: int, methods: list[str]) -> None:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = normalize_rows(X)
    print(f"digits: {n_null} null splits (half/half), {n_shift} shifts (800 vs 720 + 80 of an "
          "unseen class); default settings, alpha 0.05")
    print(f"{'method':12s} {'false positives':>18s} {'FPR':>6s} {'power':>14s} {'rate':>6s} {'s':>6s}")
    for name in methods:
        t = time.perf_counter()
        fp = 0
        for s in range(n_null):
            p = np.random.default_rng(1000 + s).permutation(len(X))
            h = len(X) // 2
            fp += run_method(name, X[p[:h]], X[p[h:]], seed=s).p_value < 0.05
        hits = 0
        for s in range(n_shift):
            rng = np.random.default_rng(2000 + s)
            c = s % 10
            others = rng.permutation(np.flatnonzero(y != c))
            new = rng.permutation(np.flatnonzero(y == c))
            Bs, Cs = X[others[:800]], np.concatenate([X[others[800:1520]], X[new[:80]]])
            hits += run_method(name, Bs, Cs, seed=s).p_value < 0.05
        print(f"{name:12s} {fp:>10d} / {n_null:<5d} {fp / n_null:6.3f} {hits:>6d} / {n_shift:<5d} "
              f"{hits / n_shift:6.3f} {time.perf_counter() - t:6.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000, help="rows per side")
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--calibration", type=int, default=0, metavar="N",
                    help="instead: FPR over N null splits and power over N/2 shifts on digits")
    ap.add_argument("--methods", default=",".join(DRIFT_METHODS),
                    help="comma-separated methods (default: all)")
    a = ap.parse_args()
    methods = a.methods.split(",")
    if a.calibration:
        calibration(a.calibration, max(20, a.calibration // 2), methods)
    else:
        speed(a.rows, a.dims, methods)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
