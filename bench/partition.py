"""Per-partition clustering of a definition (issue 15 item 8) on real text embeddings.

    python -m bench.partition [--sets docstrings8,packages10] [--algorithm auto]
                              [--rows 2000] [--json out.json]
    python -m bench.partition --memory 60000 [--partitions 4] [--algorithm kmeans]

Real sets (``bench/realdata.py``, all-MiniLM-L6-v2, known categories) stacked into one
table, each set a partition (``partition_by := 'dataset'``): two kinds of text a tenant
column would separate. Per set, in the same run:

- **partitioned**: one definition with ``partition_by``;
- **separate**: one definition per set (a query source filtering it), the peer;
- **together**: one definition over all rows, no partition.

Figures: ARI of each set's members against its categories (partitioned vs together),
whether the partitioned run equals the separate runs (ARI 1.0 between them: same seed,
same rows), the share of "together" clusters that mix the two sets, and the partitioned
run's time against the separate runs' total (the partition loop's overhead), after one
warm-up run.

``--memory N``: peak memory of a partitioned full run, which reads one partition at a
time. ``--partitions`` partitions of N synthetic 384-d rows each in one DuckDB file; in a
fresh process each: the partitioned run, one unpartitioned run of all rows (the peer: it
holds every vector, as partitioned runs did before) and a run of one partition alone (the
floor), each with DuckDB's ``memory_limit`` set alike (``--duckdb-memory``, 512MB: its
buffer cache of the scanned table is in the RSS too). Figures: peak RSS above the process's
RSS after import, seconds, and the maps the partitioned run stored (one per partition).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from bench._common import Row, ari, connect, emit, load_now, verdict


def _table(con, sets: list[str], rows: int) -> dict[str, np.ndarray]:
    from bench.realdata import load

    ids, cats, parts, mats, start = [], [], [], [], 0
    for s in sets:
        _, _, c, X = load(s)
        n = min(rows, len(c)) if rows else len(c)
        ids.append(np.arange(start, start + n))
        cats += list(c[:n])
        parts += [s] * n
        mats.append(np.asarray(X[:n], dtype=np.float32))
        start += n
    X = np.vstack(mats)
    con.register("__rows", pa.table({
        "id": pa.array(np.concatenate(ids)), "dataset": pa.array(parts, pa.string()),
        "category": pa.array(cats, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))
    con.execute("CREATE OR REPLACE TABLE docs AS SELECT id, dataset, category, "
                f"CAST(embedding AS FLOAT[{X.shape[1]}]) AS embedding FROM __rows")
    con.unregister("__rows")
    return {s: np.asarray(i) for s, i in zip(sets, ids)}


def _run(con, name: str, source: str, algo: str, extra: str = "") -> float:
    con.execute(f"SELECT cluster_create('{name}', source := '{source}', "
                f"embedding := 'embedding', id := 'id', algorithm := '{algo}'{extra}, "
                "\"replace\" := true)").fetchall()
    t = time.perf_counter()
    con.execute(f"SELECT cluster_execute('{name}')").fetchall()
    return time.perf_counter() - t


def _labels(con, name: str, where: str = "") -> dict[int, tuple[int, str]]:
    return {int(i): (int(c), cat) for i, c, cat in con.execute(
        f"SELECT m.id, m.cluster_id, d.category FROM cluster_members('{name}') m "
        f"JOIN docs d ON d.id = m.id {where}").fetchall()}


_CHILD = r"""
import json, sys, time
import duckcluster


def hwm():  # peak RSS of this process image, MB (ru_maxrss would include the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


path, mode, algo, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckcluster.connect(path)
con.execute(f"SET memory_limit = '{sys.argv[5]}'")  # DuckDB's own cache, bounded alike
con.execute("SELECT count(*) FROM docs").fetchall()
base = hwm()
src = "(SELECT * FROM docs WHERE part = ''p0'')" if mode == "one" else "docs"
extra = ", partition_by := 'part'" if mode == "partitioned" else ""
params = ", params := {'n_clusters': 8}" if algo == "kmeans" else ""
con.execute(f"SELECT cluster_create('m_{mode}', source := '{src}', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := '{algo}'{params}{extra}, \"replace\" := true)"
            ).fetchall()
t = time.perf_counter()
run = con.execute(f"SELECT cluster_execute('m_{mode}')").fetchall()[0][0]
secs = time.perf_counter() - t
peak = hwm()
maps = con.execute("SELECT kind, count(*) FROM duckcluster.partition_projections "
                   "WHERE run_id = ? GROUP BY ALL", [run]).fetchall()
print(json.dumps({"base_mb": base, "peak_mb": peak, "secs": secs,
                  "maps": maps}))
