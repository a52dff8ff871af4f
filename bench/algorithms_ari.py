"""ARI of every algorithm through the full SQL path (cluster_create + cluster_execute).

    python bench/algorithms_ari.py [--per 200] [--k 6] [--dim 64] [--spread 0.05] [--seed 0]

Data: seeded blobs on the unit sphere; prints one Markdown row per algorithm
with its ARI against the truth and its run time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
from sklearn.metrics import adjusted_rand_score

import duckcluster

PARAMS = {
    "kmeans": "{'n_clusters': %(k)d}", "dbscan": "{'eps': 0.05, 'min_samples': 5}",
    "hdbscan": "{'min_cluster_size': 10}", "agglomerative": "{'n_clusters': %(k)d}",
    "spectral": "{'n_clusters': %(k)d}", "gaussian_mixture": "{'n_components': %(k)d}",
    "mean_shift": "{}", "optics": "{'min_samples': 10}",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per", type=int, default=200)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    C = rng.normal(size=(a.k, a.dim))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = np.concatenate([c + a.spread * rng.normal(size=(a.per, a.dim)) for c in C]).astype(np.float32)
    y = np.repeat(np.arange(a.k), a.per)
    con = duckcluster.connect()
    con.register("__t", pa.table({"doc_id": np.arange(len(X)),
                                  "e": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), a.dim)}))
    con.sql(f"CREATE TABLE b AS SELECT doc_id, CAST(e AS FLOAT[{a.dim}]) AS embedding FROM __t").fetchall()
    print(f"# {a.k} blobs x {a.per} rows, d={a.dim}, spread {a.spread}, seed {a.seed}")
    print("| algorithm | params | ARI | clusters | noise | seconds |")
    print("|---|---|---|---|---|---|")
    for algo, p in PARAMS.items():
        params = p % {"k": a.k}
        con.sql(f"SELECT cluster_create('{algo}', source := 'b', embedding := 'embedding', "
                f"id := 'doc_id', algorithm := '{algo}', params := {params})").fetchall()
        t = time.perf_counter()
        con.sql(f"SELECT cluster_execute('{algo}')").fetchall()
        secs = time.perf_counter() - t
        rows = con.sql(f"SELECT CAST(id AS BIGINT), cluster_id FROM cluster_members('{algo}') "
                       "ORDER BY 1").fetchall()
        labels = np.array([r[1] for r in rows])
        print(f"| {algo} | `{params}` | {adjusted_rand_score(y, labels):.3f} | "
              f"{len(set(labels) - {-1})} | {np.mean(labels == -1):.1%} | {secs:.2f} |")
    con.close()


if __name__ == "__main__":
    main()
