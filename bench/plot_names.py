"""Cluster pictures with names: ``notebook.plot_clusters`` against DataMapPlot.

    python -m bench.plot_names [--set packages10] [--k 50] [--algorithm auto|kmeans]
                               [--dmp-python PATH] [--out DIR] [--data-dir bench/data]

Data: a real set of ``bench.realdata`` (default packages10: 6,500 Debian package
descriptions, all-MiniLM-L6-v2 embeddings), clustered into k = 50 groups and named by
``cluster_label``'s offline keywords. ``--algorithm auto`` (the default): the default
pipeline with ``n_clusters := 50``, whose map is the layout of its UMAP graph;
``kmeans``: k-means on the raw vectors, whose map is their PCA plane. Both tools draw
the same run: the members' stored x, y and each cluster's name.

Peer: DataMapPlot's ``create_plot`` with its defaults, given the same coordinates and
one name per point. DataMapPlot pins pandas < 3, so it runs in a venv of its own:
``python -m venv dmp && dmp/bin/pip install datamapplot``, then ``--dmp-python
dmp/bin/python`` (without it only our side is measured).

Figures per tool: seconds to draw and save (ours: median of 3; DataMapPlot: one run,
it takes minutes), names shown, pairs of names
whose boxes overlap, legend entries, and how different each cluster's colour is from
its nearest neighbour's on the map (RGB distance, 0 = same colour; mean and minimum,
and how many clusters share their nearest neighbour's colour exactly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench._common import scratch_dir


def metrics(ax, centres: np.ndarray, colours: np.ndarray) -> dict:
    """Names shown, overlapping name pairs, legend entries, colour distinctness."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(lambda o: type(o).__name__ in ("Text", "Annotation"))
             if t.get_visible() and t.get_text().strip() and t is not ax.title
             and t.axes is ax]
    from matplotlib.text import Text

    # DataMapPlot keeps a Text and an Annotation per name: count each name once, by the
    # Annotation when there is one, and measure its text alone (not its arrow)
    by_name: dict = {}
    for t in texts:
        if t.get_text() not in by_name or type(t).__name__ == "Annotation":
            by_name[t.get_text()] = t
    texts = list(by_name.values())
    boxes = []
    for t in texts:
        if type(t).__name__ == "Annotation":
            t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    overlaps = sum(boxes[i].overlaps(boxes[j]) for i in range(len(boxes))
                   for j in range(i + 1, len(boxes)))
    legend = ax.get_legend()
    d = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(axis=1)
    diff = np.linalg.norm(colours - colours[nn], axis=1)
    return {"names": len(texts), "overlapping_pairs": int(overlaps),
            "legend_entries": len(legend.get_texts()) if legend else 0,
            "nn_colour_mean": round(float(diff.mean()), 3),
            "nn_colour_min": round(float(diff.min()), 3),
            "nn_same_colour": int((diff < 1e-6).sum())}


