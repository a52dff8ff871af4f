"""Time to first result: a fresh process clustering 2k x 384 rows with the default
density pipeline (whitening -> UMAP -> HDBSCAN), as every ``duckcluster sql`` call
and every dbt run is a fresh process.

    python -m bench.first_result [--rows 2000] [--repeat 3]

duckcluster: ``python -c "import duckcluster; duckcluster.connect(db).sql('SELECT
cluster_execute(...)')"`` on a stored definition, wall time of the whole process.
Peer: the same pipeline written by hand in a fresh process (numpy whitening,
``umap.UMAP(metric='cosine', random_state=42)``, ``hdbscan.HDBSCAN``) on the
same rows read from the same file. Each is run once untimed first, so numba's
on-disk caches are warm for both (a first run after installing pays the
compilation once more). ARI is against the generating clusters.
"""

from __future__ import annotations

import json
import os
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

DUCKCLUSTER = """
import sys, duckcluster
con = duckcluster.connect(sys.argv[1])
con.sql("SELECT cluster_execute('first')").fetchall()
con.close()
"""

ONESHOT = """
import sys, duckcluster
con = duckcluster.connect(sys.argv[1], read_only=True)
con.sql("SELECT count(DISTINCT cluster_id) FROM cluster_embeddings('docs', 'embedding', "
        "id := 'doc_id')").fetchall()
con.close()
"""

FLOOR = """
import sys, duckdb, numpy
con = duckdb.connect(sys.argv[1], read_only=True)
con.sql("SELECT embedding FROM docs").to_arrow_table()
con.close()
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


def fresh(code: str, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
    return time.perf_counter() - t


def run(rows: int = 2000, repeat: int = 3) -> list[Row]:
    X, y = make_clusters(rows)
    tmp = scratch_dir()
    db = os.path.join(tmp, "first.duckdb")
    con = connect(db)
    load_table(con, "docs", X)
    con.sql(f"SELECT cluster_create('first', source := 'docs', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'hdbscan', params := {PARAMS}, "
            f"preprocessing := {PREPROCESSING})").fetchall()
    con.close()
    out = os.path.join(tmp, "labels.npy")
    fresh(DUCKCLUSTER, db)  # warm numba's on-disk caches
    fresh(HAND_WRITTEN, db, out)
    t_dc, _ = median_time(lambda: fresh(DUCKCLUSTER, db), repeat)
    t_hand, _ = median_time(lambda: fresh(HAND_WRITTEN, db, out), repeat)
    import duckcluster

    con = duckcluster.connect(db)
    lab = con.sql("SELECT cluster_id FROM cluster_members('first') ORDER BY CAST(id AS BIGINT)"
                  ).to_arrow_table().column(0).to_numpy()
    timings = json.loads(con.sql("SELECT timings FROM cluster_runs('first') ORDER BY "
                                 "started_at DESC LIMIT 1").fetchall()[0][0])
    con.close()
    hand = np.load(out)
    t_import = median_time(lambda: fresh("import duckcluster, duckcluster.core.preprocess, "
                                         "duckcluster.core.preprocess.layout, hdbscan"), repeat)[0]
    fresh(ONESHOT, db)  # warm caches
    t_one, _ = median_time(lambda: fresh(ONESHOT, db), repeat)
    t_floor, _ = median_time(lambda: fresh(FLOOR, db), repeat)
    t_imp, _ = median_time(lambda: fresh("import duckcluster"), repeat)
    return [Row(
        workload="time to first result: fresh process, cluster_embeddings with its defaults",
        rows=rows, duckcluster=t_one,
        peers={"fresh process: import duckdb + numpy, connect, fetch the rows": t_floor,
               "fresh process: import duckcluster": t_imp},
        ratio=f"{t_one / t_floor:.1f}x the bare fetch",
        target="<= 2 s", verdict=verdict(t_one <= 2.0),
        notes=(f"import, connect (read-only), first cluster_embeddings('docs', 'embedding') "
               f"on {rows:,} x 384 rows with the default algorithm and preprocessing, "
               f"whole process wall time; {load_now()}")),
        Row(
        workload="time to first result: fresh process, whitening -> UMAP -> HDBSCAN",
        rows=rows, duckcluster=t_dc,
        peers={"hand-written umap-learn + hdbscan, fresh process": t_hand},
        ratio=f"{t_hand / t_dc:.1f}x faster than by hand",
        quality=f"ARI {ari(y, lab):.3f} (by hand {ari(y, hand):.3f}); noise "
                f"{np.mean(lab == -1):.1%} (by hand {np.mean(hand == -1):.1%})",
        target="< 5 s",
        verdict=verdict(t_dc < 5.0),
        notes=("run stages in the last duckcluster process: " +
               ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()) +
               f"; importing duckcluster, its layout kernels (numba) and hdbscan alone in a fresh process: "
               f"{t_import:.2f} s"),
    )]


def main() -> None:
    cli(run, rows=2000, repeat=3)


if __name__ == "__main__":
    main()
