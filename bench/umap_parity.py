"""duckcluster's own UMAP step against umap-learn, side by side, judged downstream.

    python -m bench.umap_parity [--sets docstrings8,packages10,digits] [--seeds 5]
                                [--configs 5:15,50:30] [--mcs 50]
                                [--impls own,own@100,umap-learn] [--cache DIR]
    python -m bench.umap_parity --cross 500 [--sets ...] [--configs ...] [--seeds 5]

For each set, UMAP configuration (n_components:n_neighbors, min_dist 0, cosine) and
seed, each implementation reduces the same rows; the result is then clustered three
ways and scored against the known categories (ARI): HDBSCAN (min_cluster_size
``--mcs``, EOM cut), HDBSCAN leaf cut (min_cluster_size n/33) and k-means told the
true k. Prints the mean over seeds per implementation (and its standard error for the
leaf cut, the noisiest column), each one's difference from umap-learn, and the median
seconds of each reduction measured in the same process (compare ratios: the machine is
shared). Implementations: ``own`` (the ``umap`` step with its default epochs),
``own@E`` (the step with ``n_epochs`` E), ``umap-learn`` (its defaults: 500 epochs up
to 10k rows, 200 above). Issue 15, item 6: own within 0.01 of umap-learn.

``--cache DIR`` keeps umap-learn's embeddings (and their seconds) in DIR, keyed by set,
rows, config, seed and umap-learn version, so a re-run measures only duckcluster.

``--cross E`` splits graph differences from optimiser differences: for each seed it
builds both fuzzy graphs (ours from the exact kNN graph; umap-learn's from its
NN-descent kNN graph), starts both optimisers (ours, ``layout.optimize_layout``
single-threaded; umap-learn's ``simplicial_set_embedding``) from the same spectral
start of that graph, E epochs, and scores the four layouts.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return umap.UMAP(n_components=nc, n_neighbors=nn, min_dist=0.0, metric="cosine",
                         random_state=seed).fit_transform(X)


def _cached_ul(cache: str | None, name: str, X, nc: int, nn: int, seed: int):
    """umap-learn's embedding and seconds, from ``cache`` when it has them."""
    if cache:
        import umap

        path = os.path.join(cache, f"ul-{name}-{len(X)}-{nc}-{nn}-{seed}-{umap.__version__}.npz")
        if os.path.exists(path):
            f = np.load(path)
            return f["Z"], float(f["seconds"])
    t = time.perf_counter()
    Z = _reduce("ul", X, nc, nn, seed)
    secs = time.perf_counter() - t
    if cache:
        os.makedirs(cache, exist_ok=True)
        np.savez(path, Z=Z, seconds=secs)
    return Z, secs


