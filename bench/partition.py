"""Per-partition clustering of a definition (issue 15 item 8) on real text embeddings.

    python -m bench.partition [--sets docstrings8,packages10] [--algorithm auto]
                              [--rows 2000] [--json out.json]

Real sets (``bench/realdata.py``, all-MiniLM-L6-v2, known categories) stacked into one
table, each set a partition (``partition_by := 'dataset'``): two kinds of text a tenant
column would separate. Per set, in the same run:

- **partitioned**: one definition with ``partition_by``;
- **separate**: one definition per set (a query source filtering it), the peer;
- **together**: one definition over all rows, no partition.

Figures: ARI of each set's members against its categories (partitioned vs together),
whether the partitioned run equals the separate runs (ARI 1.0 between them: same seed,
same rows), the share of "together" clusters that mix the two sets, and the partitioned
run's time against the separate runs' total (the partition loop's overhead), after one
warm-up run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from bench._common import Row, ari, connect, emit, load_now, verdict


def _table(con, sets: list[str], rows: int) -> dict[str, np.ndarray]:
    from bench.realdata import load

    ids, cats, parts, mats, start = [], [], [], [], 0
    for s in sets:
        _, _, c, X = load(s)
        n = min(rows, len(c)) if rows else len(c)
        ids.append(np.arange(start, start + n))
        cats += list(c[:n])
        parts += [s] * n
        mats.append(np.asarray(X[:n], dtype=np.float32))
        start += n
    X = np.vstack(mats)
    con.register("__rows", pa.table({
        "id": pa.array(np.concatenate(ids)), "dataset": pa.array(parts, pa.string()),
        "category": pa.array(cats, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))
    con.execute("CREATE OR REPLACE TABLE docs AS SELECT id, dataset, category, "
                f"CAST(embedding AS FLOAT[{X.shape[1]}]) AS embedding FROM __rows")
    con.unregister("__rows")
    return {s: np.asarray(i) for s, i in zip(sets, ids)}


def _run(con, name: str, source: str, algo: str, extra: str = "") -> float:
    con.execute(f"SELECT cluster_create('{name}', source := '{source}', "
                f"embedding := 'embedding', id := 'id', algorithm := '{algo}'{extra}, "
                "\"replace\" := true)").fetchall()
    t = time.perf_counter()
    con.execute(f"SELECT cluster_execute('{name}')").fetchall()
    return time.perf_counter() - t


def _labels(con, name: str, where: str = "") -> dict[int, tuple[int, str]]:
    return {int(i): (int(c), cat) for i, c, cat in con.execute(
        f"SELECT m.id, m.cluster_id, d.category FROM cluster_members('{name}') m "
        f"JOIN docs d ON d.id = m.id {where}").fetchall()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="docstrings8,packages10")
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument("--rows", type=int, default=2000, help="rows per set (0: all)")
    ap.add_argument("--json")
    a = ap.parse_args()
    sets = a.sets.split(",")
    con = connect()
    ids = _table(con, sets, a.rows)
    # warm-up (imports, numba compilation): the first run of a process pays them
    _run(con, "warm", f"(SELECT * FROM docs WHERE dataset = ''{sets[0]}'')", a.algorithm)
    t_part = _run(con, "parts", "docs", a.algorithm, ", partition_by := 'dataset'")
    t_sep = {s: _run(con, f"only_{s}", f"(SELECT * FROM docs WHERE dataset = ''{s}'')",
                     a.algorithm) for s in sets}
    t_all = _run(con, "together", "docs", a.algorithm)
    part, together = _labels(con, "parts"), _labels(con, "together")
    mixed = con.execute("SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0.0 END) FROM (SELECT "
                        "m.cluster_id, count(DISTINCT d.dataset) AS n FROM "
                        "cluster_members('together') m JOIN docs d ON d.id = m.id WHERE "
                        "m.cluster_id >= 0 GROUP BY ALL)").fetchall()[0][0]
    rows = []
    for s in sets:
        sep = _labels(con, f"only_{s}")
        keys = [int(i) for i in ids[s]]
        cats = [part[i][1] for i in keys]
        a_part = ari(np.array(cats), np.array([part[i][0] for i in keys]))
        a_all = ari(np.array(cats), np.array([together[i][0] for i in keys]))
        same = ari(np.array([part[i][0] for i in keys]), np.array([sep[i][0] for i in keys]))
        rows.append(Row(
            workload=f"{a.algorithm} per partition, set {s}", rows=len(keys),
            duckcluster=None, peers={},
            ratio=f"ARI {a_part:.3f} partitioned vs {a_all:.3f} one clustering of all sets",
            quality=f"partitioned = separate definition: ARI {same:.3f}",
            target="partitioned = separate (ARI 1.0)", verdict=verdict(same > 0.999)))
    rows.append(Row(
        workload=f"{a.algorithm} partitioned run time", rows=sum(len(v) for v in ids.values()),
        duckcluster=t_part, peers={"separate definitions (sum)": sum(t_sep.values()),
                                   "one unpartitioned run": t_all},
        ratio=f"{t_part / sum(t_sep.values()):.2f}x the separate runs' total",
        quality=f"{mixed:.0%} of the unpartitioned run's clusters mix sets",
        notes=load_now()))
    emit(rows, a.json)


if __name__ == "__main__":
    main()
