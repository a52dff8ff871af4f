"""False-alarm rate and power of every drift method on real sentence embeddings.

    python bench/drift_power.py                       # drift_pool, 100 null splits, 20 per shift
    python bench/drift_power.py --set packages10 --null 200 --reps 40
    python bench/drift_power.py --methods knn,mmd --scenarios null,new5

Data: ``bench/realdata.py`` sets (all-MiniLM-L6-v2 embeddings of Debian package
descriptions with their Section as the category; ``drift_pool`` has 16 Sections
of up to 400 rows). Every replicate re-draws both sides (``--side`` rows each,
1,200 by default) with its own seed; replicate ``s`` holds out category
``s mod n_categories``, so the held-out topic rotates through all of them:

- ``null``: both sides are random rows of the other categories (no drift): the
  share of replicates flagged at alpha 0.05 is the false-alarm rate;
- ``new5`` / ``new20`` / ``new17``: the current side has 5 % / 20 % / 17 % rows of
  the held-out category, the rest as in ``null``: a new topic;
- ``mix``: no new topic; on the current side three other categories are drawn
  at twice their share: the mix of known content moved.

Methods run through :func:`duckcluster.drift.run_method` with their defaults
(what ``embedding_drift`` does), plus peers written here: ``hand_knn`` (the
kNN two-sample test one writes by hand: exact 10 nearest neighbours, count of
same-side pairs, permutation p-value), ``mmd_heldout`` (MMD with the bandwidth
chosen on a held-out half of each side, tested on the other half) and the
``knn`` method's four components alone (new, vanished, regions, global; each
has its own exact p-value in ``details``). ``bench/drift_candidates.py`` compares
the candidate statistics ``knn`` was chosen from. Every p-value is an exact permutation or exact test p-value. The
table prints, per method, the share of replicates with p < 0.05 and, for the
false-alarm rate, a 95 % Wilson interval; then the mean seconds per call (2,400
rows) with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from duckcluster.drift import DRIFT_METHODS, run_method  # noqa: E402

ALPHA = 0.05
SCENARIOS = ("null", "new5", "new20", "mix")
FRACTIONS = {"new5": 0.05, "new17": 0.17, "new20": 0.20}


class Pool:
    """Rows and categories of one real set."""

    def __init__(self, name: str, data_dir: str | None):
        from bench.realdata import load

        self.ids, self.texts, cats, X = load(name, data_dir)
        self.names, self.y = np.unique(cats.astype(str), return_inverse=True)
        self.X = X / np.linalg.norm(X, axis=1, keepdims=True)
        self.name = name

    def separability(self, k: int = 10) -> np.ndarray:
        """(n_categories,) per category, the mean share of its rows' ``k`` nearest other
        rows (in the whole set) that share the row's category: how much a held-out
        category stands apart from the rest."""
        X = self.X.astype(np.float32)
        same = np.empty(len(X))
        for s in range(0, len(X), 2048):
            S = X[s:s + 2048] @ X.T
            S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = -np.inf
            nb = np.argpartition(-S, k, axis=1)[:, :k]
            same[s:s + 2048] = (self.y[nb] == self.y[s:s + 2048, None]).mean(axis=1)
        return np.array([same[self.y == c].mean() for c in range(len(self.names))])

    def draw(self, kind: str, s: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers of (baseline, current) for replicate ``s`` of scenario ``kind``."""
        rng = np.random.default_rng([s, 2026])
        held = s % len(self.names)
        others = rng.permutation(np.flatnonzero(self.y != held))
        if kind == "null":
            return others[:n], others[n:2 * n]
        if kind == "mix":
            up = rng.choice([c for c in range(len(self.names)) if c != held], 3, replace=False)
            pool = others[n:]
            w = np.where(np.isin(self.y[pool], up), 2.0, 1.0)
            return others[:n], rng.choice(pool, n, replace=False, p=w / w.sum())
        k = round(n * FRACTIONS[kind])
        new = rng.permutation(np.flatnonzero(self.y == held))[:k]
        return others[:n], np.concatenate([others[n:2 * n - k], new])


# -- peers written by hand ----------------------------------------------------------------

def hand_knn(B: np.ndarray, C: np.ndarray, seed: int, k: int = 10, n_perm: int = 500) -> float:
    """Schilling's test by hand: exact kNN of the pooled rows once, then permuted labels."""
    X = np.concatenate([B, C]).astype(np.float32)
    N, n = len(X), len(B)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nb = np.argpartition(-S, k, axis=1)[:, :k]
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_perm + 1, N), dtype=bool)
    labels[0, n:] = True
    for p in range(1, n_perm + 1):
        labels[p, rng.permutation(N)[:N - n]] = True
    same = (labels[:, nb] == labels[:, :, None]).sum(axis=(1, 2))
    return float((1 + np.sum(same[1:] >= same[0])) / (n_perm + 1))


def mmd_heldout(B: np.ndarray, C: np.ndarray, seed: int, n_perm: int = 500) -> float:
    """MMD whose RBF bandwidth maximizes the permutation z-score on one half of each
    side; the p-value comes from the other half (independent of the choice)."""
    from duckcluster.drift._kernel import median_distance, permutation_test, sq_distances

    rng = np.random.default_rng(seed)
    pb, pc = rng.permutation(len(B)), rng.permutation(len(C))
    hb, hc = len(B) // 2, len(C) // 2
    sel = np.concatenate([B[pb[:hb]], C[pc[:hc]]]).astype(np.float64)
    tst = np.concatenate([B[pb[hb:]], C[pc[hc:]]]).astype(np.float64)
    med = median_distance(sel, rng)
    D_sel = sq_distances(sel, sel)
    best, best_z = 1.0, -np.inf
    for scale in (0.25, 0.5, 1.0, 2.0):
        K = np.exp(-D_sel / (2 * (scale * med) ** 2))
        from duckcluster.drift._base import permutation_labels

        Z = permutation_labels(hb, hc, 100, rng)
        stats = _mmd_columns(K, Z)
        z = (stats[0] - stats[1:].mean()) / (stats[1:].std() + 1e-12)
        if z > best_z:
            best, best_z = scale, z
    K = np.exp(-sq_distances(tst, tst) / (2 * (best * med) ** 2))
    return permutation_test(K, len(B) - hb, n_perm, rng)[1]


