"""Time to first result: a fresh process clustering 2k x 384 rows with the defaults,
as every ``duckcluster sql`` call and every dbt run is a fresh process.

    python -m bench.first_result [--rows 2000] [--repeat 3] [--skip-hand]

Rows (medians of ``--repeat`` fresh processes, after one untimed run each, so numba's
on-disk caches and the ``.pyc`` files are there, as after installing a wheel: the
children write bytecode under a scratch ``PYTHONPYCACHEPREFIX`` even where
``PYTHONDONTWRITEBYTECODE`` is set):

1. the library: ``import duckcluster; connect(db, read_only=True)``, the first
   ``cluster_embeddings('docs', 'embedding', id := 'doc_id')`` (auto), close; wall time
   of the whole process and its CPU (user + sys), split into interpreter start, import,
   connect, first result, close and the interpreter's exit (after the last atexit hook);
2. the console script: ``duckcluster sql DB --read-only -c "SELECT ... FROM
   cluster_embeddings(...)"`` (it freezes its objects at exit, so its teardown is short);
3. whitening -> UMAP -> HDBSCAN through ``cluster_execute`` against the same pipeline
   written by hand (umap-learn + hdbscan) in a fresh process (``--skip-hand`` leaves it out).

Peers in the same run, the floor of a fresh process: bare ``python -c pass``; import duckdb
+ numpy, connect, fetch the 2k rows and turn them into a numpy matrix (pyarrow's
``to_numpy`` imports pandas when it is installed, as duckcluster's conversions do); numba's
own start-up (import numba, then the two layout kernels from its cache). ARI of row 3 is
against the generating clusters.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from bench._common import (
    cli,
    Row,
    load_now,
    ari,
    connect,
    load_table,
    make_clusters,
    median_time,
    scratch_dir,
    verdict,
)

PREPROCESSING = "[{'method': 'whitening'}, {'method': 'umap', 'n_components': 10}]"
PARAMS = "{'min_cluster_size': 20}"
QUERY = ("SELECT count(DISTINCT cluster_id) FROM cluster_embeddings('docs', 'embedding', "
         "id := 'doc_id')")

DUCKCLUSTER = """
import sys, duckcluster
con = duckcluster.connect(sys.argv[1])
con.sql("SELECT cluster_execute('first')").fetchall()
con.close()
"""

# the library's first result, stage by stage: wall and CPU at each mark, time.time() at the
# start and at the end (the parent adds interpreter start-up and exit around them)
ONESHOT = """
import time
T0, W0, C0 = time.time(), time.perf_counter(), time.process_time()
import sys, json
marks = []
def mark(stage):
    marks.append((stage, time.perf_counter() - W0, time.process_time() - C0))
import duckcluster
mark("import")
con = duckcluster.connect(sys.argv[1], read_only=True)
mark("connect")
con.sql(%r).fetchall()
mark("first result")
con.close()
mark("close")
print(json.dumps({"start": T0, "marks": marks, "end": time.time()}), flush=True)
""" % QUERY

FLOOR = """
import sys, duckdb, numpy
con = duckdb.connect(sys.argv[1], read_only=True)
t = con.sql("SELECT embedding FROM docs").to_arrow_table()
X = t.column(0).combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
con.close()
"""

NUMBA = """
import numpy as np, scipy.sparse
from duckcluster.core.preprocess import layout
layout.top_k_rows(np.random.rand(50, 40).astype(np.float32), 5)
g = scipy.sparse.random(50, 50, density=0.2, format="csr", dtype=np.float32, random_state=0)
layout.optimize_layout(np.random.rand(50, 5).astype(np.float32), g + g.T, 2, 1.9, 0.8, 0,
                       parallel=False)
