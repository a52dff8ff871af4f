"""Scale-out: ``cluster_assign_parquet`` over a Parquet dataset, local vs Ray, same answer.

    python -m bench.ray_scaleout [--rows 2000000] [--files 8] [--repeat 1]

A k-means definition (100 clusters) is fitted on a 20k-row table; then every row
of an ``--rows`` x 384 Parquet dataset is assigned to its centroids, each step in a
fresh process: ``backend := 'local'`` (streaming in this process),
``backend := 'ray'`` on a local Ray runtime with ``num_cpus`` = the machine's
cores (Ray's start-up timed apart), and, for reference, ``assign_cluster`` in SQL
over ``read_parquet``. The Ray and local outputs are compared row by row. Needs
``pip install 'duckcluster[ray]'``; without Ray only the local rows are run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import Row, cli, fmt_s, have, iter_clusters, load_table, scratch_dir

STEP = """
import json, os, resource, sys, time
import duckcluster
backend, db, data, out = sys.argv[1:5]
t_init = 0.0
if backend == 'ray':
    import ray
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t
con = duckcluster.connect(db, read_only=True)
t = time.perf_counter()
if backend == 'sql':
    n = con.sql(f"SELECT count(*) FILTER (WHERE assign_cluster(embedding, 'big') >= 0) "
                f"FROM read_parquet('{data}/*.parquet')").fetchall()[0][0]
else:
    n = con.sql(f"SELECT n_assigned FROM cluster_assign_parquet('big', '{data}', '{out}', "
                f"id := 'doc_id', backend := '{backend}', overwrite := true)").fetchall()[0][0]
secs = time.perf_counter() - t
con.close()
print(json.dumps({"seconds": secs, "init": t_init, "n": n,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _write_dataset(folder: str, rows: int, files: int) -> None:
    per = -(-rows // files)
    for f in range(files):
        lo, hi = f * per, min(rows, (f + 1) * per)
        with pq.ParquetWriter(os.path.join(folder, f"part-{f:03d}.parquet"),
                              pa.schema([("doc_id", pa.int64()),
                                         ("embedding", pa.list_(pa.float32()))])) as w:
            for start, X, _ in iter_clusters(hi - lo, chunk=100_000, seed=1 + f):
                ids = np.arange(lo + start, lo + start + len(X), dtype=np.int64)
                emb = pa.ListArray.from_arrays(
                    pa.array(np.arange(0, X.size + 1, X.shape[1], dtype=np.int32)),
                    pa.array(X.ravel()))
                w.write_table(pa.table({"doc_id": ids, "embedding": emb}))


def _step(backend: str, db: str, data: str, out: str) -> dict:
    import json

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run([sys.executable, "-c", STEP, backend, db, data, out], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(rows: int, repeat: int) -> list[Row]:
    import duckcluster

    tmp = scratch_dir()
    data, db = os.path.join(tmp, "data"), os.path.join(tmp, "db.duckdb")
    os.makedirs(data)
    files = int(os.environ.get("BENCH_FILES", "8"))
    _write_dataset(data, rows, files)
    con = duckcluster.connect(db)
    X, _ = next((x, y) for _, x, y in iter_clusters(20_000, chunk=20_000, seed=99))
    load_table(con, "sample", X)
    con.sql("SELECT cluster_create('big', source := 'sample', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 100})").fetchall()
    con.sql("SELECT cluster_execute('big')").fetchall()
    con.close()
    backends = ["local", "sql"] + (["ray"] if have("ray") else [])
    res: dict[str, list[dict]] = {b: [] for b in backends}
    for _ in range(repeat):
        for b in backends:
            res[b].append(_step(b, db, data, os.path.join(tmp, f"out_{b}")))
    med = {b: sorted(r, key=lambda x: x["seconds"])[len(r) // 2] for b, r in res.items()}
    same = ""
    if "ray" in med:
        import duckdb

        c = duckdb.connect()
        q = "SELECT * FROM read_parquet('{}/*.parquet') ORDER BY doc_id"
        diff = c.sql(f"SELECT count(*) FROM ({q.format(tmp + '/out_local')} ) a FULL JOIN "
                     f"({q.format(tmp + '/out_ray')}) b USING (doc_id) WHERE a.cluster_id IS "
                     "DISTINCT FROM b.cluster_id OR a.similarity IS DISTINCT FROM "
                     "b.similarity").fetchall()[0][0]
        c.close()
        same = f"ray vs local: {diff} differing rows"
    loc = med["local"]
    peers = {"assign_cluster in SQL over read_parquet": med["sql"]["seconds"]}
    notes = (f"{rows:,} x 384 rows in {files} files, 100 centroids, {os.cpu_count()} CPUs; "
             f"local peak RSS {loc['rss'] / 1e9:.2f} GB")
    out = [Row("cluster_assign_parquet, backend 'local'", rows, loc["seconds"], peers,
               ratio=f"{rows / loc['seconds'] / 1e3:.0f}k rows/s", quality=same, notes=notes)]
    if "ray" in med:
        r = med["ray"]
        out.append(Row("cluster_assign_parquet, backend 'ray' (local runtime)", rows,
                       r["seconds"], {"ray.init": r["init"]},
                       ratio=f"{loc['seconds'] / r['seconds']:.2f}x local "
                             f"({rows / r['seconds'] / 1e3:.0f}k rows/s)",
                       quality=same, notes=f"driver peak RSS {r['rss'] / 1e9:.2f} GB; "
                                           f"ray.init {fmt_s(r['init'])} not included"))
    return out


if __name__ == "__main__":
    cli(run, rows=2_000_000, repeat=1)
