"""Map quality and cost: the PCA plane against the graph layout (issue 15, item 7).

    python -m bench.maps [--sets docstrings8,packages10,digits] [--eval-rows 2000]
                         [--epochs 0,10,20,50] [--large 100000] [--data-dir bench/data]

For each real set (``bench.realdata``: all-MiniLM-L6-v2 text embeddings with known
categories; scikit-learn's digits) the default pipeline (``algorithm := 'auto'``: our
UMAP to 5-D, k-means) is fitted once; then both maps are made from the same run:

- **pca**: the map every run had before, PCA of the normalised vectors
  (``core.projection.fit_projection``);
- **graph**: the map of graph pipelines now, a 2-D layout of the clustering's own
  neighbour graph (``core.fit.run_map`` -> ``core.projection.graph_map``).

Figures, on a seeded sample of ``--eval-rows`` rows (the same for both maps):
``trust``: ``sklearn.manifold.trustworthiness`` (15 neighbours, cosine in the input);
``knn``: the share of each row's 15 nearest neighbours in the input (cosine) that are
among its 15 nearest on the map; ``sil``: silhouette of the known categories on the
map (how far apart the true groups are drawn); ``seconds``: to make the map (the graph
layout reuses the graph, so that is all it adds beyond PCA).

Placement of new rows (what assign runs do): the pipeline is fitted on 80 % of the rows
(seeded) and the other 20 % are placed on that run's map by ``GraphMap.transform``
(weighted mean of the positions of their 5 nearest reference rows by the same centroid);
a full re-run on all rows lays
them out itself. ``placed_nn_cat`` / ``rerun_nn_cat``: the share of the held-out rows
whose nearest fitted row on the map has the row's own true category, placed vs re-run;
``placed_nn_cluster``: the share whose nearest fitted row on the map is in the cluster
the row is assigned to (nearest centroid).

``--epochs``: trustworthiness and silhouette of the graph map after that many layout
epochs on the first set (0 = the PCA of the 5-D clustering embedding, the start).
``--whole``: the whole default ``cluster_execute`` on the first set, warm (median of 3
runs in one process): its total and its map stage ("laying out the map", from
``cluster_runs.timings``).
``--large N``: seconds of both maps at N rows (the first set's rows repeated with a
little noise, so the graph is real-looking; its clustering runs once, not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def load_set(name: str, data_dir: str | None):
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        X = d.data.astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True), np.asarray(d.target)
    from bench.realdata import load

    _, _, cats, X = load(name, data_dir) if data_dir else load(name)
    return np.asarray(X, dtype=np.float32), np.asarray(cats)


def spec_for(seed: int = 42):
    from duckcluster.core.spec import ClusterSpec

    return ClusterSpec.from_dict({"name": "m", "source": "t", "embedding": "e", "seed": seed})


def knn_sets(A: np.ndarray, k: int, cosine: bool) -> np.ndarray:
    if cosine:
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        D = -(A @ A.T)
    else:
        sq = (A * A).sum(1)
        D = sq[:, None] + sq[None] - 2 * A @ A.T
    np.fill_diagonal(D, np.inf)
    return np.argpartition(D, k, axis=1)[:, :k]


def scores(X: np.ndarray, Y: np.ndarray, cats: np.ndarray, rows: np.ndarray) -> dict:
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    Xs, Ys = X[rows], Y[rows].astype(np.float64)
    a, b = knn_sets(Xs, 15, True), knn_sets(Ys, 15, False)
    knn = np.mean([len(set(p) & set(q)) / 15 for p, q in zip(a, b)])
    return {"trust": round(float(trustworthiness(Xs, Ys, n_neighbors=15, metric="cosine")), 3),
            "knn": round(float(knn), 3),
            "sil": round(float(silhouette_score(Ys, cats[rows])), 3)}


def fitted(X: np.ndarray, seed: int = 42):
    from duckcluster.core.fit import fit_sample, quiet_fit_warnings

    with quiet_fit_warnings():
        return fit_sample(X, spec_for(seed))


def timed(fn, repeat: int = 3):
    out, secs = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        secs.append(time.perf_counter() - t)
    return out, statistics.median(secs)


def both_maps(X: np.ndarray, f, repeat: int = 3):
    from duckcluster.core.fit import run_map
    from duckcluster.core.projection import fit_projection

    spec = spec_for()
    P, t_pca = timed(lambda: fit_projection(X, 2, spec.seed).transform(X), repeat)
    (gm, G), t_graph = timed(lambda: run_map(X, f, spec), repeat)
    assert gm.kind == "graph", "the default pipeline built no graph on this set"
    return P, t_pca, gm, G, t_graph


def nearest(Q: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Index of the nearest row of P (2-D) for each row of Q."""
    out = np.empty(len(Q), dtype=np.int64)
    for s in range(0, len(Q), 2048):
        q = Q[s:s + 2048].astype(np.float64)
        out[s:s + 2048] = np.argmin(((q[:, None] - P[None].astype(np.float64)) ** 2).sum(-1),
                                    axis=1)
    return out


def placement(X: np.ndarray, cats: np.ndarray, G_full: np.ndarray, seed: int = 0) -> dict:
    """Fit on 80 %, place the rest on that map; compare with the full re-run's layout."""
    from duckcluster.core.assign import assign
    from duckcluster.core.fit import run_map

    n = len(X)
    rng = np.random.default_rng(seed)
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, size=n // 5, replace=False)] = True
    base, new = np.flatnonzero(~held), np.flatnonzero(held)
    f = fitted(X[base])
    gm, G_base = run_map(X[base], f, spec_for())
    placed = gm.transform(X[new], f.centroids)
    nn_placed = base[nearest(placed, G_base)]
    nn_rerun = base[nearest(G_full[new], G_full[base])]
    idx, _ = assign(X[new], f.centroids)
    own = f.cluster_ids[idx]
    base_label = dict(zip(base, f.labels))
    return {"placed_nn_cat": round(float(np.mean(cats[nn_placed] == cats[new])), 3),
            "rerun_nn_cat": round(float(np.mean(cats[nn_rerun] == cats[new])), 3),
            "placed_nn_cluster": round(float(np.mean(
                np.array([base_label[i] for i in nn_placed]) == own)), 3)}


