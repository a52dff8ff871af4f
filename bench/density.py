"""Density pipeline (whitening -> UMAP -> HDBSCAN, the seeds' recommendation) at
100k x 384: duckcluster from a DuckDB table vs the same pipeline by hand.

    python -m bench.density [--rows 100000] [--repeat 1]

duckcluster: ``cluster_execute`` of a stored definition (whole run, from the
table to members, centroids, coordinates and quality). By hand, on the array in
memory: numpy soft-ZCA whitening, ``umap.UMAP(n_components=10, n_neighbors=30,
min_dist=0, metric='cosine', random_state=42)`` (NNDescent kNN graph above 4,096
rows), ``hdbscan.HDBSCAN(min_cluster_size=50)``; and the same with
``fast_hdbscan`` when it is installed. Each peer stage is timed once (kNN graph,
the rest of UMAP, clustering) to show where the time goes. Numba compilation is
paid before timing (a warm-up fit on 2,000 rows), which favours the peers.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench._common import (
    cli,
    Row,
    ari,
    connect,
    have,
    load_table,
    make_clusters,
    median_time,
    verdict,
)

MIN_CLUSTER_SIZE = 50
UMAP_KW = {"n_components": 10, "n_neighbors": 30, "min_dist": 0.0, "metric": "cosine",
           "random_state": 42}


def whiten(X: np.ndarray) -> np.ndarray:
    X64 = X.astype(np.float64)
    Xc = X64 - X64.mean(0)
    s, U = np.linalg.eigh((Xc.T @ Xc) / (len(X) - 1))
    return (Xc @ ((U * (1 / np.sqrt(np.clip(s, 0, None) + 1e-5))) @ U.T)).astype(np.float32)


def by_hand(X: np.ndarray, cluster) -> tuple[np.ndarray, dict[str, float]]:
    import umap
    from umap.umap_ import nearest_neighbors

    stages = {}
    t = time.perf_counter()
    Xw = whiten(X)
    stages["whitening"] = time.perf_counter() - t
    t = time.perf_counter()
    knn_i, knn_d, _ = nearest_neighbors(Xw, UMAP_KW["n_neighbors"], "cosine", {}, False, 42)
    stages["kNN graph (NNDescent)"] = time.perf_counter() - t
    t = time.perf_counter()
    E = umap.UMAP(**UMAP_KW, precomputed_knn=(knn_i, knn_d, None)).fit_transform(Xw)
    stages["UMAP graph + 200 epochs"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = cluster(E)
    stages["clustering"] = time.perf_counter() - t
    return labels, stages


def run(rows: int = 100_000, repeat: int = 1) -> list[Row]:
    import warnings

    import hdbscan

    warnings.filterwarnings("ignore")
    X, y = make_clusters(rows)
    con = connect()
    load_table(con, "docs", X)

    def run_definition(name: str, extra: str = ""):
        """(median seconds, labels in id order, stage timings) of one definition."""
        con.sql(f"SELECT cluster_create('{name}', source := 'docs', embedding := 'embedding', "
                f"id := 'doc_id', algorithm := 'hdbscan', "
                f"params := {{'min_cluster_size': {MIN_CLUSTER_SIZE}}}{extra}, "
                f"preprocessing := [{{'method': 'whitening'}}, "
                f"{{'method': 'umap', 'n_components': 10}}])").fetchall()
        t, _ = median_time(lambda: con.sql(f"SELECT cluster_execute('{name}')").fetchall(),
                           repeat)
        lab = con.sql(f"SELECT cluster_id FROM cluster_members('{name}') ORDER BY CAST(id AS "
                      "BIGINT)").to_arrow_table().column(0).to_numpy()
        stages = json.loads(con.sql(f"SELECT timings FROM cluster_runs('{name}') ORDER BY "
                                    "started_at DESC LIMIT 1").fetchall()[0][0])
        return t, lab, stages

    t_dc, lab_dc, timings = run_definition("dens")
    # fit-on-sample then assign: the same definition with sample_size
    sample = min(20_000, rows // 2)
    t_s, lab_s, _ = run_definition("dens_s", f", sample_size := {sample}")
    con.close()

    hdb = (lambda E: hdbscan.HDBSCAN(min_cluster_size=MIN_CLUSTER_SIZE).fit_predict(E))
    peers = {"umap-learn + hdbscan": hdb}
    if have("fast_hdbscan"):
        import fast_hdbscan

        peers["umap-learn + fast_hdbscan"] = (
            lambda E: fast_hdbscan.HDBSCAN(min_cluster_size=MIN_CLUSTER_SIZE).fit_predict(E))
    small = X[:2000]
    results = {}
    for name, cluster in peers.items():
        by_hand(small, cluster)  # numba compilation outside the timing
        t, (lab, stages) = median_time(lambda c=cluster: by_hand(X, c), repeat)
        results[name] = (t, ari(y, lab), float(np.mean(lab == -1)), stages)
    ref = results["umap-learn + hdbscan"]
    a_dc = ari(y, lab_dc)
    fastest = min(results, key=lambda n: results[n][0])
    a_s = ari(y, lab_s)
    sampled = Row(
        workload=f"density pipeline, sample_size := {sample:,} (fit on a sample, assign the rest)",
        rows=rows, duckcluster=t_s, peers={n: v[0] for n, v in results.items()},
        ratio=f"{ref[0] / t_s:.1f}x faster than umap-learn + hdbscan",
        quality=f"ARI {a_s:.3f}, noise {np.mean(lab_s == -1):.1%}",
        target=">= 2x faster than by hand, ARI within 0.02",
        verdict=verdict(t_s * 2 <= ref[0] and a_s >= ref[1] - 0.02))
    return [Row(
        workload="density pipeline: whitening -> UMAP(10) -> HDBSCAN(50), cluster_execute",
        rows=rows, duckcluster=t_dc, peers={n: v[0] for n, v in results.items()},
        ratio=f"{ref[0] / t_dc:.1f}x faster than umap-learn + hdbscan; "
              f"{results[fastest][0] / t_dc:.1f}x vs {fastest}",
        quality=f"ARI {a_dc:.3f}, noise {np.mean(lab_dc == -1):.1%} (" + ", ".join(
            f"{n}: ARI {v[1]:.3f}, noise {v[2]:.1%}" for n, v in results.items()) + ")",
        target=">= 2x faster than by hand, ARI within 0.02",
        verdict=verdict(t_dc * 2 <= ref[0] and a_dc >= ref[1] - 0.02),
        notes=("duckcluster stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
               + ". By hand, where the time goes: " + "; ".join(
                   f"{n}: " + ", ".join(f"{k} {s:.1f} s" for k, s in v[3].items())
                   for n, v in results.items())
               + ("" if have("fast_hdbscan") else
                  ". fast-hdbscan is not installed, so its peer was skipped "
                  "(pip install 'duckcluster[bench]')")),
    ), sampled]


def main() -> None:
    cli(run, rows=100_000, repeat=1)


if __name__ == "__main__":
    main()
