"""Candidate statistics for the default drift test, compared on one graph and the same
relabellings, on real sentence embeddings.

    python bench/drift_candidates.py                          # drift_pool, 40 nulls, 20 per shift
    python bench/drift_candidates.py --null 60 --reps 32 --scenarios null,new5,gone5,mix
    python bench/drift_candidates.py --set packages10 --combos new20_18+gone20_18+chi16+hot20

What ``knn`` (the default method) was chosen from. Each replicate draws both sides as
``bench/drift_power.py`` does (``--side`` rows each from ``bench/realdata.py``'s set;
``null``, ``new5`` / ``new20`` (the current side has 5 % / 20 % rows of a held-out
category), ``gone5`` (the sides of ``new5`` swapped: the baseline has a topic the current
side lost) and ``mix`` (three categories at twice their share)). Per replicate, ONE exact
neighbour graph of the pooled rows, one set of k-means regions and one principal-component
basis are built without the labels, and every statistic is computed for the real labels
and the same ``--perms`` relabellings, so each has an exact permutation p-value and any
min-p combination of them is exact too (calibrated on the same relabellings):

- ``new{k}_{t}`` / ``gone{k}_{t}``: current (baseline) rows with at least ``t`` of their
  ``k`` nearest neighbours on their own side; ``mix{k}``: same-side neighbour pairs
  (Schilling's and Henze's test, what a hand-written kNN test does); ``klr{k}``: the
  kNN density-ratio estimate of KL(current || baseline), sum over current rows of
  log((current + 0.5) / (baseline + 0.5)) neighbours;
- ``cc{k}``: current rows' current neighbours (a one-sided Schilling count: new content
  only adds such pairs); ``soft{k}``: current rows' current neighbours beyond 0.7 k,
  summed; ``mut{k}`` / ``mutnew{k}``: the same on reciprocal neighbours only (j among
  i's k nearest and i among j's), pairs / rows with at least 90 % of their reciprocal
  neighbours current; ``pca{d}new20_18`` / ``pca{d}cc20``: ``new20_18`` / ``cc20`` on
  the exact 20-NN graph of the first ``d`` (32, 64) principal components;
- ``chi{R}``: chi-square of the sides' counts over ``R`` regions; ``regup{R}``: the largest
  one-sided binomial log-likelihood ratio of a region's current excess (a scan);
- ``hot{r}``: squared distance between the side means on ``r`` whitened principal
  components (Hotelling); ``meandiff``: the same on the raw embeddings.

The table prints the share of replicates with p < 0.05 per statistic and per
combination (``--combos``, ``+``-joined, several separated by commas), each combined
three ways, all calibrated on the same relabellings (so exact): min-p, Fisher (sum of
-log p) and Cauchy (mean of tan((0.5 - p) pi)). ``--save`` pickles every statistic's
p-values per replicate, to try more combinations without recomputing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.drift_power import ALPHA, Pool  # noqa: E402
from duckcluster.drift._base import permutation_labels  # noqa: E402
from duckcluster.drift._graph import exact_graph  # noqa: E402

KS = (10, 20, 40)
REGIONS = (16, 32, 64)
COMPONENTS = (20, 50, 100)
PCA_GRAPHS = (32, 64)
DEFAULT_COMBOS = ("new10_10+gone10_10+mix40+hot20",  # knn before this comparison
                  "new20_18+gone20_18+chi16+hot20",  # knn now
                  "new20_18+chi16", "new20_18+meandiff", "new20_18+regup32+hot50")


def kmeans_regions(X: np.ndarray, R: int, rng: np.random.Generator, iters: int = 10
                   ) -> np.ndarray:
    C = X[rng.choice(len(X), R, replace=False)].copy()
    for _ in range(iters):
        a = np.argmax(X @ C.T, axis=1)
        for r in range(R):
            if (a == r).any():
                c = X[a == r].sum(axis=0)
                C[r] = c / np.linalg.norm(c)
    return np.argmax(X @ C.T, axis=1)


def statistics(X: np.ndarray, n: int, perms: int, rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    """name -> (perms + 1,) statistic, column 0 the real labels."""
    N = len(X)
    m = N - n
    g = exact_graph(X, max(KS)).idx
    Z = permutation_labels(n, m, perms, rng)  # 1 = baseline
    Cz = 1.0 - Z
    out: dict[str, np.ndarray] = {}
    cur = np.zeros((N, perms + 1), np.float32)  # current neighbours so far
    for j in range(max(KS)):
        cur += Cz[g[:, j]]
        k = j + 1
        if k not in KS:
            continue
        for t in sorted({k, int(np.ceil(0.9 * k))}):
            out[f"new{k}_{t}"] = (Cz * (cur >= t)).sum(axis=0)
            out[f"gone{k}_{t}"] = (Z * (cur <= k - t)).sum(axis=0)
        out[f"mix{k}"] = (Cz * cur).sum(axis=0) + (Z * (k - cur)).sum(axis=0)
        out[f"cc{k}"] = (Cz * cur).sum(axis=0)  # one-sided: current rows' current neighbours
        out[f"soft{k}"] = (Cz * np.maximum(cur - np.ceil(0.7 * k), 0)).sum(axis=0)
        out[f"klr{k}"] = (Cz * np.log((cur + 0.5) / (k - cur + 0.5))).sum(axis=0)
    # reciprocal neighbours: pairs (i, j) with j among i's k nearest and i among j's
    for k in (10, 20):
        gk = g[:, :k]
        mutual = (g[gk][:, :, :k] == np.arange(N)[:, None, None]).any(axis=2)  # (N, k)
        both = np.zeros((N, perms + 1), np.float32)
        for j in range(k):
            both += mutual[:, j:j + 1] * Cz[gk[:, j]]
        out[f"mut{k}"] = (Cz * both).sum(axis=0)
        out[f"mutnew{k}"] = (Cz * (both >= np.maximum(1, np.ceil(0.9 * mutual.sum(axis=1,
                             keepdims=True))))).sum(axis=0)
    # the same new-content count on neighbours found in the first principal components
    Xc0 = X - X.mean(axis=0)
    vals0, vecs0 = np.linalg.eigh(Xc0.T.astype(np.float64) @ Xc0 / (N - 1))
    for d in PCA_GRAPHS:
        P = (Xc0 @ vecs0[:, np.argsort(vals0)[::-1][:d]]).astype(np.float32)
        gp = exact_graph(P, 20).idx
        curp = np.zeros((N, perms + 1), np.float32)
        for j in range(20):
            curp += Cz[gp[:, j]]
        out[f"pca{d}new20_18"] = (Cz * (curp >= 18)).sum(axis=0)
        out[f"pca{d}cc20"] = (Cz * curp).sum(axis=0)
    p0 = m / N
    for R in REGIONS:
        lab = kmeans_regions(X, R, np.random.default_rng(int(rng.integers(1 << 30))))
        onehot = np.zeros((R, N), np.float32)
        onehot[lab, np.arange(N)] = 1.0
        tot = onehot.sum(axis=1)[:, None]
        cc = onehot @ Cz
        e = tot * p0
        out[f"chi{R}"] = ((cc - e) ** 2 / np.maximum(e, 1e-9)).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = cc / np.maximum(tot, 1)
            llr = np.where(cc > 0, cc * np.log(np.maximum(q, 1e-300) / p0), 0) + \
                np.where(tot - cc > 0, (tot - cc) * np.log(np.maximum(1 - q, 1e-300) / (1 - p0)), 0)
        out[f"regup{R}"] = np.where(q > p0, llr, 0.0).max(axis=0)
    Xc = X - X.mean(axis=0)
    vals, vecs = np.linalg.eigh(Xc.T.astype(np.float64) @ Xc / (N - 1))
    order = np.argsort(vals)[::-1]
    for r in COMPONENTS:
        W = (Xc @ (vecs[:, order[:r]] / np.sqrt(np.maximum(vals[order[:r]], 1e-12)))
             ).astype(np.float32)
        sc = Cz.T @ W
        diff = sc / m - (W.sum(axis=0) - sc) / n
        out[f"hot{r}"] = (diff ** 2).sum(axis=1)
    sc = Cz.T @ X
    diff = sc / m - (X.sum(axis=0) - sc) / n
    out["meandiff"] = (diff ** 2).sum(axis=1)
    return out


def ranks(s: np.ndarray) -> np.ndarray:
    """Each column's permutation p-value: #{columns at least as large} / (P + 1)."""
    tol = 1e-9 * np.maximum(np.abs(s), 1e-300)
    return (s.size - np.searchsorted(np.sort(s), s - tol, side="left")) / s.size


