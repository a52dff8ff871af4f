"""``duckcluster demo``: scikit-learn's handwritten digits, clustered two ways from SQL."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from .. import connect

DEFINITIONS = {
    "digits_kmeans": (
        "SELECT cluster_create('digits_kmeans', source := 'digits', embedding := 'embedding', "
        "id := 'id', algorithm := 'kmeans', params := {'n_clusters': 10})"),
    "digits_hdbscan": (
        "SELECT cluster_create('digits_hdbscan', source := 'digits', embedding := 'embedding', "
        "id := 'id', algorithm := 'hdbscan', params := {'min_cluster_size': 20}, "
        "preprocessing := [{'method': 'whitening'}, "
        "{'method': 'umap', 'n_components': 10, 'n_neighbors': 30}])"),
}


def load_digits_table() -> tuple[pa.Table, np.ndarray]:
    """The 1,797 8x8 digit images shipped with scikit-learn, as 64-d embeddings."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    return pa.table({"id": np.arange(len(X), dtype=np.int32),
                     "label": d.target.astype(np.int32), "embedding": emb}), d.target


def run_demo(db_path: str, artifacts_dir: str | None, console: Console, progress_display) -> None:
    from sklearn.metrics import adjusted_rand_score

    t_start = time.perf_counter()
    for path in (db_path, db_path + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    art = artifacts_dir or os.path.splitext(os.path.abspath(db_path))[0] + ".artifacts"
    shutil.rmtree(art, ignore_errors=True)
    console.print(f"[bold]duckcluster demo[/bold]: scikit-learn's handwritten digits -> {db_path}")
    con = connect(db_path, artifacts_dir=art)
    try:
        tbl, truth = load_digits_table()
        con.register("__digits", tbl)
        con.execute("CREATE TABLE digits AS SELECT id, label, CAST(embedding AS FLOAT[64]) AS "
                    "embedding FROM __digits")
        con.unregister("__digits")
        console.print(f"loaded {len(truth):,} digits (64-d pixel embeddings) into table 'digits'")
        summary = Table(title="clusters of the digits", header_style="bold")
        for col in ("definition", "algorithm", "clusters", "noise", "silhouette",
                    "mean cos", "ARI vs true digit", "seconds"):
            summary.add_column(col, justify="left" if col in ("definition", "algorithm")
                               else "right", no_wrap=col in ("definition", "algorithm"))
        for name, create_sql in DEFINITIONS.items():
            con.sql(create_sql).fetchall()
            t0 = time.perf_counter()
            with progress_display(True):
                con.sql(f"SELECT cluster_execute('{name}')").fetchall()
            secs = time.perf_counter() - t0
            q = con.sql(f"SELECT n_clusters, noise_ratio, silhouette_score, "
                        f"mean_cosine_to_centroid FROM cluster_quality('{name}')").fetchall()[0]
            pred = con.sql(f"SELECT m.cluster_id FROM cluster_members('{name}') m "
                           f"ORDER BY CAST(m.id AS INTEGER)").fetchall()
            ari = adjusted_rand_score(truth, [r[0] for r in pred])
            algo = con.sql(f"SELECT algorithm FROM cluster_list() WHERE name = '{name}'"
                           ).fetchall()[0][0]
            summary.add_row(name, algo, str(q[0]), f"{q[1]:.1%}", _fmt(q[2]), _fmt(q[3]),
                            f"{ari:.3f}", f"{secs:.1f}")
        console.print(summary)
        sizes = Table(title="digits_hdbscan: cluster sizes and the digit each holds",
                      header_style="bold")
        for col in ("cluster_id", "size", "majority digit", "purity"):
            sizes.add_column(col, justify="right")
        for cid, n, digit, purity in con.sql(
                "SELECT m.cluster_id, count(*) AS n, mode(d.label) AS digit, "
                "avg((d.label = (SELECT mode(d2.label) FROM cluster_members('digits_hdbscan') m2 "
                "JOIN digits d2 ON d2.id = m2.id WHERE m2.cluster_id = m.cluster_id))::INT) AS purity "
                "FROM cluster_members('digits_hdbscan') m JOIN digits d ON d.id = m.id "
                "GROUP BY ALL ORDER BY m.cluster_id").fetchall():
            sizes.add_row(str(cid) + (" (noise)" if cid == -1 else ""), str(n), str(digit),
                          f"{purity:.1%}")
        console.print(sizes)
        console.print(f"artifacts (Parquet per run) under {art}")
        console.print(f"done in {time.perf_counter() - t_start:.1f} s\n")
        console.print("[bold]Try next[/bold]:")
        for q in (
            "SELECT cluster_id, count(*) FROM cluster_members('digits_hdbscan') GROUP BY ALL ORDER BY 2 DESC",
            "SELECT * FROM cluster_quality('digits_kmeans')",
            "SELECT id, assign_cluster(embedding, 'digits_kmeans') AS cluster_id FROM digits LIMIT 5",
            "SELECT * FROM cluster_runs('digits_hdbscan')",
        ):
            console.print(f'  duckcluster sql {db_path} -c "{q}"', soft_wrap=True, highlight=False)
    finally:
        con.close()


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
