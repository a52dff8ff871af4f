"""duckcluster's own UMAP step against umap-learn, side by side, judged downstream.

    python -m bench.umap_parity [--sets docstrings8,packages10,digits] [--seeds 5]
                                [--configs 5:15,50:30] [--mcs 50] [--epochs N]
                                [--impls own,umap-learn]

For each set, UMAP configuration (n_components:n_neighbors, min_dist 0, cosine) and
seed, both implementations reduce the same rows; the result is then clustered three
ways and scored against the known categories (ARI): HDBSCAN (min_cluster_size
``--mcs``, EOM cut), HDBSCAN leaf cut (min_cluster_size n/33) and k-means told the
true k. Prints the mean over seeds per implementation, their difference, and the
median seconds of each reduction measured in the same process (compare ratios: the
machine is shared). Issue 15, item 6: own within 0.01 of umap-learn.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _load(name: str):
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True), y
    from bench.realdata import load

    _ids, _texts, categories, X = load(name)
    return np.asarray(X, dtype=np.float32), np.unique(np.asarray(categories),
                                                      return_inverse=True)[1]


def _reduce(impl: str, X, nc: int, nn: int, seed: int, epochs: int | None = None):
    if impl == "own":
        from duckcluster.core.preprocess import run_preprocessing, validate_steps

        steps = validate_steps([{"method": "umap", "n_components": nc, "n_neighbors": nn,
                                 "n_epochs": epochs}])
        return run_preprocessing(X, steps, seed)
    import umap

    return umap.UMAP(n_components=nc, n_neighbors=nn, min_dist=0.0, metric="cosine",
                     random_state=seed).fit_transform(X)


def _scores(Z, y, mcs: int, seed: int) -> tuple[float, float, float]:
    import hdbscan
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari

    eom = hdbscan.HDBSCAN(min_cluster_size=mcs).fit_predict(Z)
    leaf = hdbscan.HDBSCAN(min_cluster_size=max(5, len(Z) // 33),
                           cluster_selection_method="leaf").fit_predict(Z)
    km = KMeans(len(set(y.tolist())), n_init=3, random_state=seed).fit_predict(Z)
    return ari(y, eom), ari(y, leaf), ari(y, km)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="docstrings8,packages10,digits")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--configs", default="5:15,50:30")
    ap.add_argument("--mcs", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=None,
                    help="own UMAP's n_epochs (default: its rule; umap-learn's is 500 up to "
                         "10k rows, 200 above)")
    ap.add_argument("--impls", default="own,umap-learn")
    a = ap.parse_args()
    print(f"{'set':12s} {'umap':8s} {'impl':10s} {'hdbscan eom':>12s} {'hdbscan leaf':>13s} "
          f"{'kmeans(k)':>10s} {'seconds':>8s}")
    for name in a.sets.split(","):
        X, y = _load(name)
        for cfg in a.configs.split(","):
            nc, nn = (int(v) for v in cfg.split(":"))
            means = {}
            for impl in a.impls.split(","):
                rows, secs = [], []
                for seed in range(a.seeds):
                    t = time.perf_counter()
                    Z = _reduce("own" if impl == "own" else "ul", X, nc, nn, seed, a.epochs)
                    secs.append(time.perf_counter() - t)
                    rows.append(_scores(Z, y, a.mcs, seed))
                m = np.mean(rows, axis=0)
                means[impl] = m
                print(f"{name:12s} {cfg:8s} {impl:10s} {m[0]:12.3f} {m[1]:13.3f} {m[2]:10.3f} "
                      f"{np.median(secs):8.1f}", flush=True)
            if len(means) < 2:
                continue
            d = means["own"] - means["umap-learn"]
            print(f"{name:12s} {cfg:8s} {'own - ul':10s} {d[0]:+12.3f} {d[1]:+13.3f} "
                  f"{d[2]:+10.3f}", flush=True)


if __name__ == "__main__":
    main()
