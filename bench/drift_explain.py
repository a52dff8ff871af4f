"""Does ``embedding_drift_explain`` name the new topic? On real sentence embeddings.

    python bench/drift_explain.py                     # drift_pool, 20 % new topic, every category
    python bench/drift_explain.py --set packages10 --fraction 0.05

For each category of a ``bench/realdata.py`` set in turn, the baseline is ``--side`` rows
of the other categories and the current side the same number with ``--fraction`` of them
from the held-out category (``bench/drift_power.py``'s ``new20`` scenario). The explanation
runs as ``embedding_drift_explain`` does (its numeric core on the pooled rows, the text
column for keywords). Per held-out category the table prints the top region's kind
(``new`` first when there is one), its purity (share of its current rows from the held-out
category), how much of the held-out topic it holds (recall), and its keyword label, then
how many categories got a top ``new`` region at least 80 % pure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.drift_power import Pool  # noqa: E402
from duckcluster.drift import explain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="drift_pool")
    ap.add_argument("--data-dir", default=None, help="folder of the cached sets (bench/data)")
    ap.add_argument("--side", type=int, default=1200)
    ap.add_argument("--fraction", type=float, default=0.20)
    a = ap.parse_args()
    pool = Pool(a.set, a.data_dir)
    rows, good = [], 0
    t0 = time.perf_counter()
    for s, name in enumerate(pool.names):
        rng = np.random.default_rng([s, 2026])
        others = rng.permutation(np.flatnonzero(pool.y != s))
        k = round(a.side * a.fraction)
        new = rng.permutation(np.flatnonzero(pool.y == s))[:k]
        b, c = others[:a.side], np.concatenate([others[a.side:2 * a.side - k], new])
        idx = np.concatenate([b, c])
        X = pool.X[idx].astype(np.float32)
        regs = explain.regions(X, len(b), seed=s)
        texts = [pool.texts[i] for i in idx]
        explain.describe(regs, X, len(b), [str(pool.ids[i]) for i in idx], texts, 3, s)
        top = regs[0]
        cur_rows = idx[top.cells[top.cells >= len(b)]]
        purity = float(np.mean(pool.y[cur_rows] == s)) if cur_rows.size else 0.0
        recall = float(np.sum(pool.y[cur_rows] == s) / k)
        good += top.kind == "new" and purity >= 0.8
        rows.append((name, top.kind, purity, recall, top.label or ""))
    print(f"{a.set}: {len(pool.names)} categories held out in turn; {a.side:,} rows per side, "
          f"{a.fraction:.0%} of the current side new; {time.perf_counter() - t0:.0f} s\n")
    print("| held-out category | top region | purity | recall | label |\n|---|---|---|---|---|")
    for name, kind, purity, recall, label in rows:
        print(f"| {name} | {kind} | {purity:.2f} | {recall:.2f} | {label} |")
    print(f"\ntop region new and >= 80 % pure: {good} of {len(rows)}")


if __name__ == "__main__":
    main()