def _scores(Z, y, mcs: int, seed: int) -> tuple[float, float, float]:
    import hdbscan
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari

    eom = hdbscan.HDBSCAN(min_cluster_size=mcs).fit_predict(Z)
    leaf = hdbscan.HDBSCAN(min_cluster_size=max(5, len(Z) // 33),
                           cluster_selection_method="leaf").fit_predict(Z)
    km = KMeans(len(set(y.tolist())), n_init=3, random_state=seed).fit_predict(Z)
    return ari(y, eom), ari(y, leaf), ari(y, km)


def _cross(X, y, nc: int, nn: int, seed: int, epochs: int, mcs: int) -> dict:
    """The 2 x 2 of {own, umap-learn} graph x {own, umap-learn} optimiser, one seed."""
    import umap.umap_ as uu

    import duckcluster.core.preprocess as pre
    from duckcluster.core.preprocess.layout import optimize_layout

    idx, dist = pre._exact_knn(X, nn, "cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ki, kd, _ = uu.nearest_neighbors(X, nn, "cosine", {}, True,
                                         np.random.RandomState(seed), low_memory=True,
                                         n_jobs=1)
        G_ul = uu.fuzzy_simplicial_set(X, nn, np.random.RandomState(seed), "cosine",
                                       knn_indices=ki, knn_dists=kd)[0]
    a, b = pre._ab_params(1.0, 0.0)
    out = {}
    for gname, G in (("own", pre.fuzzy_graph(idx, dist)), ("umap-learn", G_ul.tocsr())):
        G = G.astype(np.float32).tocsr()
        G.data[G.data < G.data.max() / float(epochs)] = 0.0
        G.eliminate_zeros()
        init = pre._spectral_init(G, nc)
        if init is None:
            init = pre._pca(X, {"n_components": nc, "whiten": False}, seed)
        rng = np.random.RandomState(seed)
        init = init * (10.0 / np.abs(init).max()) + rng.normal(scale=1e-4, size=init.shape)
        init = (10.0 * (init - init.min(0)) / (init.max(0) - init.min(0))).astype(np.float32)
        Z_own = optimize_layout(init.copy(), G, epochs, a, b, seed, parallel=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Z_ul, _ = uu.simplicial_set_embedding(
                X, G.copy(), nc, 1.0, a, b, 1.0, 5, epochs, init.copy(),
                np.random.RandomState(seed), "cosine", {}, False, {}, False)
        out[f"{gname} graph, own optimiser"] = _scores(Z_own, y, mcs, seed)
        out[f"{gname} graph, umap-learn optimiser"] = _scores(Z_ul, y, mcs, seed)
    return out


def _row(name, cfg, impl, m, se, secs) -> str:
    s = f"{secs:8.1f}" if secs is not None else f"{'':8s}"
    return (f"{name:12s} {cfg:8s} {impl:36s} {m[0]:12.3f} {m[1]:8.3f} ±{se:.3f} "
            f"{m[2]:10.3f} {s}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="docstrings8,packages10,digits")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--configs", default="5:15,50:30")
    ap.add_argument("--mcs", type=int, default=50)
    ap.add_argument("--impls", default="own,umap-learn",
                    help="own (default epochs), own@E (n_epochs E), umap-learn")
    ap.add_argument("--cache", default=None, help="folder for umap-learn's embeddings")
    ap.add_argument("--cross", type=int, default=None, metavar="EPOCHS",
                    help="same graph and start into both optimisers instead")
    a = ap.parse_args()
    print(f"{'set':12s} {'umap':8s} {'impl':36s} {'hdbscan eom':>12s} "
          f"{'hdbscan leaf':>15s} {'kmeans(k)':>10s} {'seconds':>8s}")
    for name in a.sets.split(","):
        X, y = _load(name)
        for cfg in a.configs.split(","):
            nc, nn = (int(v) for v in cfg.split(":"))
            if a.cross:
                rows: dict[str, list] = {}
                for seed in range(a.seeds):
                    for k, v in _cross(X, y, nc, nn, seed, a.cross, a.mcs).items():
                        rows.setdefault(k, []).append(v)
                for k, r in rows.items():
                    r = np.asarray(r)
                    print(_row(name, cfg, f"{k} @{a.cross}", r.mean(0),
                               r[:, 1].std() / np.sqrt(len(r)), None), flush=True)
                continue
            means = {}
            for impl in a.impls.split(","):
                rows, secs = [], []
                for seed in range(a.seeds):
                    if impl == "umap-learn":
                        Z, s = _cached_ul(a.cache, name, X, nc, nn, seed)
                    else:
                        ep = int(impl.split("@")[1]) if "@" in impl else None
                        t = time.perf_counter()
                        Z = _reduce("own", X, nc, nn, seed, ep)
                        s = time.perf_counter() - t
                    secs.append(s)
                    rows.append(_scores(Z, y, a.mcs, seed))
                r = np.asarray(rows)
                means[impl] = r.mean(0)
                print(_row(name, cfg, impl, means[impl], r[:, 1].std() / np.sqrt(len(r)),
                           float(np.median(secs))), flush=True)
            if "umap-learn" not in means:
                continue
            for impl, m in means.items():
                if impl != "umap-learn":
                    d = m - means["umap-learn"]
                    print(f"{name:12s} {cfg:8s} {impl + ' - umap-learn':36s} {d[0]:+12.3f} "
                          f"{d[1]:+8.3f} {'':6s} {d[2]:+10.3f}", flush=True)


if __name__ == "__main__":
    main()