"""


def memory(rows_per: int, parts: int, algo: str, duckdb_memory: str = "512MB") -> list[Row]:
    import json
    import os
    import subprocess
    import sys

    from bench._common import make_clusters, scratch_dir

    path = os.path.join(scratch_dir(), "partition_memory.duckdb")
    for f in (path, path + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    con = connect(path)
    X, _ = make_clusters(rows_per * parts, d=384, k=8 * parts, seed=5)
    con.register("__rows", pa.table({
        "doc_id": pa.array(np.arange(len(X), dtype=np.int64)),
        "part": pa.array([f"p{i % parts}" for i in range(len(X))], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))
    con.execute("CREATE TABLE docs AS SELECT doc_id, part, CAST(embedding AS FLOAT[384]) "
                "AS embedding FROM __rows")
    con.unregister("__rows")
    con.close()
    vec_mb = X.nbytes / 2 ** 20
    del X
    got = {}
    for mode in ("partitioned", "all", "one"):
        out = subprocess.run([sys.executable, "-c", _CHILD, path, mode, algo, str(parts),
                              duckdb_memory],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    grow = {m: g["peak_mb"] - g["base_mb"] for m, g in got.items()}
    maps = ", ".join(f"{n} {k}" for k, n in got["partitioned"]["maps"]) or "none"
    return [Row(
        workload=f"{algo} partitioned run, peak memory ({parts} partitions)",
        rows=rows_per * parts, duckcluster=got["partitioned"]["secs"],
        peers={"one unpartitioned run of all rows": got["all"]["secs"],
               "one partition alone": got["one"]["secs"]},
        ratio=(f"peak RSS +{grow['partitioned']:.0f} MB vs +{grow['all']:.0f} MB for all rows "
               f"in one run ({grow['partitioned'] / grow['all']:.2f}x) and +{grow['one']:.0f} MB "
               f"for one partition alone ({grow['partitioned'] / grow['one']:.2f}x)"),
        quality=f"maps stored: {maps} (one per partition)",
        target="peak memory about the largest partition's",
        verdict=verdict(grow["partitioned"] <= 1.5 * grow["one"]),
        notes=f"vectors: {vec_mb:.0f} MB in all, {vec_mb / parts:.0f} MB per partition; "
              f"DuckDB memory_limit {duckdb_memory} in each process (its buffer cache of the "
              "scanned table counts in RSS too); "
              + load_now())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="docstrings8,packages10")
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument("--rows", type=int, default=2000, help="rows per set (0: all)")
    ap.add_argument("--memory", type=int, default=0,
                    help="rows per partition: the peak-memory comparison instead")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--duckdb-memory", default="512MB",
                    help="DuckDB memory_limit of the --memory processes")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.memory:
        emit(memory(a.memory, a.partitions, a.algorithm, a.duckdb_memory), a.json)
        return
    sets = a.sets.split(",")
    con = connect()
    ids = _table(con, sets, a.rows)
    # warm-up (imports, numba compilation): the first run of a process pays them
    _run(con, "warm", f"(SELECT * FROM docs WHERE dataset = ''{sets[0]}'')", a.algorithm)
    t_part = _run(con, "parts", "docs", a.algorithm, ", partition_by := 'dataset'")
    t_sep = {s: _run(con, f"only_{s}", f"(SELECT * FROM docs WHERE dataset = ''{s}'')",
                     a.algorithm) for s in sets}
    t_all = _run(con, "together", "docs", a.algorithm)
    part, together = _labels(con, "parts"), _labels(con, "together")
    mixed = con.execute("SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0.0 END) FROM (SELECT "
                        "m.cluster_id, count(DISTINCT d.dataset) AS n FROM "
                        "cluster_members('together') m JOIN docs d ON d.id = m.id WHERE "
                        "m.cluster_id >= 0 GROUP BY ALL)").fetchall()[0][0]
    rows = []
    for s in sets:
        sep = _labels(con, f"only_{s}")
        keys = [int(i) for i in ids[s]]
        cats = [part[i][1] for i in keys]
        a_part = ari(np.array(cats), np.array([part[i][0] for i in keys]))
        a_all = ari(np.array(cats), np.array([together[i][0] for i in keys]))
        same = ari(np.array([part[i][0] for i in keys]), np.array([sep[i][0] for i in keys]))
        rows.append(Row(
            workload=f"{a.algorithm} per partition, set {s}", rows=len(keys),
            duckcluster=None, peers={},
            ratio=f"ARI {a_part:.3f} partitioned vs {a_all:.3f} one clustering of all sets",
            quality=f"partitioned = separate definition: ARI {same:.3f}",
            target="partitioned = separate (ARI 1.0)", verdict=verdict(same > 0.999)))
    rows.append(Row(
        workload=f"{a.algorithm} partitioned run time", rows=sum(len(v) for v in ids.values()),
        duckcluster=t_part, peers={"separate definitions (sum)": sum(t_sep.values()),
                                   "one unpartitioned run": t_all},
        ratio=f"{t_part / sum(t_sep.values()):.2f}x the separate runs' total",
        quality=f"{mixed:.0%} of the unpartitioned run's clusters mix sets",
        notes=load_now()))
    emit(rows, a.json)


if __name__ == "__main__":
    main()
