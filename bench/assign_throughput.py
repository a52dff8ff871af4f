"""assign_cluster throughput: the Arrow UDF vs numpy in memory, the sgemm and
read-bandwidth bounds, and the pure-SQL macro.

    python -m bench.assign_throughput [--rows 1000000] [--k 100] [--repeat 3]

Data: seeded clusters on the unit sphere (bench._common), d = 384, in a DuckDB
file table (FLOAT[384]); k centroids stored by a real run. Peers:

- numpy: the same computation written by hand over the array already in memory,
  in 65,536-row chunks: ``S = X @ C.T``, argmax, best / row norm (BLAS threads
  left at their default);
- sgemm bound: ``X @ C.T`` alone, in 65,536-row chunks into one reused output
  (one unchunked product was slower than the whole numpy peer: it writes a
  1M x 100 result);
- read bound: ``X.sum()`` (one sequential pass over the 1.5 GB);
- the pure-SQL macro of ``sql/duckcluster.sql`` (``array_cosine_similarity``
  cross join) in a plain DuckDB connection, on a ``--sql-rows`` subset.

The UDF's labels must equal numpy's, row for row.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np

import duckcluster.functions.core as dc_sql
from bench._common import (
    Row,
    connect,
    emit,
    fmt_s,
    load_table,
    make_clusters,
    median_time,
    scratch_dir,
    verdict,
)


def numpy_assign(X: np.ndarray, C: np.ndarray, chunk: int = 65536) -> np.ndarray:
    CT = np.ascontiguousarray(C.T)
    out = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], chunk):
        blk = X[s:s + chunk]
        S = blk @ CT
        idx = np.argmax(S, axis=1)
        best = np.take_along_axis(S, idx[:, None], axis=1)[:, 0]
        norms = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        out[s:s + chunk] = np.where(best / norms >= 0.0, idx, -1)
    return out


def run(rows: int = 1_000_000, k: int = 100, repeat: int = 3,
        sql_rows: int = 50_000) -> list[Row]:
    X, _ = make_clusters(rows)
    n, d = X.shape
    tmp = scratch_dir()
    path = os.path.join(tmp, "assign.duckdb")
    con = connect(path)
    load_table(con, "docs", X)
    rng = np.random.default_rng(1)
    load_table(con, "centres", X[np.sort(rng.choice(n, size=k, replace=False))])
    con.sql(f"SELECT cluster_create('b', source := 'centres', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': {k}}})").fetchall()
    con.sql("SELECT cluster_execute('b')").fetchall()
    cen = con.sql("SELECT cluster_id, centroid FROM cluster_centroids('b') "
                  "ORDER BY cluster_id").to_arrow_table()
    ids = cen.column(0).to_numpy()
    C = np.asarray(cen.column(1).combine_chunks().flatten().to_numpy(),
                   dtype=np.float32).reshape(len(ids), d)
    assert (ids == np.arange(len(ids))).all()

    udf_q = "SELECT count(*), sum(assign_cluster(embedding, 'b', threshold := 0.0)) FROM docs"
    t_udf, _ = median_time(lambda: con.sql(udf_q).fetchall(), repeat)
    # what the FLOAT[d]-typed UDF and the BLAS pin buy: the generic FLOAT[] UDF behind
    # DuckDB's array-to-list cast, and the same query with BLAS threads left alone
    cast_q = ("SELECT count(*), sum(assign_cluster(CAST(embedding AS FLOAT[]), 'b', "
              "threshold := 0.0)) FROM docs")
    t_cast, _ = median_time(lambda: con.sql(cast_q).fetchall(), repeat)
    pin = dc_sql._BLAS_PIN
    dc_sql._BLAS_PIN = contextlib.nullcontext()
    try:
        t_unpinned, _ = median_time(lambda: con.sql(udf_q).fetchall(), repeat)
    finally:
        dc_sql._BLAS_PIN = pin
    t_np, labels_np = median_time(lambda: numpy_assign(X, C), repeat)
    CT = np.ascontiguousarray(C.T)
    S = np.empty((min(65536, n), len(C)), dtype=np.float32)

    def sgemm() -> None:  # the matmul alone, chunked into one reused output
        for s in range(0, n, 65536):
            blk = X[s:s + 65536]
            np.matmul(blk, CT, out=S[:len(blk)])

    t_gemm, _ = median_time(sgemm, repeat)
    t_read, _ = median_time(lambda: X.sum(), repeat)
    labels_udf = con.sql("SELECT assign_cluster(embedding, 'b', threshold := 0.0) FROM docs "
                         "ORDER BY doc_id").to_arrow_table().column(0).to_numpy()
    same = bool((labels_udf == labels_np).all())
    con.close()

    import duckdb

    from duckcluster.catalog.runs import sql_text

    plain = duckdb.connect(path, read_only=True)
    plain.execute("SET enable_progress_bar = false")
    plain.execute(sql_text("duckcluster.sql"))
    m = min(sql_rows, n)
    sql_q = (f"SELECT count(*), sum(assign_cluster(embedding, 'b', threshold := 0.0)) "
             f"FROM (SELECT * FROM docs LIMIT {m})")
    t_sql, _ = median_time(lambda: plain.sql(sql_q).fetchall(), max(1, repeat - 1))
    plain.close()

    udf_rps, np_rps, sql_rps = n / t_udf, n / t_np, m / t_sql
    ok = udf_rps >= 0.8 * np_rps and t_udf <= 1.5 * t_gemm and udf_rps >= 20 * sql_rps
    return [Row(
        workload=f"assign_cluster, {k} centroids, d={d}",
        rows=n, duckcluster=t_udf,
        peers={"numpy chunked": t_np, "sgemm bound": t_gemm, "read bound": t_read,
               f"pure-SQL macro ({m:,} rows)": t_sql},
        ratio=(f"{udf_rps / np_rps:.2f}x numpy's throughput; {t_udf / t_gemm:.2f}x the sgemm "
               f"time; {udf_rps / sql_rps:.0f}x the SQL macro"),
        quality=f"labels identical to numpy: {'yes' if same else 'NO'}",
        target=">= 0.8x numpy, <= 1.5x sgemm, >= 20x SQL macro",
        verdict=verdict(ok and same),
        notes=(f"UDF {udf_rps:,.0f} rows/s, numpy {np_rps:,.0f} rows/s, SQL macro "
               f"{sql_rps:,.0f} rows/s; UDF {fmt_s(t_udf)} vs sgemm {fmt_s(t_gemm)}. "
               f"Same query through the generic FLOAT[] UDF (DuckDB casts each array to a "
               f"list first): {fmt_s(t_cast)} ({t_cast / t_udf:.2f}x the FLOAT[{d}] UDF); with "
               f"BLAS threads not pinned to 1 inside the UDF: {fmt_s(t_unpinned)} "
               f"({t_unpinned / t_udf:.2f}x)."),
    )]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sql-rows", type=int, default=50_000)
    ap.add_argument("--json", help="also write the rows as JSON here (bench runner)")
    a = ap.parse_args()
    emit(run(a.rows, a.k, a.repeat, a.sql_rows), a.json)


if __name__ == "__main__":
    main()
