"""What every workload shares: seeded data, DuckDB loading, timing and result rows.

Data: ``k`` clusters on the unit sphere in ``d`` dimensions with varied sizes
(Dirichlet weights) and varied spreads, the same for a given seed whatever the
chunking; generated chunk by chunk so 1M x 384 rows need no more than the
result (1.5 GB).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

D = 384
K = 30
SEED = 0
#: Row counts of the workloads per scale: "smoke" is what CI runs once.
SCALES = {"smoke": 20_000, "full": None}


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    rows: int
    duckcluster: float | None  # seconds (median) or None when not run
    peers: dict[str, float | None] = field(default_factory=dict)  # name -> seconds
    ratio: str = ""  # how duckcluster compares, with the peer it is compared to
    quality: str = ""
    target: str = ""
    verdict: str = ""  # met / not met / n/a
    notes: str = ""


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def markdown(rows: list[Row]) -> str:
    head = ("| workload | rows | duckcluster | peers | ratio | quality | target | verdict |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = []
    for r in rows:
        peers = "; ".join(f"{k} {fmt_s(v)}" for k, v in r.peers.items()) or "—"
        body.append(f"| {r.workload} | {r.rows:,} | {fmt_s(r.duckcluster)} | {peers} | "
                    f"{r.ratio or '—'} | {r.quality or '—'} | {r.target or '—'} | "
                    f"{r.verdict or '—'} |")
    notes = [f"- **{r.workload}**: {r.notes}" for r in rows if r.notes]
    return head + "\n".join(body) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls and the last call's result."""
    times, out = [], None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def make_clusters(n: int, d: int = D, k: int = K, seed: int = SEED,
                  chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit rows (float32) around ``k`` random centres; returns (X, y).

    Cluster weights come from a Dirichlet(2) draw (sizes vary about 10x), and
    each cluster has its own spread (per-dimension noise 0.025-0.06, so members
    sit at cosine 0.55-0.85 from their centre).
    """
    X = np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for start, Xc, yc in iter_clusters(n, d, k, seed, chunk):
        X[start:start + len(yc)] = Xc
        y[start:start + len(yc)] = yc
    return X, y


def iter_clusters(n: int, d: int = D, k: int = K, seed: int = SEED,
                  chunk: int = 200_000) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The rows of :func:`make_clusters` chunk by chunk: (start, X, y)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(k, 2.0))
    spread = rng.uniform(0.025, 0.06, size=k).astype(np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        crng = np.random.default_rng([seed, start])
        yc = crng.choice(k, size=m, p=weights)
        Xc = C[yc] + spread[yc, None] * crng.standard_normal((m, d), dtype=np.float32)
        Xc /= np.linalg.norm(Xc, axis=1, keepdims=True)
        yield start, Xc, yc


def arrow_table(X: np.ndarray, start: int = 0) -> pa.Table:
    n, d = X.shape
    return pa.table({"doc_id": np.arange(start, start + n, dtype=np.int64),
                     "embedding": pa.FixedSizeListArray.from_arrays(
                         pa.array(np.ascontiguousarray(X).ravel()), d)})


def load_table(con, name: str, X: np.ndarray) -> None:
    """Create table ``name`` (doc_id BIGINT, embedding FLOAT[d]) from rows of X."""
    d = X.shape[1]
    con.register("__bench_rows", arrow_table(X))
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT doc_id, "
                f"CAST(embedding AS FLOAT[{d}]) AS embedding FROM __bench_rows")
    con.unregister("__bench_rows")


def scratch_dir() -> str:
    """A temporary folder removed when the process exits (datasets are gigabytes)."""
    import atexit
    import shutil

    path = tempfile.mkdtemp(prefix="duckcluster-bench-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def connect(path: str | None = None):
    import duckcluster

    return duckcluster.connect(path or os.path.join(scratch_dir(), "bench.duckdb"))


def ari(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def members_labels(con, name: str) -> np.ndarray:
    """cluster_id of every member of the latest run, in doc_id order."""
    tbl = con.sql(f"SELECT cluster_id FROM cluster_members('{name}') "
                  "ORDER BY CAST(id AS BIGINT)").to_arrow_table()
    return tbl.column(0).to_numpy()


def machine_note() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")


def load_now() -> str:
    """The 1-minute load average and the runnable tasks right now (Linux), for a note."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = f.read().split()[3].split("/")[0]
        return f"load {load:.2f} ({running} runnable)"
    except OSError:
        return f"load {load:.2f}"


class BackgroundLoad:
    """A fixed load: one process running a one-thread numpy matmul loop (one core busy),
    started by the benchmark for a block and stopped after it.

    >>> with BackgroundLoad():  # doctest: +SKIP
    ...     timed_work()
    """

    CODE = ("import numpy as np\n"
            "a = np.random.default_rng(0).random((512, 512), dtype=np.float32)\n"
            "while True:\n    a @ a\n")

    def __init__(self, warmup: float = 1.0) -> None:
        self.warmup = warmup
        self.proc = None

    def __enter__(self) -> "BackgroundLoad":
        import subprocess

        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], env=env)
        time.sleep(self.warmup)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, the functions taking turns ``repeat`` times (so
    a change of load hits every one of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def emit(rows: list[Row], json_path: str | None) -> None:
    """Print the rows as Markdown, and write them as JSON for the runner when asked."""
    import dataclasses
    import json

    print(markdown(rows), flush=True)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f)


def rows_from_json(path: str) -> list[Row]:
    import json

    with open(path, encoding="utf-8") as f:
        return [Row(**d) for d in json.load(f)]


def cli(run, rows: int, repeat: int = 3) -> None:
    """Command line of a workload script: --rows, --repeat, --json; prints its rows."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--json", help="also write the rows as JSON here (bench runner)")
    a = ap.parse_args()
    emit(run(a.rows, a.repeat), a.json)


def category_neighbours(X0: np.ndarray, y0: np.ndarray, k: int = 10) -> np.ndarray:
    """(n, k) int64: each unit row's ``k`` nearest rows (cosine) of its own category."""
    near = np.empty((len(X0), k), dtype=np.int64)
    for c in np.unique(y0):
        idx = np.flatnonzero(y0 == c)
        S = X0[idx] @ X0[idx].T
        np.fill_diagonal(S, -np.inf)
        near[idx] = idx[np.argsort(-S, axis=1)[:, :k]]
    return near


def smote_rows(X0: np.ndarray, near: np.ndarray, pick: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """SMOTE-style rows like the real ones: for each of ``pick``, a seeded point on the
    segment to one of its ``near`` rows, renormalised (float32, in blocks of 100k), so
    upsampled sets keep the real set's neighbour structure instead of making islands
    of near-copies."""
    m = len(pick)
    other = near[pick, rng.integers(0, near.shape[1], m)]
    out = np.empty((m, X0.shape[1]), dtype=np.float32)
    for s in range(0, m, 100_000):
        e = min(m, s + 100_000)
        t = rng.random((e - s, 1), dtype=np.float32)
        out[s:e] = X0[pick[s:e]] * (1 - t) + X0[other[s:e]] * t
        out[s:e] /= np.linalg.norm(out[s:e], axis=1, keepdims=True)
    return out