def run_ours(con, name: str, out: str) -> tuple[dict, np.ndarray, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from duckcluster.notebook import plot_clusters

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ax = plot_clusters(con, name)
        ax.figure.savefig(out, dpi=100)
        times.append(time.perf_counter() - t0)
        plt.close(ax.figure)
    ax = plot_clusters(con, name)
    clusters = [c for c in ax.collections if len(c.get_offsets())
                and tuple(np.round(c.get_facecolors()[0][:3], 3)) != (0.851, 0.851, 0.851)]
    centres = np.array([np.median(np.asarray(c.get_offsets()), axis=0) for c in clusters])
    colours = np.array([c.get_facecolors()[0][:3] for c in clusters])
    m = metrics(ax, centres, colours)
    m["seconds"] = round(sorted(times)[1], 2)
    return m, centres, colours


DMP_SCRIPT = r"""
import json, sys, time
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import datamapplot
sys.path.insert(0, sys.argv[3])
from plot_names import metrics
d = np.load(sys.argv[1], allow_pickle=True)
coords, names, cid = d["coords"], d["names"], d["cid"]
t0 = time.perf_counter()  # one timed run: it takes minutes
fig, ax = datamapplot.create_plot(coords, names, figsize=(10, 7), dpi=100)
fig.savefig(sys.argv[2], dpi=100)
times = [time.perf_counter() - t0]
pts = np.vstack([c.get_offsets() for c in ax.collections if len(c.get_offsets()) == len(coords)])
fc = [c.get_facecolors() for c in ax.collections if len(c.get_offsets()) == len(coords)][0]
ids = np.unique(cid)
centres = np.array([np.median(coords[cid == c], axis=0) for c in ids])
colours = []
for c in ids:
    rows = np.round(np.asarray(fc)[cid == c][:, :3], 3)
    vals, counts = np.unique(rows, axis=0, return_counts=True)
    colours.append(vals[counts.argmax()])
m = metrics(ax, centres, np.array(colours))
m["seconds"] = round(times[0], 2)
print(json.dumps(m))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="packages10")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--algorithm", default="auto", choices=("auto", "kmeans"),
                    help="auto: graph-layout map; kmeans: PCA map")
    ap.add_argument("--dmp-python", default=None, help="python of a venv with datamapplot")
    ap.add_argument("--out", default=None, help="folder for the two PNGs")
    ap.add_argument("--data-dir", default=None, help="where the bench.realdata sets are")
    args = ap.parse_args()

    import duckcluster
    from bench.realdata import load
    from duckcluster.notebook import cluster_names

    out = args.out or scratch_dir()
    os.makedirs(out, exist_ok=True)
    ids, texts, categories, X = load(args.set, data_dir=args.data_dir)
    con = duckcluster.connect()
    import pyarrow as pa

    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    con.register("t", pa.table({"id": np.asarray(ids), "text": list(texts), "embedding": emb}))
    con.sql(f"CREATE TABLE docs AS SELECT id, text, embedding::FLOAT[{X.shape[1]}] AS "
            "embedding FROM t")
    con.sql("SELECT cluster_create('m', 'docs', 'embedding', id := 'id', algorithm := "
            f"'{args.algorithm}', params := {{'n_clusters': {args.k}}})").fetchall()
    con.sql("SELECT cluster_execute('m')").fetchall()
    con.sql("SELECT cluster_label('m')").fetchall()
    rows = {}
    ours, _, _ = run_ours(con, "m", os.path.join(out, "duckcluster.png"))
    rows["duckcluster plot_clusters"] = ours
    if args.dmp_python:
        names = cluster_names(con, "m")
        tbl = con.sql("SELECT cluster_id, x, y FROM cluster_members('m')").fetchnumpy()
        cid = np.asarray(tbl["cluster_id"])
        coords = np.column_stack([tbl["x"], tbl["y"]]).astype(np.float32)
        point_names = np.array([names.get(int(c), str(c)) for c in cid], dtype=object)
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "map.npz")
            np.savez(npz, coords=coords, names=point_names, cid=cid)
            script = os.path.join(tmp, "dmp.py")
            with open(script, "w") as fh:
                fh.write(DMP_SCRIPT)
            here = os.path.dirname(os.path.abspath(__file__))
            res = subprocess.run([args.dmp_python, script, npz,
                                  os.path.join(out, "datamapplot.png"), here],
                                 capture_output=True, text=True, timeout=1800)
            if res.returncode != 0:
                sys.exit(res.stderr[-2000:])
            rows["DataMapPlot create_plot"] = json.loads(res.stdout.strip().splitlines()[-1])
    kind = json.loads(con.sql("SELECT choices FROM cluster_runs('m')").fetchall()[-1][0] or
                      '{}').get("map", {}).get("kind", "pca")
    con.close()
    print(f"{args.set}, {args.algorithm} k={args.k}, {len(ids):,} rows, {kind} map; "
          f"pictures in {out}")
    print("| tool | seconds | names shown | overlapping name pairs | legend entries | "
          "nearest-neighbour colour distance mean / min | clusters sharing their "
          "neighbour's colour |")
    print("|---|---|---|---|---|---|---|")
    for tool, m in rows.items():
        print(f"| {tool} | {m['seconds']} | {m['names']} | {m['overlapping_pairs']} | "
              f"{m['legend_entries']} | {m['nn_colour_mean']} / {m['nn_colour_min']} | "
              f"{m['nn_same_colour']} |")


if __name__ == "__main__":
    main()
