"""assign_cluster throughput against numpy in the same run, on the machine as it is and
next to a fixed background load the benchmark starts itself.

    python -m bench.assign_throughput [--rows 1000000] [--k 100] [--repeat 3]

Data: seeded clusters on the unit sphere (bench._common), d = 384, in a DuckDB
file table (FLOAT[384]); k centroids stored by a real run. Peers, on the array
already in memory, in 65,536-row chunks, BLAS threads at their default:

- numpy: ``S = X @ C.T``, argmax, best / row norm, threshold (what the UDF returns);
- numpy matmul + argmax only (no similarity, no threshold);
- sgemm bound: ``X @ C.T`` alone into one reused output;
- the DuckDB floor: an empty Arrow UDF over the same column (DuckDB's scan and its
  Arrow hand-off, the part of the UDF's time no Python code can remove);
- the pure-SQL macro of ``sql/duckcluster.sql`` on a ``--sql-rows`` subset (quiet only).

Two conditions: "as is" (whatever else runs on the machine; the load is printed)
and "+ background load": one extra process running a one-thread numpy matmul loop,
started before and stopped after that block. In each condition the UDF and the
peers take turns ``--repeat`` times and medians are compared, so a change of load
hits all of them. The UDF's labels must equal numpy's, row for row.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np

import duckcluster.functions.core as dc_sql
from bench._common import (
    BackgroundLoad,
    Row,
    connect,
    interleaved,
    load_now,
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
    import pyarrow as pa

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
    con.create_function("bench_empty_udf", lambda e: pa.array(np.zeros(len(e), np.int32)),
                        [f"FLOAT[{d}]"], "INTEGER", type="arrow", side_effects=True)

    udf_q = "SELECT count(*), sum(assign_cluster(embedding, 'b', threshold := 0.0)) FROM docs"
    CT = np.ascontiguousarray(C.T)
    S = np.empty((min(65536, n), len(C)), dtype=np.float32)

    def sgemm() -> None:  # the matmul alone, chunked into one reused output
        for s in range(0, n, 65536):
            blk = X[s:s + 65536]
            np.matmul(blk, CT, out=S[:len(blk)])

    def matmul_argmax() -> None:
        for s in range(0, n, 65536):
            blk = X[s:s + 65536]
            np.matmul(blk, CT, out=S[:len(blk)])
            S[:len(blk)].argmax(axis=1)

    def unpinned() -> None:  # BLAS threads left alone inside the UDF
        pin = dc_sql._BLAS_PIN
        dc_sql._BLAS_PIN = contextlib.nullcontext()
        try:
            con.sql(udf_q).fetchall()
        finally:
            dc_sql._BLAS_PIN = pin

    fns = {"udf": lambda: con.sql(udf_q).fetchall(), "numpy": lambda: numpy_assign(X, C),
           "matmul+argmax": matmul_argmax, "sgemm": sgemm,
           "floor": lambda: con.sql("SELECT sum(bench_empty_udf(embedding)) FROM docs"
                                    ).fetchall(),
           "unpinned": unpinned}
    conditions = {}
    for cond in ("as is", "+ background load"):
        ctx = BackgroundLoad() if cond != "as is" else contextlib.nullcontext()
        with ctx:
            before = load_now()
            conditions[cond] = (interleaved(fns, repeat), before, load_now())
    labels_np = numpy_assign(X, C)
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

    out = []
    for cond, (t, before, after) in conditions.items():
        vs_np, vs_mm, vs_gemm = t["numpy"] / t["udf"], t["matmul+argmax"] / t["udf"], \
            t["udf"] / t["sgemm"]
        quiet = cond == "as is"
        peers = {"numpy chunked": t["numpy"], "numpy matmul + argmax": t["matmul+argmax"],
                 "sgemm bound": t["sgemm"], "DuckDB scan + Arrow hand-off (empty UDF)":
                 t["floor"]}
        if quiet:
            peers[f"pure-SQL macro ({m:,} rows)"] = t_sql
            ok = vs_np >= 1.0 and vs_gemm <= 1.3
            target = ">= 1.0x numpy, <= 1.3x sgemm"
        else:
            ok = vs_np >= 0.8
            target = ">= 0.8x numpy next to the background load"
        out.append(Row(
            workload=f"assign_cluster, {k} centroids, d={d}, {cond}",
            rows=n, duckcluster=t["udf"], peers=peers,
            ratio=(f"{vs_np:.2f}x numpy's throughput; {vs_mm:.2f}x matmul+argmax; "
                   f"{vs_gemm:.2f}x the sgemm time"
                   + (f"; {(n / t['udf']) / (m / t_sql):.0f}x the SQL macro"
                      if quiet else "")),
            quality=f"labels identical to numpy: {'yes' if same else 'NO'}",
            target=target, verdict=verdict(ok and same),
            notes=(f"{before} at the start, {after} at the end of the block; UDF "
                   f"{n / t['udf']:,.0f} rows/s, numpy {n / t['numpy']:,.0f} rows/s; the "
                   f"empty UDF (DuckDB's scan and Arrow hand-off) takes "
                   f"{t['floor'] / t['udf']:.0%} of the UDF's time; with BLAS threads not "
                   f"pinned to 1 inside the UDF: {fmt_s(t['unpinned'])} "
                   f"({t['unpinned'] / t['udf']:.2f}x)."),
        ))
    return out


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
