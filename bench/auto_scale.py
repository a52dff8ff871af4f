"""The default answer at scale: ``algorithm := 'auto'`` on 5k, 100k and 1M rows x 384.

    python -m bench.auto_scale [--rows 5000,100000,1000000] [--base docstrings8]
                               [--peers kmeans] [--fit-rows 20000] [--sql [--oneshot]]

Rows come from a real set of ``bench/realdata.py`` (all-MiniLM-L6-v2, 384-d, known
categories), upsampled SMOTE-style (:func:`upsampled`): each row a seeded point between
a real row and one of its 10 nearest rows of the same category, so the categories and
their overlap are the real set's. Each size runs in its own
process (a clean peak RSS): it builds the rows, warms auto up on 500 digits rows (numba
kernels compiled: a warm process), then times ``auto`` with no params (and the peers
asked for, on the same rows) and prints ARI against the categories, #clusters, seconds,
what auto sampled (``choices.sample``), the process's peak RSS (``ru_maxrss``: the rows
themselves are 1.5 GB at 1M) and the load average. Peers: ``kmeans`` (scikit-learn
KMeans told the true k, n_init 1, on the raw rows), ``umap_hdbscan`` (umap-learn +
HDBSCAN as in bench/auto.py; slow above 100k).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np


def upsampled(base: str, n: int, seed: int = 0):
    """``n`` rows like the real set ``base``: SMOTE-style, each a seeded point on the
    segment between a real row and one of its 10 nearest rows of the same category,
    renormalised (rows repeated with noise instead would make islands of near-copies
    that no real collection has)."""
    from bench._common import category_neighbours, smote_rows
    from bench.auto import load

    X0, y0 = load(base)
    X0 = X0 / np.linalg.norm(X0, axis=1, keepdims=True)
    near = category_neighbours(X0, y0)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(X0), n)
    X = smote_rows(X0, near, pick, rng)
    return X, y0[pick]


def one(n: int, a) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from bench.auto import METHODS, load, run_auto
    from duckcluster.core.algorithms import get_algorithm, validate_algorithm_params

    warnings.filterwarnings("ignore")
    Xw, yw = load("digits")
    run_auto(Xw[:500], yw[:500], 0)
    X, y = upsampled(a.base, n)
    out = {"rows": n, "load_before": os.getloadavg()[0]}
    params = {} if a.fit_rows is None else {"fit_rows": a.fit_rows or None}
    t = time.perf_counter()
    r = get_algorithm("auto").fit_explained(X, validate_algorithm_params("auto", params), 0)
    out["auto"] = {"seconds": time.perf_counter() - t, "ari": adjusted_rand_score(y, r.labels),
                   "clusters": int(len(np.unique(r.labels[r.labels >= 0]))),
                   "sample": r.choices.get("sample")}
    out["rss_gb_auto"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    for m in [p for p in a.peers.split(",") if p]:
        t = time.perf_counter()
        labels = np.asarray(METHODS[m](X, y, 0) if m != "kmeans" else _kmeans(X, y))
        out[m] = {"seconds": time.perf_counter() - t, "ari": adjusted_rand_score(y, labels),
                  "clusters": int(len(np.unique(labels[labels >= 0])))}
    out["load_after"] = os.getloadavg()[0]
    return out


def build_db(path: str, base: str, n: int) -> None:
    """A DuckDB file with table docs(id INTEGER, e FLOAT[384], category INTEGER)."""
    import duckdb
    import pyarrow as pa

    X, y = upsampled(base, n)
    con = duckdb.connect(path)
    t = pa.table({"id": np.arange(n, dtype=np.int32),
                  "e": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1]),
                  "category": y.astype(np.int32)})
    con.register("t", t)
    con.execute("CREATE OR REPLACE TABLE docs AS SELECT * FROM t")
    con.close()


def run_sql(path: str, with_oneshot: bool = False) -> dict:
    """cluster_create (no algorithm: auto) + cluster_execute on the file's docs, in
    this process: seconds, ARI, #clusters, the process's peak RSS; with ``with_oneshot``
    also cluster_execute and cluster_embeddings on the same rows taking turns, warm."""
    import duckdb
    from sklearn.metrics import adjusted_rand_score

    import duckcluster

    con = duckdb.connect(path)
    duckcluster.install(con)
    con.execute("SELECT cluster_create('t', source := 'docs', embedding := 'e', id := 'id', "
                "\"replace\" := true)")
    load_before = os.getloadavg()[0]
    runs = []
    for _ in range(2):  # the first in a fresh process, then warm
        t = time.perf_counter()
        c0 = time.process_time()
        q0 = _queued()
        con.execute("SELECT cluster_execute('t')").fetchall()
        runs.append((time.perf_counter() - t, time.process_time() - c0, _queued() - q0))
        if len(runs) == 1:  # the peak of one run in a fresh process (the second adds its own)
            rss_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    (first, _, _), (secs, cpu, queued) = runs
    timings = json.loads(con.execute("SELECT timings FROM cluster_runs('t') ORDER BY "
                                     "started_at DESC LIMIT 1").fetchall()[0][0])
    y, lab = con.execute("SELECT d.category, m.cluster_id FROM cluster_members('t') m "
                         "JOIN docs d ON d.id = m.id").fetchnumpy().values()
    choices = json.loads(con.execute("SELECT choices FROM cluster_runs('t')").fetchall()[-1][0])
    oneshot = None
    if with_oneshot:  # the same rows through cluster_embeddings, taking turns with the run
        pairs = []
        for _ in range(2):
            for q in ("SELECT cluster_execute('t')",
                      "SELECT count(DISTINCT cluster_id) FROM cluster_embeddings('docs', 'e', "
                      "id := 'id')"):
                t, c0 = time.perf_counter(), time.process_time()
                con.execute(q).fetchall()
                pairs.append((time.perf_counter() - t, time.process_time() - c0))
        oneshot = {"definition": pairs[2], "oneshot": pairs[3]}  # the second turn: both warm
    return {"first": first, "seconds": secs, "cpu": cpu, "queued": queued, "timings": timings,
            "oneshot": oneshot,
            "ari": adjusted_rand_score(y, lab),
            "clusters": int(len(np.unique(lab[lab >= 0]))), "sample": choices.get("sample"),
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "rss_first_gb": rss_first,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def _queued() -> float:
    """Seconds this process's threads have waited, runnable, for a core
    (``/proc/self/task/*/schedstat``, Linux; NaN elsewhere): where wall time exceeds CPU
    time on a busy machine."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total / 1e9


def _kmeans(X, y):
    from sklearn.cluster import KMeans

    return KMeans(len(np.unique(y)), n_init=1, random_state=0).fit_predict(X)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="5000,100000,1000000")
    ap.add_argument("--base", default="docstrings8")
    ap.add_argument("--peers", default="kmeans")
    ap.add_argument("--fit-rows", type=int, default=None,
                    help="auto's fit_rows (0 = every row); default: auto's own")
    ap.add_argument("--sql", action="store_true",
                    help="through SQL instead: cluster_create + cluster_execute on a DuckDB "
                         "file (built in another process), peak RSS of the run's process")
    ap.add_argument("--oneshot", action="store_true",
                    help="with --sql: also the one-shot cluster_embeddings on the same rows, "
                         "taking turns with cluster_execute (wall and CPU of the warm pair)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-sql", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one is not None:
        print(json.dumps(one(a.one, a)))
        return 0
    if a.build is not None:
        build_db(a.build, a.base, int(a.rows))
        return 0
    if a.run_sql is not None:
        print(json.dumps(run_sql(a.run_sql, a.oneshot)))
        return 0
    if a.sql:
        return sql_main(a)
    print(f"{'rows':>9s} {'method':13s} {'ARI':>6s} {'clusters':>8s} {'seconds':>8s} "
          f"{'x auto':>7s}  (rows like {a.base}'s; one process per size)")
    for n in (int(v) for v in a.rows.split(",")):
        cmd = [sys.executable, "-m", "bench.auto_scale", "--one", str(n), "--base", a.base,
               "--peers", a.peers]
        if a.fit_rows is not None:
            cmd += ["--fit-rows", str(a.fit_rows)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:])
            return 1
        r = json.loads(res.stdout.strip().splitlines()[-1])
        base = r["auto"]["seconds"]
        for m in ["auto"] + [p for p in a.peers.split(",") if p]:
            v = r[m]
            print(f"{n:9,d} {m:13s} {v['ari']:6.3f} {v['clusters']:8d} {v['seconds']:8.1f} "
                  f"{v['seconds'] / base:7.2f}", flush=True)
        s = r["auto"]["sample"]
        print(f"{'':9s} auto sampled: {s['rows']:,} of {s['of']:,} rows" if s else
              f"{'':9s} auto fitted every row", end="")
        print(f"; peak RSS after auto {r['rss_gb_auto']:.2f} GB; load average "
              f"{r['load_before']:.1f} -> {r['load_after']:.1f} ({os.cpu_count()} cores)",
              flush=True)
    return 0


def sql_main(a) -> int:
    import tempfile

    print(f"{'rows':>9s} {'ARI':>6s} {'clusters':>8s} {'first s':>8s} {'warm s':>7s} "
          f"{'CPU s':>6s} {'RSS 1st':>8s} {'RSS 2':>6s}  (cluster_execute, no algorithm: auto; "
          "the first run in a fresh process, then warm: wall and CPU seconds, peak RSS "
          "after the first and after both; then the warm run's wait for a core and its "
          "stages)")
    for n in (int(v) for v in a.rows.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scale.duckdb")
            subprocess.run([sys.executable, "-m", "bench.auto_scale", "--build", path,
                            "--rows", str(n), "--base", a.base], check=True)
            res = subprocess.run([sys.executable, "-m", "bench.auto_scale", "--run-sql", path]
                                 + (["--oneshot"] if a.oneshot else []),
                                 capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:])
            return 1
        r = json.loads(res.stdout.strip().splitlines()[-1])
        s = r["sample"]
        print(f"{n:9,d} {r['ari']:6.3f} {r['clusters']:8d} {r['first']:8.1f} "
              f"{r['seconds']:7.1f} {r['cpu']:6.1f} "
              f"{r['rss_first_gb']:7.2f}G {r['rss_gb']:5.2f}G  " + (f"sampled {s['rows']:,}; " if s else "") +
              f"load {r['load_before']:.1f} -> {r['load_after']:.1f}", flush=True)
        print(f"{'':9s} warm run: {r['queued']:.1f} s of its threads' time waiting, runnable, "
              "for a core; stages " + ", ".join(f"{k} {v:.2f} s" for k, v in r["timings"].items()),
              flush=True)
        if r["oneshot"]:
            (dw, dc), (ow, oc) = r["oneshot"]["definition"], r["oneshot"]["oneshot"]
            print(f"{'':9s} warm, taking turns: cluster_execute {dw:.1f} s wall / {dc:.1f} s CPU, "
                  f"cluster_embeddings (one-shot) {ow:.1f} s / {oc:.1f} s: "
                  f"{ow / dw:.2f}x wall, {oc / dc:.2f}x CPU", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
