"""ARI of every algorithm through the full SQL path (cluster_create + cluster_execute).

    python -m bench.algorithms_ari [--digits] [--per 200] [--k 6] [--dim 64] [--spread 0.05]

Data: scikit-learn's handwritten digits (``--digits``: 1,797 x 64, 10 classes)
or seeded blobs on the unit sphere; one row per algorithm with its ARI against
the truth and its run time (median of ``--repeat``). For k-means the peer is
scikit-learn ``KMeans(n_init=1)`` on the same L2-normalized rows.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench._common import Row, ari, connect, emit, load_table, median_time

PARAMS = {
    "kmeans": "{'n_clusters': %(k)d}", "dbscan": "{'eps': %(eps)s, 'min_samples': 5}",
    "hdbscan": "{'min_cluster_size': %(mcs)d}", "agglomerative": "{'n_clusters': %(k)d}",
    "spectral": "{'n_clusters': %(k)d}", "gaussian_mixture": "{'n_components': %(k)d}",
    "mean_shift": "{}", "optics": "{'min_samples': 10}",
}
#: Extra preprocessing per algorithm on digits (the demo's density pipeline).
DIGITS_PREPROCESSING = {"hdbscan": "[{'method': 'umap', 'n_components': 10}]"}


def data(digits: bool, per: int, k: int, dim: int, spread: float, seed: int):
    if digits:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True), y, 10
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, dim))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in C]).astype(np.float32)
    return X, np.repeat(np.arange(k), per), k


def run(digits: bool = True, per: int = 200, k: int = 6, dim: int = 64, spread: float = 0.05,
        seed: int = 0, repeat: int = 1) -> list[Row]:
    from sklearn.cluster import KMeans

    X, y, k = data(digits, per, k, dim, spread, seed)
    con = connect()
    load_table(con, "b", X)
    what = "digits" if digits else f"{k} blobs, d={X.shape[1]}"
    subs = {"k": k, "mcs": 20 if digits else 10, "eps": "0.05"}
    t_sk, lab_sk = median_time(lambda: KMeans(k, n_init=1, random_state=0).fit_predict(X),
                               repeat)
    out = []
    for algo, p in PARAMS.items():
        if digits and algo == "mean_shift":
            continue  # one cluster after ~80 s on 64-d digits: nothing to learn
        params = p % subs
        pre = DIGITS_PREPROCESSING.get(algo) if digits else None
        con.sql(f"SELECT cluster_create('{algo}', source := 'b', embedding := 'embedding', "
                f"id := 'doc_id', algorithm := '{algo}', params := {params}"
                + (f", preprocessing := {pre}" if pre else "") + ")").fetchall()
        secs, _ = median_time(
            lambda a=algo: con.sql(f"SELECT cluster_execute('{a}')").fetchall(), repeat)
        labels = con.sql(f"SELECT cluster_id FROM cluster_members('{algo}') ORDER BY "
                         "CAST(id AS BIGINT)").to_arrow_table().column(0).to_numpy()
        out.append(Row(
            workload=f"{what}: {algo} `{params}`" + (f" after `{pre}`" if pre else ""),
            rows=len(X), duckcluster=secs,
            peers={"scikit-learn KMeans n_init=1": t_sk} if algo == "kmeans" else {},
            ratio="",
            quality=f"ARI {ari(y, labels):.3f}; {len(set(labels.tolist()) - {-1})} clusters, "
                    f"noise {np.mean(labels == -1):.1%}"
                    + (f" (scikit-learn ARI {ari(y, lab_sk):.3f})" if algo == "kmeans" else ""),
            target="quality", verdict="n/a"))
    con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--digits", action="store_true", help="scikit-learn's digits instead of blobs")
    ap.add_argument("--per", type=int, default=200)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", help="also write the rows as JSON here (bench runner)")
    a = ap.parse_args()
    emit(run(a.digits, a.per, a.k, a.dim, a.spread, a.seed, a.repeat), a.json)


if __name__ == "__main__":
    main()
