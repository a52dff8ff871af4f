"""How ``algorithm := 'auto'`` picks its count: the k rules side by side, on auto's own UMAP.

    python -m bench.auto_rules [--sets docstrings8,packages10,digits,demo_docs] [--seeds 5]

For every set and seed, auto's reduction runs once as auto runs it (the seeded
``fit_rows`` sample, duckcluster's UMAP with 5 components and 15 neighbours, its
neighbour graph), then k-means in that space for every k of the sweep (2..30). On those
same fits it prints, per rule, the median over seeds of ARI against the categories (on
the fitted rows) and the counts per seed:

- ``oracle``: the k with the best ARI (told the categories): what no k rule can beat
  with this representation;
- ``pick T``: the smallest k whose modularity on the graph is within T of the best
  (T = 0: the best-modularity k; 0.01 was auto's previous rule);
- ``pick T + merge M``: then clusters merged pairwise while a merge costs less than M
  modularity (:func:`duckcluster.core.algorithms._choose_k.merge_weak`; auto now: T
  0.005, M 0.0025).

The default sets are the ones auto is tuned on; ``manpages6``, ``infomanuals8`` and
``libdocs10`` are held out (pass them to validate a rule chosen here, not to choose it).
The last column is the mean over the sets of the median ARI. Load average at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import numpy as np

PICKS = (0.0, 0.005, 0.01, 0.02)
MERGES = (None, 0.0025, 0.005, 0.01)


def reduced(name: str, seed: int):
    """(rows' categories, UMAP rows, graph, {k: k-means labels}) as auto computes them."""
    from bench.auto import load
    from duckcluster.core.algorithms import _choose_k, auto
    from duckcluster.core.algorithms._base import random_state
    from duckcluster.core.preprocess import auto_epochs, umap_with_graph, validate_steps
    from duckcluster.core.threads import limited

    X, y = load(name)
    n, m = len(X), auto.FIT_ROWS
    if n > m:
        rows = np.sort(np.random.default_rng(random_state(seed)).choice(n, size=m,
                                                                         replace=False))
        X, y = X[rows], y[rows]
    step = {"method": "umap", "n_components": 5, "n_neighbors": 15,
            "n_epochs": auto_epochs(len(X))}
    Z, graph = umap_with_graph(X, validate_steps([step])[0][1], seed)
    with limited(1):
        fits = {k: auto._kmeans(Z, k, seed) for k in _choose_k.sweep_range(len(X))}
    return y, Z, graph, fits


def rules(y, graph, fits) -> dict[str, tuple[float, int]]:
    from sklearn.metrics import adjusted_rand_score

    from duckcluster.core.algorithms import _choose_k

    out = {}
    scores = {k: adjusted_rand_score(y, lab) for k, lab in fits.items()}
    best = max(scores, key=scores.get)
    out["oracle"] = (scores[best], best)
    cands = [{"n_clusters": k, "clusters": int(np.unique(lab).size),
              "modularity": _choose_k.modularity(graph, lab),
              "largest_share": float(np.bincount(lab).max() / lab.size), "noise_ratio": 0.0}
             for k, lab in fits.items()]
    for t in PICKS:
        picked = fits[cands[_choose_k._pick([dict(c) for c in cands], "modularity", t)]
                      ["n_clusters"]]
        for mt in MERGES:
            lab = picked if mt is None else _choose_k.merge_weak(graph, picked, mt)[0]
            name = f"pick {t}" + ("" if mt is None else f" + merge {mt}")
            out[name] = (adjusted_rand_score(y, lab), int(np.unique(lab).size))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="docstrings8,packages10,digits,demo_docs")
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    sets = [s for s in a.sets.split(",") if s]
    got: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for name in sets:
        for seed in range(a.seeds):
            y, _z, graph, fits = reduced(name, seed)
            for rule, v in rules(y, graph, fits).items():
                got.setdefault(rule, {}).setdefault(name, []).append(v)
    print(f"{'rule':26s}" + "".join(f"{s:<25s}" for s in sets) + "   mean   (median ARI / "
          f"count per seed, {a.seeds} seeds)")
    for rule, per in got.items():
        meds = [statistics.median(x for x, _ in per[s]) for s in sets]
        print(f"{rule:26s}" + "".join(
            f"{m:8.3f} / {'-'.join(str(k) for _, k in per[s]):<14s}" for m, s in zip(meds, sets))
            + f"  {statistics.mean(meds):.3f}")
    print(f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