def _mmd_columns(K: np.ndarray, Z: np.ndarray) -> np.ndarray:
    Zb = Z.astype(np.float64)
    Zc = 1.0 - Zb
    n, m = Zb.sum(axis=0), Zc.sum(axis=0)
    d = np.diag(K)
    Rb = K @ Zb
    sbb = (Zb * Rb).sum(axis=0) - Zb.T @ d
    sbc = (Zc * Rb).sum(axis=0)
    scc = Zc.T @ K.sum(axis=1) - sbc - Zc.T @ d
    return sbb / (n * (n - 1)) + scc / (m * (m - 1)) - 2 * sbc / (n * m)


PEERS = {"hand_knn": hand_knn, "mmd_heldout": mmd_heldout}
COMPONENT_ROWS = ("knn:new", "knn:vanished", "knn:regions", "knn:global")


def p_values(pool: Pool, method: str, kind: str, s: int, n: int,
             params: dict | None) -> dict[str, float]:
    b, c = pool.draw(kind, s, n)
    B, C = pool.X[b], pool.X[c]
    if method in PEERS:
        return {method: PEERS[method](B, C, s)}
    r = run_method(method, B, C, params, seed=s)
    out = {method: r.p_value}
    if method == "knn" and not params:
        out.update({f"knn:{k}": v for k, v in r.details["component_p_values"].items()})
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="drift_pool")
    ap.add_argument("--data-dir", default=None, help="folder of the cached sets (bench/data)")
    ap.add_argument("--side", type=int, default=1200, help="rows per side")
    ap.add_argument("--null", type=int, default=100, help="null replicates")
    ap.add_argument("--reps", type=int, default=20, help="replicates per shift scenario")
    ap.add_argument("--methods", default=",".join([*DRIFT_METHODS, *PEERS]))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--by-category", action="store_true",
                    help="also print each shift scenario's power per held-out category, next "
                         "to how far that category stands apart (its rows' 10-NN share of "
                         "their own category)")
    ap.add_argument("--params", default=None,
                    help="JSON params for a single method, e.g. '{\"k\": 10}'")
    a = ap.parse_args()
    import json

    params = json.loads(a.params) if a.params else None
    pool = Pool(a.set, a.data_dir)
    methods = a.methods.split(",")
    scenarios = a.scenarios.split(",")
    print(f"{a.set}: {len(pool.X):,} rows, {len(pool.names)} categories; {a.side:,} rows per "
          f"side; {a.null} null replicates, {a.reps} per shift; alpha {ALPHA}")
    results: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for method in methods:
        for kind in scenarios:
            reps = a.null if kind == "null" else a.reps
            for s in range(reps):
                t = time.perf_counter()
                for name, p in p_values(pool, method, kind, s, a.side, params).items():
                    results.setdefault(name, {}).setdefault(kind, []).append(p)
                seconds.setdefault(method, []).append(time.perf_counter() - t)
        print(f"  {method} done ({np.mean(seconds[method]):.2f} s per call)", flush=True)
    head = f"| method | {' | '.join(scenarios)} | s per call |"
    print("\n" + head + "\n|" + "---|" * (len(scenarios) + 2))
    for name, by in results.items():
        cells = []
        for kind in scenarios:
            ps = np.array(by.get(kind, []))
            hits = int((ps < ALPHA).sum())
            if kind == "null":
                lo, hi = wilson(hits, ps.size)
                cells.append(f"{hits / max(ps.size, 1):.2f} ({lo:.2f}-{hi:.2f})")
            else:
                cells.append(f"{hits / max(ps.size, 1):.2f}")
        secs = f"{np.mean(seconds[name]):.2f}" if name in seconds else ""
        print(f"| {name} | {' | '.join(cells)} | {secs} |")
    if a.by_category:
        by_category(pool, results, scenarios, a.null, a.reps)
    print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def by_category(pool: Pool, results: dict, scenarios: list[str], n_null: int, reps: int) -> None:
    """Power per held-out category (replicate s holds out s mod n), most separable first,
    and power over the categories above / below the median separability."""
    sep = pool.separability()
    order = np.argsort(-sep)
    shifts = [k for k in scenarios if k != "null"]
    names = [n for n in results if not n.startswith("knn:")]
    for kind in shifts:
        held = np.arange(reps) % len(pool.names)
        print(f"\n{kind}: power per held-out category (10-NN same-category share)")
        print("| category | separability | reps | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for c in order:
            sel = held == c
            if not sel.any():
                continue
            cells = [f"{(np.array(results[n][kind])[sel] < ALPHA).mean():.2f}" for n in names]
            print(f"| {pool.names[c]} | {sep[c]:.2f} | {int(sel.sum())} | {' | '.join(cells)} |")
        med = np.median(sep)
        for label, mask in (("above", sep[held] >= med), ("below", sep[held] < med)):
            cells = [f"{(np.array(results[n][kind])[mask] < ALPHA).mean():.2f}" for n in names]
            print(f"| separability {label} the median {med:.2f} | | {int(mask.sum())} | "
                  f"{' | '.join(cells)} |")


if __name__ == "__main__":
    main()
