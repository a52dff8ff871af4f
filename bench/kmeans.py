"""k-means at 100k x 384 (30 clusters): duckcluster from a DuckDB table vs the peers.

    python -m bench.kmeans [--rows 100000] [--repeat 3]

duckcluster, timed three ways: ``cluster_execute`` of a stored definition (the
whole run: read, fit, centroids, similarities, plotting coordinates, quality
metrics, members and Parquet artifacts written), the one-shot
``cluster_embeddings`` table function, and the k-means core on the array in
memory. Peers on the same array in memory: scikit-learn ``KMeans(n_init=1)`` on
every row, ``MiniBatchKMeans``, and faiss ``Kmeans`` (trains on 256 rows per
centroid) with a search for every row's label. Also reported: fetching the
table into numpy, which a hand-written script pays before any peer can start.
ARI is against the generating clusters.
"""

from __future__ import annotations

import json

import numpy as np

from bench._common import (
    cli,
    K,
    Row,
    ari,
    connect,
    have,
    load_table,
    make_clusters,
    median_time,
    verdict,
)


def peers(X: np.ndarray, y: np.ndarray, k: int, repeat: int) -> dict[str, tuple[float, float]]:
    """name -> (median seconds, ARI)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    out = {}
    t, lab = median_time(lambda: KMeans(k, n_init=1, random_state=0).fit_predict(X), repeat)
    out["scikit-learn KMeans n_init=1"] = (t, ari(y, lab))
    t, lab = median_time(lambda: MiniBatchKMeans(k, n_init=1, random_state=0,
                                                 batch_size=4096).fit_predict(X), repeat)
    out["MiniBatchKMeans"] = (t, ari(y, lab))
    if have("faiss"):
        import faiss

        def run_faiss():
            km = faiss.Kmeans(X.shape[1], k, niter=20, seed=1234)
            km.train(X)
            return km.index.search(X, 1)[1][:, 0]

        t, lab = median_time(run_faiss, repeat)
        out["faiss Kmeans"] = (t, ari(y, lab))
    return out


def run(rows: int = 100_000, repeat: int = 3, k: int = K) -> list[Row]:
    from duckcluster.core.algorithms import get_algorithm, validate_algorithm_params

    X, y = make_clusters(rows, k=k)
    con = connect()
    load_table(con, "docs", X)
    con.sql(f"SELECT cluster_create('km', source := 'docs', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': {k}}})").fetchall()
    t_exec, _ = median_time(lambda: con.sql("SELECT cluster_execute('km')").fetchall(), repeat)
    lab_exec = members_in_order(con)
    timings = json.loads(con.sql("SELECT timings FROM cluster_runs('km') ORDER BY started_at "
                                 "DESC LIMIT 1").fetchall()[0][0])
    oneshot_q = (f"SELECT cluster_id FROM cluster_embeddings('docs', 'embedding', "
                 f"algorithm := 'kmeans', params := {{'n_clusters': {k}}}, id := 'doc_id') "
                 f"ORDER BY doc_id")
    t_oneshot, tbl = median_time(lambda: con.sql(oneshot_q).to_arrow_table(), repeat)
    lab_oneshot = tbl.column(0).to_numpy()
    t_fetch, _ = median_time(lambda: con.sql("SELECT embedding FROM docs ORDER BY doc_id")
                             .to_arrow_table().column(0).combine_chunks().flatten()
                             .to_numpy().reshape(rows, -1), repeat)
    con.close()
    alg = get_algorithm("kmeans")
    params = validate_algorithm_params("kmeans", {"n_clusters": k})
    t_core, lab_core = median_time(lambda: alg.fit_predict(X, params, 42), repeat)
    full = validate_algorithm_params("kmeans", {"n_clusters": k, "max_points_per_centroid": 0})
    t_core_full, lab_core_full = median_time(lambda: alg.fit_predict(X, full, 42), repeat)

    pr = peers(X, y, k, repeat)
    fastest = min(pr, key=lambda n: pr[n][0])
    sk_ari = pr["scikit-learn KMeans n_init=1"][1]
    rows_out = []
    for label, t, lab, note in (
        ("k-means, cluster_execute (whole run)", t_exec, lab_exec,
         "stages: " + ", ".join(f"{s} {v:.2f} s" for s, v in timings.items())),
        ("k-means, cluster_embeddings one-shot", t_oneshot, lab_oneshot, ""),
        ("k-means core in memory (256 rows/centroid sample)", t_core, lab_core,
         (f"the same core trained on every row: {t_core_full:.3f} s, "
          f"ARI {ari(y, lab_core_full):.3f}")),
    ):
        a = ari(y, lab)
        rows_out.append(Row(
            workload=label, rows=rows, duckcluster=t,
            peers={n: v[0] for n, v in pr.items()} | {"DuckDB table -> numpy": t_fetch},
            ratio=f"{t / pr[fastest][0]:.2f}x {fastest}",
            quality=f"ARI {a:.3f} (" + ", ".join(f"{n} {v[1]:.3f}" for n, v in pr.items()) + ")",
            target="<= 1.2x fastest peer, ARI >= scikit-learn's",
            verdict=verdict(t <= 1.2 * pr[fastest][0] and a >= sk_ari - 1e-9),
            notes=note + ("" if have("faiss") else
                          " faiss-cpu is not installed, so its peer was skipped "
                          "(pip install 'duckcluster[bench]').")))
    return rows_out


def members_in_order(con) -> np.ndarray:
    return con.sql("SELECT cluster_id FROM cluster_members('km') ORDER BY CAST(id AS BIGINT)"
                   ).to_arrow_table().column(0).to_numpy()


def main() -> None:
    cli(run, rows=100_000, repeat=3)


if __name__ == "__main__":
    main()