def min_p(rank_rows: list[np.ndarray]) -> float:
    s = -np.min(np.stack(rank_rows), axis=0)
    return float((1 + np.sum(s[1:] >= s[0] - 1e-12)) / s.size)


def fisher(rank_rows: list[np.ndarray]) -> float:
    """Fisher's sum of -log p over the components, calibrated on the same relabellings."""
    s = -np.log(np.stack(rank_rows)).sum(axis=0)
    return float((1 + np.sum(s[1:] >= s[0] - 1e-12)) / s.size)


def cauchy(rank_rows: list[np.ndarray]) -> float:
    """The Cauchy combination (mean of tan((0.5 - p) pi)), calibrated the same way."""
    s = np.tan((0.5 - np.minimum(np.stack(rank_rows), 1 - 1e-9)) * np.pi).mean(axis=0)
    return float((1 + np.sum(s[1:] >= s[0] - 1e-12)) / s.size)


COMBINE = {"min-p": min_p, "fisher": fisher, "cauchy": cauchy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="drift_pool")
    ap.add_argument("--data-dir", default=None, help="folder of the cached sets (bench/data)")
    ap.add_argument("--side", type=int, default=1200)
    ap.add_argument("--null", type=int, default=40)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--scenarios", default="null,new5,gone5,mix")
    ap.add_argument("--combos", default=",".join(DEFAULT_COMBOS))
    ap.add_argument("--save", default=None, help="pickle of every statistic's p-values")
    a = ap.parse_args()
    from threadpoolctl import threadpool_limits

    pool = Pool(a.set, a.data_dir)
    scenarios = a.scenarios.split(",")
    print(f"{a.set}: {len(pool.X):,} rows, {len(pool.names)} categories; {a.side:,} rows per "
          f"side; {a.null} null replicates, {a.reps} per shift; {a.perms} relabellings")
    got: dict[str, dict[str, list[np.ndarray]]] = {}
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for kind in scenarios:
            for s in range(a.null if kind == "null" else a.reps):
                if kind == "gone5":
                    c, b = pool.draw("new5", s, a.side)
                else:
                    b, c = pool.draw(kind, s, a.side)
                X = np.concatenate([pool.X[b], pool.X[c]]).astype(np.float32)
                for name, v in statistics(X, len(b), a.perms, np.random.default_rng(s)).items():
                    got.setdefault(name, {}).setdefault(kind, []).append(ranks(v))
    if a.save:  # every statistic's permutation p-values, for combinations tried later
        import pickle

        with open(a.save, "wb") as f:
            pickle.dump(got, f)
    head = f"| statistic | {' | '.join(scenarios)} |"
    print(f"\n{time.perf_counter() - t0:.0f} s\n\n{head}\n|" + "---|" * (len(scenarios) + 1))
    rows = [(name, {k: [r[0] for r in v] for k, v in by.items()}) for name, by in got.items()]
    for combo in a.combos.split(","):
        parts = combo.split("+")
        for how, fn in COMBINE.items():
            rows.append((f"{how}({combo})", {
                k: [fn([got[p][k][i] for p in parts]) for i in range(len(got[parts[0]][k]))]
                for k in scenarios}))
    for name, by in rows:
        print(f"| {name} | " + " | ".join(f"{np.mean(np.array(by[k]) < ALPHA):.2f}"
                                          for k in scenarios) + " |")
    print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