def epochs_sweep(X, cats, f, epochs: list[int], rows) -> list[dict]:
    from duckcluster.core.projection import graph_layout

    out = []
    for e in epochs:
        t = time.perf_counter()
        Y = graph_layout(f.graph[0], f.graph[1], 2, 42, n_epochs=e) if e else _start(f)
        out.append({"epochs": e, "seconds": round(time.perf_counter() - t, 3),
                    **scores(X, Y, cats, rows)})
    return out


def _start(f) -> np.ndarray:
    from duckcluster.core.projection import principal_components

    E = f.graph[1].astype(np.float32)
    mean, comps, _, _ = principal_components(E, 2)
    return (E - mean.astype(np.float32)) @ comps.T.astype(np.float32)


def large(X0: np.ndarray, n: int) -> dict:
    rng = np.random.default_rng(1)
    X = X0[rng.integers(0, len(X0), n)] + rng.normal(scale=0.02, size=(n, X0.shape[1]))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    t = time.perf_counter()
    f = fitted(X)
    t_fit = time.perf_counter() - t
    _, t_pca, gm, _, t_graph = both_maps(X, f, repeat=1)
    t = time.perf_counter()
    gm.transform(X[:100_000], f.centroids)
    t_place = time.perf_counter() - t
    return {"rows": n, "fit_s": round(t_fit, 2), "pca_s": round(t_pca, 3),
            "graph_s": round(t_graph, 3), "added_s": round(t_graph - t_pca, 3),
            "place_100k_s": round(t_place, 3)}


def whole(X: np.ndarray, repeat: int = 3) -> dict:
    import pyarrow as pa

    import duckcluster

    con = duckcluster.connect()
    con.register("t", pa.table({"id": np.arange(len(X)), "e": pa.FixedSizeListArray.from_arrays(
        pa.array(X.ravel()), X.shape[1])}))
    con.sql(f"CREATE TABLE docs AS SELECT id, e::FLOAT[{X.shape[1]}] AS e FROM t")
    con.sql("SELECT cluster_create('m', source := 'docs', embedding := 'e', id := 'id')"
            ).fetchall()
    for _ in range(repeat + 1):  # the first run is the cold one
        con.sql("SELECT cluster_execute('m')").fetchall()
    rows = con.sql("SELECT timings, choices FROM cluster_runs('m')").fetchall()[1:]
    con.close()
    t = [json.loads(r[0]) for r in rows]
    return {"rows": len(X), "total_s": round(statistics.median(x["total"] for x in t), 3),
            "map_s": round(statistics.median(x.get("laying", 0.0) for x in t), 3),
            "map": json.loads(rows[-1][1]).get("map", {}).get("kind")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="docstrings8,packages10,digits")
    ap.add_argument("--eval-rows", type=int, default=2000)
    ap.add_argument("--epochs", default="")
    ap.add_argument("--large", type=int, default=0)
    ap.add_argument("--whole", action="store_true")
    ap.add_argument("--no-placement", action="store_true")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    rows_out = []
    first = None
    for name in [s for s in args.sets.split(",") if s]:
        X, cats = load_set(name, args.data_dir)
        first = first if first is not None else (name, X, cats)
        t = time.perf_counter()
        f = fitted(X)
        t_fit = time.perf_counter() - t
        P, t_pca, gm, G, t_graph = both_maps(X, f)
        rows = np.sort(np.random.default_rng(0).choice(len(X), min(len(X), args.eval_rows),
                                                        replace=False))
        r = {"set": name, "rows": len(X), "categories": int(len(np.unique(cats))),
             "fit_s": round(t_fit, 2),
             "pca": {**scores(X, P, cats, rows), "seconds": round(t_pca, 3)},
             "graph": {**scores(X, G, cats, rows), "seconds": round(t_graph, 3)},
             "added_s": round(t_graph - t_pca, 3)}
        if not args.no_placement:
            r["placement"] = placement(X, cats, G)
        if args.epochs and first[0] == name:
            r["epochs"] = epochs_sweep(X, cats, f, [int(e) for e in args.epochs.split(",")],
                                       rows)
        rows_out.append(r)
        print(json.dumps(r), flush=True)
    if args.whole and first is not None:
        print(json.dumps({"whole": whole(first[1])}), flush=True)
    if args.large and first is not None:
        print(json.dumps({"large": large(first[1], args.large)}), flush=True)
    print("\n| set | rows | map | trust | kNN kept | silhouette (categories) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows_out:
        for kind in ("pca", "graph"):
            m = r[kind]
            print(f"| {r['set']} | {r['rows']:,} | {kind} | {m['trust']:.3f} | {m['knn']:.3f} "
                  f"| {m['sil']:.3f} | {m['seconds']:.3f} |")
    if not args.no_placement:
        print("\n| set | new rows: nearest fitted row same category (placed / re-run) "
              "| nearest fitted row in the row's cluster (placed) |")
        print("|---|---|---|")
        for r in rows_out:
            p = r["placement"]
            print(f"| {r['set']} | {p['placed_nn_cat']:.3f} / {p['rerun_nn_cat']:.3f} "
                  f"| {p['placed_nn_cluster']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
