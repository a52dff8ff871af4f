"""assign_cluster throughput: the Arrow UDF vs the pure-SQL macro vs numpy in memory.

    python bench/assign_throughput.py [--rows 1000000] [--dim 384] [--k 100] [--repeat 3]

Data: seeded points around k centres on the unit sphere, in a DuckDB table
(FLOAT[dim]). Prints medians of --repeat runs and ratios measured in this run.
The pure-SQL macro is timed on a --sql-rows subset (it is ~20x slower) and
reported as rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

import duckcluster
from duckcluster._sql import _PY_MACROS  # noqa: F401  (import check: the UDF path exists)


def make_data(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = np.empty((n, d), dtype=np.float32)
    step = 200_000
    for s in range(0, n, step):
        e = min(n, s + step)
        X[s:e] = C[rng.integers(0, k, e - s)] + 0.08 * rng.normal(size=(e - s, d)).astype(np.float32)
    return X, C


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sql-rows", type=int, default=50_000)
    a = ap.parse_args()
    n, d, k = a.rows, a.dim, a.k
    X, C = make_data(n, d, k)
    tmp = tempfile.mkdtemp(prefix="dc-bench-")
    con = duckcluster.connect(os.path.join(tmp, "bench.duckdb"))
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d)
    con.register("__x", pa.table({"doc_id": np.arange(n), "embedding": emb}))
    con.sql(f"CREATE TABLE docs AS SELECT doc_id, CAST(embedding AS FLOAT[{d}]) AS embedding FROM __x").fetchall()
    con.unregister("__x")
    # a stored definition whose centroids are exactly C: cluster a tiny table of the centres
    cen = pa.FixedSizeListArray.from_arrays(pa.array(C.ravel()), d)
    con.register("__c", pa.table({"doc_id": np.arange(k), "embedding": cen}))
    con.sql(f"CREATE TABLE centres AS SELECT doc_id, CAST(embedding AS FLOAT[{d}]) AS embedding FROM __c").fetchall()
    con.unregister("__c")
    con.sql(f"SELECT cluster_create('b', source := 'centres', embedding := 'embedding', id := 'doc_id', "
            f"algorithm := 'kmeans', params := {{'n_clusters': {k}}})").fetchall()
    con.sql("SELECT cluster_execute('b')").fetchall()

    udf_q = "SELECT count(*), sum(assign_cluster(embedding, 'b', threshold := 0.0)) FROM docs"
    t_udf = timed(lambda: con.sql(udf_q).fetchall(), a.repeat)

    Cn = C / np.linalg.norm(C, axis=1, keepdims=True)

    def numpy_assign():
        out = np.empty(n, dtype=np.int64)
        for s in range(0, n, 65536):
            blk = X[s:s + 65536]
            blk = blk / np.linalg.norm(blk, axis=1, keepdims=True)
            out[s:s + 65536] = np.argmax(blk @ Cn.T, axis=1)
        return out

    t_np = timed(numpy_assign, a.repeat)
    t_gemm = timed(lambda: X @ Cn.T, a.repeat)

    # the pure-SQL macro from sql/duckcluster.sql, on a separate plain connection
    import duckdb

    con.close()
    plain = duckdb.connect(os.path.join(tmp, "bench.duckdb"), read_only=True)
    plain.execute("SET enable_progress_bar = false")
    plain.execute(open(os.path.join(os.path.dirname(__file__), "..", "sql", "duckcluster.sql")).read())
    sql_q = (f"SELECT count(*), sum(assign_cluster(embedding, 'b', threshold := 0.0)) FROM "
             f"(SELECT * FROM docs LIMIT {a.sql_rows})")
    t_sql = timed(lambda: plain.sql(sql_q).fetchall(), a.repeat)
    plain.close()

    udf_rps, np_rps, sql_rps = n / t_udf, n / t_np, a.sql_rows / t_sql
    print(f"# assign_cluster: {n:,} rows x {d} dims, {k} centroids, median of {a.repeat}")
    print("| path | seconds | rows/s | ratio to UDF |")
    print("|---|---|---|---|")
    print(f"| assign_cluster (Arrow UDF, DuckDB table) | {t_udf:.3f} | {udf_rps:,.0f} | 1.00 |")
    print(f"| numpy chunked matmul+argmax, in memory | {t_np:.3f} | {np_rps:,.0f} | {udf_rps / np_rps:.2f}x |")
    print(f"| sgemm bound (X @ C.T) | {t_gemm:.3f} | {n / t_gemm:,.0f} | UDF time / sgemm = {t_udf / t_gemm:.2f} |")
    print(f"| pure-SQL macro ({a.sql_rows:,} rows) | {t_sql:.3f} | {sql_rps:,.0f} | UDF is {udf_rps / sql_rps:.1f}x faster |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