"""

HAND_WRITTEN = """
import sys, duckdb, numpy as np, umap, hdbscan
con = duckdb.connect(sys.argv[1], read_only=True)
t = con.sql("SELECT embedding FROM docs ORDER BY doc_id").to_arrow_table()
X = np.asarray(t.column(0).combine_chunks().flatten().to_numpy()).reshape(t.num_rows, -1)
X = X / np.linalg.norm(X, axis=1, keepdims=True)
Xc = X - X.mean(0)
s, U = np.linalg.eigh(np.cov(Xc, rowvar=False))
Xw = Xc @ (U * (1 / np.sqrt(np.clip(s, 0, None) + 1e-5))) @ U.T
E = umap.UMAP(n_components=10, n_neighbors=30, min_dist=0.0, metric="cosine",
              random_state=42).fit_transform(Xw)
labels = hdbscan.HDBSCAN(min_cluster_size=20).fit_predict(E)
np.save(sys.argv[2], labels)
con.close()
"""

_ENV: dict[str, str] = {}


def _env() -> dict[str, str]:
    """Children write and read bytecode (a scratch PYTHONPYCACHEPREFIX), as an installed
    package has its .pyc files: without them every fresh process compiles the sources."""
    if not _ENV:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(scratch_dir(), "pycache")
        _ENV.update(env)
    return _ENV


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fresh(code: str, *args: str) -> float:
    return fresh_run([sys.executable, "-c", code, *args])[0]


def fresh_run(cmd: list[str]) -> tuple[float, float, str, float]:
    """(wall seconds, CPU seconds of the child, its stdout, time.time() at its end)."""
    c = _child_cpu()
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env()).stdout
    wall = time.perf_counter() - t
    return wall, _child_cpu() - c, out, time.time()


def _staged(db: str, repeat: int) -> dict[str, float]:
    """Medians over ``repeat`` fresh processes of the library's first result: whole wall,
    CPU, and each stage's wall (interpreter start, import, connect, first result, close,
    exit)."""
    runs = []
    for _ in range(max(1, repeat)):
        spawn = time.time()
        wall, cpu, out, end = fresh_run([sys.executable, "-c", ONESHOT, db])
        rec = json.loads(out.strip().splitlines()[-1])
        row = {"wall": wall, "cpu": cpu, "interpreter start": rec["start"] - spawn}
        prev = 0.0
        for stage, w, _c in rec["marks"]:
            row[stage] = w - prev
            prev = w
        row["exit"] = end - rec["end"]
        row["in-process cpu"] = rec["marks"][-1][2]
        runs.append(row)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run(rows: int = 2000, repeat: int = 3, hand: bool = True) -> list[Row]:
    X, y = make_clusters(rows)
    tmp = scratch_dir()
    db = os.path.join(tmp, "first.duckdb")
    con = connect(db)
    load_table(con, "docs", X)
    con.sql(f"SELECT cluster_create('first', source := 'docs', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'hdbscan', params := {PARAMS}, "
            f"preprocessing := {PREPROCESSING})").fetchall()
    con.close()
    load_before = load_now()
    # untimed first runs: numba's on-disk caches and the .pyc files
    fresh(ONESHOT, db)
    fresh(NUMBA)
    fresh(FLOOR, db)
    st = _staged(db, repeat)
    script = [sys.executable, "-c", "from duckcluster.cli import main; main()", "sql", db,
              "--read-only", "--csv", "-c", QUERY]
    fresh_run(script)
    cli_runs = [fresh_run(script)[:2] for _ in range(max(1, repeat))]
    t_cli, c_cli = (statistics.median(v) for v in zip(*cli_runs))
    t_bare, _ = median_time(lambda: fresh("pass"), repeat)
    t_floor, _ = median_time(lambda: fresh(FLOOR, db), repeat)
    t_numba, _ = median_time(lambda: fresh(NUMBA), repeat)
    t_imp, _ = median_time(lambda: fresh("import duckcluster"), repeat)
    stages = ", ".join(f"{k} {st[k]:.2f} s" for k in ("interpreter start", "import", "connect",
                                                      "first result", "close", "exit"))
    peers = {"bare python -c pass": t_bare,
             "import duckdb + numpy, connect, fetch the rows into numpy": t_floor,
             "numba start-up: import + the 2 layout kernels from its cache": t_numba,
             "import duckcluster": t_imp}
    out = [Row(
        workload="time to first result: fresh process, import duckcluster + cluster_embeddings "
                 "with its defaults",
        rows=rows, duckcluster=st["wall"], peers=peers,
        ratio=f"{st['wall'] / t_floor:.1f}x the bare fetch",
        target="<= 2 s", verdict=verdict(st["wall"] <= 2.0),
        notes=(f"import, connect (read-only), first cluster_embeddings('docs', 'embedding') on "
               f"{rows:,} x 384 rows (auto), whole process: {st['wall']:.2f} s wall, "
               f"{st['cpu']:.2f} s CPU (user + sys; {st['in-process cpu']:.2f} s before the "
               f"exit); stages (wall, medians): {stages}; {load_before} before, {load_now()} "
               "after")),
        Row(
        workload="time to first result: duckcluster sql --read-only -c (console script)",
        rows=rows, duckcluster=t_cli, peers={"bare python -c pass": t_bare,
                                             "import duckdb + numpy, connect, fetch the rows "
                                             "into numpy": t_floor},
        ratio=f"{t_cli / t_floor:.1f}x the bare fetch",
        target="<= 2 s", verdict=verdict(t_cli <= 2.0),
        notes=(f"the same query through the console script: {t_cli:.2f} s wall, {c_cli:.2f} s "
               f"CPU (user + sys); {load_now()}"))]
    if not hand:
        return out
    out_npy = os.path.join(tmp, "labels.npy")
    fresh(DUCKCLUSTER, db)  # warm numba's on-disk caches
    fresh(HAND_WRITTEN, db, out_npy)
    t_dc, _ = median_time(lambda: fresh(DUCKCLUSTER, db), repeat)
    t_hand, _ = median_time(lambda: fresh(HAND_WRITTEN, db, out_npy), repeat)
    import duckcluster

    con = duckcluster.connect(db)
    lab = con.sql("SELECT cluster_id FROM cluster_members('first') ORDER BY CAST(id AS BIGINT)"
                  ).to_arrow_table().column(0).to_numpy()
    timings = json.loads(con.sql("SELECT timings FROM cluster_runs('first') ORDER BY "
                                 "started_at DESC LIMIT 1").fetchall()[0][0])
    con.close()
    hand_labels = np.load(out_npy)
    t_import = median_time(lambda: fresh("import duckcluster, duckcluster.core.preprocess, "
                                         "duckcluster.core.preprocess.layout, hdbscan"), repeat)[0]
    out.append(Row(
        workload="time to first result: fresh process, whitening -> UMAP -> HDBSCAN",
        rows=rows, duckcluster=t_dc,
        peers={"hand-written umap-learn + hdbscan, fresh process": t_hand},
        ratio=f"{t_hand / t_dc:.1f}x faster than by hand",
        quality=f"ARI {ari(y, lab):.3f} (by hand {ari(y, hand_labels):.3f}); noise "
                f"{np.mean(lab == -1):.1%} (by hand {np.mean(hand_labels == -1):.1%})",
        target="< 5 s",
        verdict=verdict(t_dc < 5.0),
        notes=("run stages in the last duckcluster process: " +
               ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()) +
               f"; importing duckcluster, its layout kernels (numba) and hdbscan alone in a "
               f"fresh process: {t_import:.2f} s; {load_now()}"),
    ))
    return out


def main() -> None:
    hand = "--skip-hand" not in sys.argv
    if not hand:
        sys.argv.remove("--skip-hand")
    cli(lambda rows, repeat: run(rows, repeat, hand), rows=2000, repeat=3)


if __name__ == "__main__":
    main()
