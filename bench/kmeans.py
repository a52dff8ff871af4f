"""k-means from a DuckDB table: the whole ``cluster_execute`` run against the pipeline a
user would write by hand, at 100k and 1M x 384 rows (30 clusters).

    python -m bench.kmeans [--rows 100000,1000000] [--repeat 3]

duckcluster: ``cluster_execute`` of a stored k-means definition, the whole run (read,
fit, centroids, similarities, plotting coordinates, quality metrics, members and
Parquet artifacts written; which quality metrics are sampled is printed from the
run's ``quality`` column). Peer, by hand in the same process on the same table:
DuckDB -> numpy fetch (Arrow, zero-copy), L2 normalization, faiss ``Kmeans``
(spherical, 20 iterations, its default 256 training rows per centroid), a search for
every row's label, and the members written back as a DuckDB table and a Parquet
file. The two take turns ``--repeat`` times; medians. ARI is against the generating
clusters. At the first size also: the one-shot ``cluster_embeddings``, the k-means
core on the array in memory, and scikit-learn / faiss on that array (no fetch, no
writing) for context.
"""

from __future__ import annotations

import json

import numpy as np

from bench._common import (
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


def hand_pipeline(cur, k: int, parquet: str) -> np.ndarray:
    """DuckDB -> numpy, faiss k-means, members back as a table and a Parquet file."""
    import faiss
    import pyarrow as pa

    tbl = cur.sql("SELECT doc_id, embedding FROM docs").to_arrow_table()
    ids = tbl.column(0).to_numpy()
    col = tbl.column(1).combine_chunks()
    X = col.flatten().to_numpy().reshape(len(col), -1)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    km = faiss.Kmeans(X.shape[1], k, niter=20, seed=1234, spherical=True)
    km.train(X)
    labels = km.index.search(X, 1)[1][:, 0]
    members = pa.table({"doc_id": ids, "cluster_id": labels.astype(np.int32)})
    cur.register("hand_members_arrow", members)
    cur.execute("CREATE OR REPLACE TABLE hand_members AS SELECT * FROM hand_members_arrow")
    cur.unregister("hand_members_arrow")
    cur.execute(f"COPY hand_members TO '{parquet}' (FORMAT parquet)")
    order = np.argsort(ids)
    return labels[order]


def run_size(rows: int, repeat: int, k: int, context: bool) -> list[Row]:
    import os

    from bench._common import interleaved, load_now, scratch_dir

    X, y = make_clusters(rows, k=k)
    con = connect()
    load_table(con, "docs", X)
    con.sql(f"SELECT cluster_create('km', source := 'docs', embedding := 'embedding', "
            f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': {k}}})").fetchall()
    cur = con.cursor()
    parquet = os.path.join(scratch_dir(), "hand_members.parquet")
    out: dict[str, np.ndarray] = {}
    fns = {"exec": lambda: con.sql("SELECT cluster_execute('km')").fetchall()}
    if have("faiss"):
        fns["hand"] = lambda: out.__setitem__("hand", hand_pipeline(cur, k, parquet))
    before = load_now()
    t = interleaved(fns, repeat)
    after = load_now()
    lab_exec = members_in_order(con)
    timings = json.loads(con.sql("SELECT timings FROM cluster_runs('km') ORDER BY started_at "
                                 "DESC LIMIT 1").fetchall()[0][0])
    sil_n = con.sql("SELECT silhouette_sample_size FROM cluster_quality('km')").fetchall()[0][0]
    a_exec = ari(y, lab_exec)
    rows_out = []
    sampled = (f"silhouette on {sil_n:,} of {rows:,} rows" if sil_n and sil_n < rows
               else "silhouette exact on every row")
    if "hand" in t:
        a_hand = ari(y, out["hand"])
        ratio = t["exec"] / t["hand"]
        rows_out.append(Row(
            workload="k-means, cluster_execute (whole run) vs the hand pipeline",
            rows=rows, duckcluster=t["exec"],
            peers={"DuckDB -> numpy + faiss + members table and Parquet, by hand": t["hand"]},
            ratio=f"{ratio:.2f}x the hand pipeline's time",
            quality=f"ARI {a_exec:.3f} (by hand {a_hand:.3f})",
            target="<= 1.5x the hand pipeline, ARI >= its",
            verdict=verdict(ratio <= 1.5 and a_exec >= a_hand - 1e-9),
            notes=(f"{before} before, {after} after; stages of the last run: "
                   + ", ".join(f"{s} {v:.2f} s" for s, v in timings.items())
                   + f"; quality metrics of the run: {sampled}; davies_bouldin and "
                   f"calinski_harabasz on every row")))
    else:
        rows_out.append(Row(
            workload="k-means, cluster_execute (whole run) vs the hand pipeline",
            rows=rows, duckcluster=t["exec"], quality=f"ARI {a_exec:.3f}",
            target="<= 1.5x the hand pipeline", verdict="n/a",
            notes="faiss-cpu is not installed, so the hand pipeline was skipped "
                  "(pip install 'duckcluster[bench]')."))
    if context:
        rows_out += context_rows(con, X, y, k, repeat, t["exec"], a_exec)
    cur.close()
    con.close()
    return rows_out


def context_rows(con, X, y, k, repeat, t_exec, a_exec) -> list[Row]:
    from duckcluster.core.algorithms import get_algorithm, validate_algorithm_params

    rows = len(X)
    oneshot_q = (f"SELECT cluster_id FROM cluster_embeddings('docs', 'embedding', "
                 f"algorithm := 'kmeans', params := {{'n_clusters': {k}}}, id := 'doc_id') "
                 f"ORDER BY doc_id")
    t_oneshot, tbl = median_time(lambda: con.sql(oneshot_q).to_arrow_table(), repeat)
    lab_oneshot = tbl.column(0).to_numpy()
    t_fetch, _ = median_time(lambda: con.sql("SELECT embedding FROM docs ORDER BY doc_id")
                             .to_arrow_table().column(0).combine_chunks().flatten()
                             .to_numpy().reshape(rows, -1), repeat)
    alg = get_algorithm("kmeans")
    params = validate_algorithm_params("kmeans", {"n_clusters": k})
    t_core, lab_core = median_time(lambda: alg.fit_predict(X, params, 42), repeat)
    pr = peers(X, y, k, repeat)
    fastest = min(pr, key=lambda n: pr[n][0])
    out = []
    for label, t, lab in (("k-means, cluster_embeddings one-shot", t_oneshot, lab_oneshot),
                          ("k-means core on the array in memory", t_core, lab_core)):
        out.append(Row(
            workload=label, rows=rows, duckcluster=t,
            peers={n: v[0] for n, v in pr.items()} | {"DuckDB table -> numpy": t_fetch},
            ratio=f"{t / pr[fastest][0]:.2f}x {fastest} (array in memory)",
            quality=f"ARI {ari(y, lab):.3f} (" + ", ".join(f"{n} {v[1]:.3f}"
                                                      for n, v in pr.items()) + ")",
            target="context (no target)", verdict="n/a"))
    return out


def run(rows: str | int = "100000,1000000", repeat: int = 3, k: int = K) -> list[Row]:
    sizes = [int(r) for r in str(rows).split(",") if r.strip()]
    out = []
    for i, n in enumerate(sizes):
        # the in-memory peers take minutes at 1M (scikit-learn's KMeans)
        out += run_size(n, repeat, k, context=i == 0 and n <= 200_000)
    return out


def members_in_order(con) -> np.ndarray:
    return con.sql("SELECT cluster_id FROM cluster_members('km') ORDER BY CAST(id AS BIGINT)"
                   ).to_arrow_table().column(0).to_numpy()


def main() -> None:
    import argparse

    from bench._common import emit

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100000,1000000", help="sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the rows as JSON here (bench runner)")
    a = ap.parse_args()
    emit(run(a.rows, a.repeat), a.json)


if __name__ == "__main__":
    main()
