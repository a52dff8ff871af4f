"""The default drift test (``knn``) at scale: 50k to 1M rows per side x 384, all rows.

    python bench/drift_scale.py                          # 100k and 1M per side, on arrays
    python bench/drift_scale.py --rows 50000 --sql       # also end to end from SQL
    python bench/drift_scale.py --rows 100000 --peers faiss64,faiss384,nndescent

Data: rows like real sentence embeddings: ``bench/realdata.py``'s ``drift_pool``
(all-MiniLM-L6-v2 vectors of Debian package descriptions, 16 Sections) upsampled
SMOTE-style within each Section (each row a seeded point between a real row and
one of its 10 nearest rows of the same Section, renormalized; the
``bench/auto_scale.py`` recipe), so the neighbour structure is the real set's,
not isotropic noise. The baseline comes from 15 Sections, the current side has
5 % rows of the 16th (a new topic). Each size runs in its own process (a clean
peak RSS, ``ru_maxrss``), numba kernels warmed on 20,000 rows first.

Printed per size: the ``knn`` test on arrays (wall, CPU of all threads, peak
RSS, p-value, the graph's recall from ``details``: the share of the exact
full-space 20 nearest neighbours of 64 seeded rows it found); the graph alone
(``pooled_graph``, wall and CPU) and, in the same process, the peers asked for,
each timed and its recall measured on the same 256 rows against the same exact
neighbours (after the SQL run: faiss's and numba's spinning thread pools would count
in its CPU time): ``faiss64`` (faiss IVF-flat on the same 64 principal components, as
many cells, 8 probes per query), ``faiss384`` (IVF-flat on the full rows),
``nndescent`` (pynndescent, 20 neighbours, its defaults). With ``--sql`` the rows
also go to a DuckDB file and ``embedding_drift`` runs end to end from SQL, next
to the floor: reading the two sides' embeddings from that file into numpy alone
(``SELECT embedding ... -> Arrow -> float32``). The load average is printed
before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

K = 20
TRUTH_ROWS = 256


def sides(n: int, seed: int = 0, new_share: float = 0.05,
          base: str = "drift_pool") -> tuple[np.ndarray, np.ndarray]:
    """(baseline, current), ``n`` rows each, SMOTE-upsampled from ``base``: the current
    side has ``new_share`` of its rows from a Section the baseline never has."""
    from bench._common import category_neighbours, smote_rows
    from bench.realdata import load

    _ids, _texts, cats, X0 = load(base)
    X0 = (X0 / np.linalg.norm(X0, axis=1, keepdims=True)).astype(np.float32)
    y0 = np.unique(cats.astype(str), return_inverse=True)[1]
    near = category_neighbours(X0, y0)
    rng = np.random.default_rng(seed)
    held = 0
    old, new = np.flatnonzero(y0 != held), np.flatnonzero(y0 == held)

    def draw(rows: np.ndarray, m: int) -> np.ndarray:
        return smote_rows(X0, near, rows[rng.integers(0, rows.size, m)], rng)

    k_new = int(round(n * new_share))
    C = np.concatenate([draw(old, n - k_new), draw(new, k_new)])
    return draw(old, n), C[rng.permutation(n)]


def timed(fn, *args, **kw):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t, time.process_time() - c


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def exact_truth(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    from duckcluster.core.preprocess.layout import top_k_rows

    S = np.empty((rows.size, X.shape[0]), dtype=np.float32)
    for s in range(0, X.shape[0], 65_536):
        S[:, s:s + 65_536] = X[rows] @ X[s:s + 65_536].T
    S[np.arange(rows.size), rows] = -np.inf
    return top_k_rows(S, K)[0]


def recall(idx: np.ndarray, rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(a, b).size / K for a, b in zip(idx[rows], truth)]))


def peer_graph(name: str, X: np.ndarray, seed: int) -> np.ndarray:
    """(N, K) neighbours of every pooled row (itself excluded) by a peer library."""
    N = X.shape[0]
    if name == "nndescent":
        from pynndescent import NNDescent

        index = NNDescent(X, n_neighbors=K + 1, metric="euclidean", random_state=seed,
                          n_jobs=2, low_memory=True)
        I = index.neighbor_graph[0]
    else:
        import faiss

        from duckcluster.drift._graph import CELL_ROWS, PROBES, REDUCED_DIMS, principal_axes

        faiss.omp_set_num_threads(2)
        rng = np.random.default_rng(seed)
        Z = X if name == "faiss384" else \
            principal_axes(X, REDUCED_DIMS, rng).project(X, REDUCED_DIMS)
        nlist = max(2, N // CELL_ROWS)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(Z.shape[1]), Z.shape[1], nlist)
        index.cp.niter = 6
        index.train(Z[rng.choice(N, min(N, 32 * nlist), replace=False)])
        index.add(Z)
        index.nprobe = PROBES
        I = index.search(Z, K + 1)[1]
    I = np.where(I[:, :1] == np.arange(N)[:, None], I[:, 1:], I[:, :K])
    return np.where(I < 0, np.arange(N)[:, None], I)


def write_db(path: str, B: np.ndarray, C: np.ndarray) -> None:
    import pyarrow as pa

    import duckcluster

    con = duckcluster.connect(path)
    d = B.shape[1]
    for side, X in ((0, B), (1, C)):
        for s in range(0, len(X), 200_000):
            part = X[s:s + 200_000]
            emb = pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), d)
            con.register("__x", pa.table({"side": np.full(len(part), side, dtype=np.int8),
                                          "embedding": emb}))
            if side == 0 and s == 0:
                con.execute(f"CREATE TABLE emb AS SELECT side, CAST(embedding AS FLOAT[{d}]) "
                            "AS embedding FROM __x")
            else:
                con.execute("INSERT INTO emb SELECT side, embedding FROM __x")
            con.unregister("__x")
    con.close()


def one(n: int, a) -> dict:
    from duckcluster.drift import run_method
    from duckcluster.drift._graph import pooled_graph

    out: dict = {"rows": n}
    (B, C), out["data_s"], _ = timed(sides, n)
    w0, w1 = sides(10_000, seed=1)
    run_method("knn", w0, w1, {"n_permutations": 20})  # numba kernels compiled
    out["load_before"] = os.getloadavg()[0]
    r, out["knn_wall"], out["knn_cpu"] = timed(run_method, "knn", B, C)
    out["knn_rss_gb"] = rss_gb()
    out.update(p=r.p_value, recall_details=r.details.get("recall"),
               search=r.details.get("search", r.details.get("neighbours")),
               tested=f"{r.details['n_tested_baseline']} + {r.details['n_tested_current']}")
    X = np.concatenate([B, C])
    rows = np.sort(np.random.default_rng(5).choice(len(X), TRUTH_ROWS, replace=False))
    truth = exact_truth(X, rows)
    if a.graph:
        g, out["graph_wall"], out["graph_cpu"] = timed(pooled_graph, X, K, 1)
        out["graph_recall"] = recall(g.idx, rows, truth)
    if a.sql:
        import tempfile

        import duckcluster

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scale.duckdb")
            _, out["db_s"], _ = timed(write_db, path, B, C)
            del B, C
            con = duckcluster.connect(path, read_only=True)
            q = ("SELECT p_value, details FROM embedding_drift('(SELECT embedding FROM emb "
                 "WHERE side = 0)', '(SELECT embedding FROM emb WHERE side = 1)', 'embedding')")
            row, out["sql_wall"], out["sql_cpu"] = timed(lambda: con.sql(q).fetchall()[0])
            out["sql_p"] = row[0]

            def floor() -> int:
                got = 0
                for side in (0, 1):
                    t = con.sql(f"SELECT embedding FROM emb WHERE side = {side}").to_arrow_table()
                    col = t.column(0).combine_chunks()
                    got += np.asarray(col.values, dtype=np.float32).reshape(len(col), -1).shape[0]
                return got

            _, out["read_wall"], out["read_cpu"] = timed(floor)
            con.close()
    for name in filter(None, a.peers.split(",")):
        idx, wall, cpu = timed(peer_graph, name, X, 1)
        out[f"peer:{name}"] = {"wall": wall, "cpu": cpu, "recall": recall(idx, rows, truth)}
    out["load_after"] = os.getloadavg()[0]
    return out


def show(o: dict) -> None:
    n = o["rows"]
    print(f"\n{n:,} vs {n:,} x 384 (5 % new topic); load {o['load_before']:.1f} -> "
          f"{o['load_after']:.1f} (2 cores); data built in {o['data_s']:.0f} s")
    print(f"  knn on arrays: {o['knn_wall']:.1f} s wall, {o['knn_cpu']:.1f} s CPU, peak RSS "
          f"{o['knn_rss_gb']:.2f} GB, p = {o['p']:.4f}, rows tested {o['tested']}, "
          f"recall (details, 64 rows) {o['recall_details']}")
    print(f"    {o['search']}")
    if "graph_wall" in o:
        print(f"  its graph alone: {o['graph_wall']:.1f} s wall, {o['graph_cpu']:.1f} s CPU, "
              f"recall {o['graph_recall']:.3f} ({TRUTH_ROWS} rows, exact full-space {K}-NN)")
    for key, v in o.items():
        if key.startswith("peer:"):
            print(f"  peer {key[5:]}: {v['wall']:.1f} s wall, {v['cpu']:.1f} s CPU, recall "
                  f"{v['recall']:.3f}" + (f"; knn graph / peer wall {o['graph_wall'] / v['wall']:.2f}"
                                          if "graph_wall" in o else ""))
    if "sql_wall" in o:
        print(f"  from SQL (embedding_drift, default knn): {o['sql_wall']:.1f} s wall, "
              f"{o['sql_cpu']:.1f} s CPU, p = {o['sql_p']:.4f}; reading both sides' "
              f"embeddings alone: {o['read_wall']:.1f} s wall, {o['read_cpu']:.1f} s CPU "
              f"(file written in {o['db_s']:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="100000,1000000", help="rows per side, comma-separated")
    ap.add_argument("--peers", default="faiss64", help="faiss64, faiss384, nndescent")
    ap.add_argument("--sql", action="store_true", help="also end to end from a DuckDB file")
    ap.add_argument("--no-graph", dest="graph", action="store_false",
                    help="skip timing the graph alone (and the peers' comparison with it)")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a)))
        return
    for n in (int(x) for x in a.rows.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), "--peers", a.peers]
        cmd += (["--sql"] if a.sql else []) + ([] if a.graph else ["--no-graph"])
        res = subprocess.run(cmd, capture_output=True,
                             text=True)
        if res.returncode:
            print(res.stderr[-3000:])
            continue
        show(json.loads(res.stdout.strip().splitlines()[-1]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
