"""The default answer: ``algorithm := 'auto'`` against its peers on real sets.

    python -m bench.auto [--sets docstrings8,packages10,digits,demo_docs,manpages6,...]
                         [--seeds 3] [--peers kmeans,umap_hdbscan,evoc] [--rows N]

For every set (real sentence embeddings with known categories from
``bench/realdata.py``, or scikit-learn's digits; auto is tuned on docstrings8,
packages10, digits and demo_docs; ``manpages6``, ``infomanuals8`` and ``libdocs10`` are
held out: never used to tune auto, only to validate it) and seed,
in one process, each method clusters the same unit rows:

- ``auto``: duckcluster's default pipeline (``core.algorithms.auto``), no params;
- ``kmeans``: scikit-learn k-means on the raw vectors, told the true number of
  categories (n_init 3): the bar a user who already knows k reaches;
- ``umap_hdbscan``: umap-learn (5 components, 15 neighbours, min_dist 0, cosine) then
  HDBSCAN (min_cluster_size n / 100, at least 10; EOM cut), noise left as -1;
- ``evoc``: EVoC's defaults (``pip install evoc``; in the bench extra);
- ``auto_prev`` / ``auto_nomerge`` (``--peers auto_prev,auto_nomerge``): auto with its
  previous k rule (the smallest k within 0.01 of the best modularity, no merges) and
  with the best-modularity k but no merges of weak cuts: what each part of the rule does;
- ``whiten_auto`` / ``whiten_mean_auto`` (``--peers whiten_auto,whiten_mean_auto``):
  soft-ZCA whitening (regularization 1e-5, its default, or the mean eigenvalue of the
  covariance) before auto: does whitening help or hurt (issue 15 item 5)?

Prints per set and method the median over seeds of ARI against the categories (all
rows, noise as its own label), noise share, number of clusters and seconds, then each
method's median seconds as a ratio to auto's, and the load average before and after
(the machine is shared: compare ratios, not seconds). A warm-up fit first, so auto's
numba kernels are compiled (a warm process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings

import numpy as np


def load(name: str, rows: int | None = None):
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    else:
        from bench.realdata import load as load_set

        _ids, _texts, cats, X = load_set(name)
        y = np.unique(np.asarray(cats), return_inverse=True)[1]
    if rows:
        X, y = X[:rows], y[:rows]
    return np.ascontiguousarray(X, dtype=np.float32), y


def run_auto(X, y, seed):
    from duckcluster.core.algorithms import get_algorithm, validate_algorithm_params

    return get_algorithm("auto").fit_predict(X, validate_algorithm_params("auto", {}), seed)


@contextlib.contextmanager
def _rule(pick_tolerance: float, merge_tolerance: float):
    """auto with another k rule (core.algorithms._choose_k's constants, restored after)."""
    from duckcluster.core.algorithms import _choose_k

    was = _choose_k.MODULARITY_TOLERANCE, _choose_k.MERGE_TOLERANCE
    _choose_k.MODULARITY_TOLERANCE, _choose_k.MERGE_TOLERANCE = pick_tolerance, merge_tolerance
    try:
        yield
    finally:
        _choose_k.MODULARITY_TOLERANCE, _choose_k.MERGE_TOLERANCE = was


def run_auto_prev(X, y, seed):
    """auto's previous k rule: the smallest k within 0.01 of the best modularity, no merges."""
    with _rule(0.01, float("-inf")):
        return run_auto(X, y, seed)


def run_auto_nomerge(X, y, seed):
    """auto's best-modularity k without the merges of weak cuts."""
    with _rule(0.0, float("-inf")):
        return run_auto(X, y, seed)


def _whitened(X, regularization):
    from duckcluster.core.preprocess import run_preprocessing, validate_steps

    steps = validate_steps([{"method": "whitening", "regularization": regularization}])
    return run_preprocessing(X, steps, 0)


def run_whitened_auto(X, y, seed):
    """whitening (its default regularization 1e-5) before auto."""
    return run_auto(_whitened(X, 1e-5), y, seed)


def run_whitened_mean_auto(X, y, seed):
    """whitening with the regularization set to the mean eigenvalue of the covariance
    (trace / d): the leading directions are still equalised, the weak ones not blown up."""
    Xc = X - X.mean(axis=0)
    reg = float(np.einsum("ij,ij->", Xc, Xc) / (len(X) - 1) / X.shape[1])
    return run_auto(_whitened(X, reg), y, seed)


def run_kmeans(X, y, seed):
    from sklearn.cluster import KMeans

    return KMeans(len(np.unique(y)), n_init=3, random_state=seed).fit_predict(X)


def run_umap_hdbscan(X, y, seed):
    import hdbscan
    import umap

    Z = umap.UMAP(n_components=5, n_neighbors=15, min_dist=0.0, metric="cosine",
                  random_state=seed).fit_transform(X)
    return hdbscan.HDBSCAN(min_cluster_size=max(10, len(X) // 100)).fit_predict(Z)


def run_evoc(X, y, seed):
    import evoc

    return evoc.EVoC(random_state=seed).fit_predict(X)


METHODS = {"auto": run_auto, "kmeans": run_kmeans, "umap_hdbscan": run_umap_hdbscan,
           "evoc": run_evoc, "auto_prev": run_auto_prev, "auto_nomerge": run_auto_nomerge,
           "whiten_auto": run_whitened_auto,
           "whiten_mean_auto": run_whitened_mean_auto}


def available(name: str) -> bool:
    import importlib.util

    need = {"umap_hdbscan": ("umap", "hdbscan"), "evoc": ("evoc",)}.get(name, ())
    return all(importlib.util.find_spec(m) is not None for m in need)


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import adjusted_rand_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets",
                    default="docstrings8,packages10,digits,demo_docs,manpages6,infomanuals8,"
                            "libdocs10")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--peers", default="kmeans,umap_hdbscan,evoc")
    ap.add_argument("--rows", type=int, default=None, help="first N rows of each set")
    a = ap.parse_args(argv)
    methods = ["auto"] + [m for m in a.peers.split(",") if m]
    skipped = [m for m in methods if not available(m)]
    methods = [m for m in methods if m not in skipped]
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    warnings.filterwarnings("ignore")
    load_before = os.getloadavg()
    Xw, yw = load("digits")
    run_auto(Xw[:500], yw[:500], 0)  # warm-up: numba kernels compiled
    print(f"{'set':12s} {'method':13s} {'ARI':>6s} {'noise':>6s} {'clusters':>8s} "
          f"{'seconds':>8s}  (medians of {a.seeds} seeds; true k in brackets)")
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    for name in a.sets.split(","):
        X, y = load(name, a.rows)
        secs_auto = None
        for m in methods:
            aris, noise, ks, secs = [], [], [], []
            for seed in range(a.seeds):
                t = time.perf_counter()
                labels = np.asarray(METHODS[m](X, y, seed))
                secs.append(time.perf_counter() - t)
                aris.append(adjusted_rand_score(y, labels))
                noise.append(float(np.mean(labels < 0)))
                ks.append(len(np.unique(labels[labels >= 0])))
            med = statistics.median(secs)
            if m == "auto":
                secs_auto = med
            ratios[m].append(med / secs_auto)
            print(f"{name:12s} {m:13s} {statistics.median(aris):6.3f} "
                  f"{statistics.median(noise):6.1%} {statistics.median(ks):8.0f} {med:8.1f}"
                  f"  [{len(np.unique(y))}] n={len(X):,} ARI range "
                  f"{min(aris):.3f}-{max(aris):.3f}", flush=True)
    print("seconds / auto's (median over sets): " + ", ".join(
        f"{m} {statistics.median(r):.2f}" for m, r in ratios.items()))
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
