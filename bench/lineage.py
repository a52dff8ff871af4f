"""Cluster identity across runs (issue 17): ids and labels kept, a new topic born, and
what the matching costs.

    python -m bench.lineage [--rows 100000] [--repeat 1] [--sets docstrings8,packages10]
                            [--trials 10] [--definitions kmeans,auto,umap+hdbscan]
    python -m bench.lineage --rows 0 --sets manpages6   # the held-out set: validation only

Real text embeddings (``bench/realdata.py``, all-MiniLM-L6-v2, known categories):

- **unchanged**: a full run, ``cluster_label``, the same full run again: share of the
  clusters that keep their id, their members and their label (target 100 %).
- **new topic**: the first run leaves one category out; then rows of that category,
  10 % of the rows already there, are added and the definition runs again: share of the
  old clusters that continue (their id is in the new run; target >= 90 %), whether the
  new category is ``born`` (born clusters whose largest category is the new one hold
  most of its rows), and the share of continued clusters that carried their label. Each category
  is held out in turn (``--trials`` of them), so the figures are not one lucky topic:
  whether a new topic can be born at all is up to the clustering.

Three definitions per set (``--definitions`` picks): k-means with the number of categories
(a fixed k must take room from the old clusters for the new one), HDBSCAN after UMAP (it
finds k itself) and ``auto``, the zero-config pipeline a user who names no algorithm gets.

- **split + merge fixture**: the synthetic fixture of the issue (one cluster split in
  two, two merged, one unchanged); the lineage must be exactly that.
- **matching cost**: k-means k = 100 on ``--rows`` synthetic 384-d rows, run twice; the
  second run's ``matching`` and ``new_topics`` stages (previous run's centroids, the member flow join,
  the optimal assignment, renumbering, carried labels) against its whole run
  (target <= 5 %). The peer is a greedy matching (each new cluster takes the most
  overlapping free old one) on the same flow matrix: the optimal assignment's price.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa

from bench._common import Row, connect, make_clusters, load_table, verdict

DEFINITIONS = {
    "kmeans": "algorithm := 'kmeans', params := {{'n_clusters': {k}}}",
    # the zero-config pipeline (issue 15): what a user who names no algorithm gets
    "auto": "algorithm := 'auto'",
    "umap+hdbscan": ("algorithm := 'hdbscan', params := {{'min_cluster_size': 25}}, "
                     "preprocessing := [{{'method': 'umap', 'n_components': 5, "
                     "'n_neighbors': 15}}]"),
}


#: Appended to every definition (``--split-new-topics``, ``--no-warm-start``: lineage options).
EXTRA = {"spec": ""}
#: Rows ``--skip`` leaves out.
SKIP: set[str] = set()


def _table(con, name: str, ids, texts, cats, X) -> None:
    con.register("__rows", pa.table({
        "id": pa.array(np.asarray(ids, dtype=np.int64)), "text": pa.array(texts, pa.string()),
        "category": pa.array(list(cats), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT id, text, category, "
                f"CAST(embedding AS FLOAT[{X.shape[1]}]) AS embedding FROM __rows")
    con.unregister("__rows")


def _run(con, name: str) -> str:
    return con.sql(f"SELECT cluster_execute('{name}')").fetchall()[0][0]


def _centroids(con, name: str, run: str) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in con.sql(
        f"SELECT cluster_id, label, label_source FROM cluster_centroids('{name}', "
        f"run_id := '{run}') WHERE hierarchy_level = 0").fetchall()}


def _members(con, name: str, run: str) -> dict[str, int]:
    return {str(i): c for i, c in con.sql(f"SELECT id, cluster_id FROM cluster_members("
                                          f"'{name}', run_id := '{run}')").fetchall()}


def unchanged(set_name: str, algo: str) -> Row:
    from bench.realdata import load

    ids, texts, cats, X = load(set_name)
    con = connect()
    try:
        _table(con, "docs", ids, texts, cats, X)
        spec = DEFINITIONS[algo].format(k=len(set(cats))) + EXTRA["spec"]
        con.sql(f"SELECT cluster_create('d', source := 'docs', embedding := 'embedding', "
                f"id := 'id', {spec})").fetchall()
        r1 = _run(con, "d")
        con.sql("SELECT cluster_label('d', text := 'text')").fetchall()
        t = time.perf_counter()
        r2 = _run(con, "d")
        secs = time.perf_counter() - t
        c1, c2 = _centroids(con, "d", r1), _centroids(con, "d", r2)
        kept_id = sum(c in c2 for c in c1) / max(len(c1), 1)
        kept_label = sum(c in c2 and c2[c][0] == c1[c][0] and c2[c][1] == "carried"
                         for c in c1) / max(len(c1), 1)
        m1, m2 = _members(con, "d", r1), _members(con, "d", r2)
        same_members = sum(m2.get(i) == c for i, c in m1.items()) / len(m1)
        matching = json.loads(con.sql(f"SELECT timings FROM duckcluster.runs WHERE run_id = "
                                      f"'{r2}'").fetchall()[0][0]).get("matching", 0.0)
    finally:
        con.close()
    ok = kept_id == 1.0 and kept_label == 1.0
    return Row(f"lineage: unchanged re-run, {set_name}, {algo}", len(ids), secs,
               quality=(f"{len(c1)} clusters: ids kept {kept_id:.0%}, labels carried "
                        f"{kept_label:.0%}, members unchanged {same_members:.1%}"),
               target="every cluster keeps id and label (100 %)", verdict=verdict(ok),
               notes=f"matching stage {matching:.3f} s of the second run")


def new_topic(set_name: str, algo: str, held_out: str) -> dict:
    from bench.realdata import load

    ids, texts, cats, X = load(set_name)
    old = cats != held_out
    n_new = int(round(0.1 * old.sum()))
    new_rows = np.flatnonzero(~old)[:n_new]
    con = connect()
    try:
        keep = np.flatnonzero(old)
        _table(con, "docs", ids[keep], [texts[i] for i in keep], cats[keep], X[keep])
        spec = DEFINITIONS[algo].format(k=len(set(cats[old]))) + EXTRA["spec"]
        spec2 = DEFINITIONS[algo].format(k=len(set(cats))) + EXTRA["spec"]
        con.sql(f"SELECT cluster_create('d', source := 'docs', embedding := 'embedding', "
                f"id := 'id', {spec})").fetchall()
        r1 = _run(con, "d")
        con.sql("SELECT cluster_label('d', text := 'text')").fetchall()
        both = np.concatenate([keep, new_rows])
        _table(con, "docs", ids[both], [texts[i] for i in both], cats[both], X[both])
        if spec2 != spec:  # a fixed k grows by the new category
            con.sql(f"SELECT cluster_create('d', source := 'docs', embedding := 'embedding', "
                    f"id := 'id', {spec2}, \"replace\" := true)").fetchall()
        t = time.perf_counter()
        r2 = _run(con, "d")
        secs = time.perf_counter() - t
        c1, c2 = _centroids(con, "d", r1), _centroids(con, "d", r2)
        events = con.sql(f"SELECT event, previous_cluster_id, cluster_id FROM "
                         f"cluster_lineage('d', run_id := '{r2}')").fetchall()
        m2 = _members(con, "d", r2)
        new_ids = {str(i) for i in ids[new_rows]}
        cat_of = {str(i): c for i, c in zip(ids[both], cats[both])}
        born = {e[2] for e in events if e[0] == "born"}
        by_cluster: dict[int, list[str]] = {}
        for i, c in m2.items():
            if c in born:
                by_cluster.setdefault(c, []).append(i)
        # born clusters whose largest category is the new one hold most of its rows
        held = 0
        for mem in by_cluster.values():
            top = max(set(cat_of[i] for i in mem), key=[cat_of[i] for i in mem].count)
            if top == held_out:
                held += sum(i in new_ids for i in mem)
        found = held >= 0.5 * len(new_ids)
        continued = [e[1] for e in events if e[0] == "continued"]
        matched = sum(c in c2 for c in c1) / max(len(c1), 1)
        carried = sum(c2[c][1] == "carried" and c2[c][0] == c1[c][0] for c in continued) \
            / max(len(continued), 1)
        counts = {k: sum(e[0] == k for e in events) for k in
                  ("continued", "born", "died", "split", "merged")}
        choices = con.sql(f"SELECT choices FROM duckcluster.runs WHERE run_id = '{r2}'"
                          ).fetchall()[0][0]
        ch = json.loads(choices) if choices else {}
        split_off = len(ch.get("new_topics", {}).get("split_off", []))
        warm = ch.get("warm_start")
        from sklearn.metrics import adjusted_rand_score

        ari = adjusted_rand_score([cat_of[i] for i in m2], list(m2.values()))
    finally:
        con.close()
    return {"matched": matched, "born": found, "carried": carried, "secs": secs,
            "n": len(both), "k": len(c1), "k2": len(c2), "events": counts,
            "split_off": split_off, "ari": ari,
            "warm": None if warm is None else bool(warm.get("used", True))}


def new_topics(set_name: str, algo: str, trials: int) -> Row:
    """:func:`new_topic` with each category held out in turn (the first ``trials``)."""
    from bench.realdata import load

    cats = sorted(set(load(set_name)[2]))[:trials]
    out = {c: new_topic(set_name, algo, c) for c in cats}
    matched = [r["matched"] for r in out.values()]
    carried = [r["carried"] for r in out.values()]
    born = [c for c, r in out.items() if r["born"]]
    ari = [r["ari"] for r in out.values()]
    warm = [r["warm"] for r in out.values() if r["warm"] is not None]
    events = {k: sum(r["events"][k] for r in out.values()) for k in next(iter(out.values()))
              ["events"]}
    ok = min(matched) >= 0.9 and len(born) == len(out) and min(carried) >= 0.9
    import sys
    print(f"{set_name} {algo}: matched {np.mean(matched):.0%} (min {min(matched):.0%}), born "
          f"{len(born)}/{len(out)}, carried {np.mean(carried):.0%}, ARI {np.mean(ari):.3f} "
          f"(min {min(ari):.3f}), warm start kept {sum(warm)}/{len(warm)}; "
          + ", ".join(f"{c} {r['matched']:.0%}{' born' if r['born'] else ''}"
                      f"{' split_off ' + str(r['split_off']) if r['split_off'] else ''}"
                      for c, r in out.items()), file=sys.stderr, flush=True)
    return Row(f"lineage: +10 % new topic, {set_name}, {algo}", max(r["n"] for r in out.values()),
               float(np.median([r["secs"] for r in out.values()])),
               quality=(f"{len(out)} held-out topics: old clusters matched {np.mean(matched):.0%} "
                        f"(min {min(matched):.0%}), new topic born in {len(born)} "
                        f"({', '.join(born) or 'none'}), labels carried {np.mean(carried):.0%} "
                        f"of continued (min {min(carried):.0%}), ARI of the second run vs "
                        f"the categories {np.mean(ari):.3f} (min {min(ari):.3f})"),
               target=">= 90 % matched, new topic born, labels carried", verdict=verdict(ok),
               notes=(f"warm start kept in {sum(warm)} of {len(warm)} runs that had one; "
                      f"clusters {np.mean([r['k'] for r in out.values()]):.1f} -> "
                      f"{np.mean([r['k2'] for r in out.values()]):.1f}; "
                      f"events over all trials: {events}; absorbed topics split off: "
                      f"{sum(r['split_off'] for r in out.values())}; per topic (matched, "
                      "born): " + ", ".join(f"{c} {r['matched']:.0%} {'y' if r['born'] else 'n'}"
                                            for c, r in out.items())))


def split_merge() -> Row:
    """The fixture of issue 17: run 1 has A (200 rows), B, C1, C2 (100 each); run 2, same ids,
    moves A's rows to two distant places (half each) and C1's and C2's to one; B stays.
    k-means k = 4 both times; the lineage must be exactly: A split in two, C1 and C2
    merged, B continued."""
    rng = np.random.default_rng(7)
    U = rng.normal(size=(7, 16))
    a, b, c1, c2, a1, a2, c = U / np.linalg.norm(U, axis=1, keepdims=True)

    def blob(center, n):
        return center + 0.03 * rng.normal(size=(n, len(center)))

    X1 = np.concatenate([blob(a, 200), blob(b, 100), blob(c1, 100), blob(c2, 100)])
    X2 = np.concatenate([blob(a1, 100), blob(a2, 100), X1[200:300], blob(c, 200)])
    con = connect()
    try:
        load_table(con, "corpus", X1.astype(np.float32))
        con.sql("SELECT cluster_create('fx', source := 'corpus', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})"
                ).fetchall()
        r1 = _run(con, "fx")
        load_table(con, "corpus", X2.astype(np.float32))
        t = time.perf_counter()
        r2 = _run(con, "fx")
        secs = time.perf_counter() - t

        def cluster_of(run, lo, hi):
            return {c for (c,) in con.sql(
                f"SELECT DISTINCT cluster_id FROM cluster_members('fx', run_id := '{run}') "
                f"WHERE CAST(id AS INTEGER) BETWEEN {lo} AND {hi - 1}").fetchall()}

        (A,), (B,) = cluster_of(r1, 0, 200), cluster_of(r1, 200, 300)
        (C1,), (C2,) = cluster_of(r1, 300, 400), cluster_of(r1, 400, 500)
        (A1,), (A2,) = cluster_of(r2, 0, 100), cluster_of(r2, 100, 200)
        (C,) = cluster_of(r2, 300, 500)
        got = sorted(con.sql(f"SELECT event, previous_cluster_id, cluster_id FROM "
                             f"cluster_lineage('fx', run_id := '{r2}')").fetchall())
    finally:
        con.close()
    want = sorted([("continued", B, B), ("split", A, A1), ("split", A, A2),
                   ("merged", C1, C), ("merged", C2, C)])
    extra = [e for e in got if e not in want]
    missing = [e for e in want if e not in got]
    return Row("lineage: split + merge fixture (k-means 4)", len(X1), secs,
               quality=(f"{len(got)} events: " + ", ".join(f"{e} {p}->{n}" for e, p, n in got)
                        + (f"; missing {missing}" if missing else "")
                        + (f"; extra {extra}" if extra else "")),
               target="exactly the split and the merge", verdict=verdict(got == want))


def _greedy(F: np.ndarray) -> np.ndarray:
    """Each new cluster, biggest flow first, takes the most overlapping free old one."""
    Fc = F[:-1, :-1].astype(float)
    match = np.full(Fc.shape[1], -1)
    taken = set()
    for j in np.argsort(-Fc.max(axis=0)):
        for i in np.argsort(-Fc[:, j]):
            if Fc[i, j] > 0 and i not in taken:
                match[j] = i
                taken.add(i)
                break
    return match


def matching_cost(n: int, repeat: int) -> Row:
    from duckcluster.core import lineage

    X, _ = make_clusters(n, k=100, seed=3)
    con = connect()
    try:
        load_table(con, "docs", X)
        con.sql("SELECT cluster_create('m', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 100})"
                ).fetchall()
        _run(con, "m")
        shares = []
        for _ in range(max(1, repeat)):
            r = _run(con, "m")
            t = json.loads(con.sql(f"SELECT timings FROM duckcluster.runs WHERE run_id = "
                                   f"'{r}'").fetchall()[0][0])
            # the stable-ids stage plus the look for absorbed new topics (before it)
            shares.append((t["matching"] + t.get("new_topics", 0.0), t["total"]))
        matching, total = sorted(shares, key=lambda s: s[0] / s[1])[len(shares) // 2]
        # the core alone and a greedy peer on the same flow matrix
        rows = con.sql(f"SELECT previous_cluster_id, cluster_id, shared_members FROM "
                       f"cluster_lineage('m', run_id := '{r}') WHERE event = 'continued'"
                       ).fetchall()
        k = 100
        F = lineage.flow_matrix(k, k, [(a, b, s) for a, b, s in rows])
        C = np.eye(k, dtype=np.float32)
        lineage.link(C, C, F)  # scipy.optimize imported, as in any run after the first
        t0 = time.perf_counter()
        lineage.link(C, C, F)
        core = time.perf_counter() - t0
        t0 = time.perf_counter()
        _greedy(F)
        greedy = time.perf_counter() - t0
    finally:
        con.close()
    share = matching / total
    return Row("lineage: matching cost, 100 clusters", n, matching,
               peers={"greedy matching (core only)": greedy},
               ratio=f"optimal assignment core {core * 1e3:.1f} ms vs greedy "
                     f"{greedy * 1e3:.1f} ms",
               quality=f"matching {matching:.3f} s of a {total:.2f} s run = {share:.1%}",
               target="<= 5 % of the run's time", verdict=verdict(share <= 0.05))


def run(n: int, repeat: int, sets=("docstrings8", "packages10"), trials: int = 10,
        algos=tuple(DEFINITIONS)) -> list[Row]:
    rows = [] if "fixture" in SKIP else [split_merge()]
    for s in sets:
        for algo in algos:
            if "unchanged" not in SKIP:
                rows.append(unchanged(s, algo))
            if "new_topic" not in SKIP:
                rows.append(new_topics(s, algo, trials))
    if n:
        rows.append(matching_cost(n, repeat))
    return rows


if __name__ == "__main__":
    import argparse

    from bench._common import emit, machine_note

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sets", default="docstrings8,packages10")
    ap.add_argument("--trials", type=int, default=10, help="held-out topics per set")
    ap.add_argument("--definitions", default=",".join(DEFINITIONS),
                    help=f"which of {', '.join(DEFINITIONS)}")
    ap.add_argument("--split-new-topics", action="store_true",
                    help="lineage := {'split_new_topics': true} on every definition")
    ap.add_argument("--no-warm-start", action="store_true",
                    help="lineage := {'warm_start': false}: every full run fits from scratch")
    ap.add_argument("--skip", default="", help="fixture,unchanged,new_topic: rows not to run")
    ap.add_argument("--json")
    a = ap.parse_args()
    opts = {**({"split_new_topics": "true"} if a.split_new_topics else {}),
            **({"warm_start": "false"} if a.no_warm_start else {})}
    if opts:
        EXTRA["spec"] = ", lineage := {" + ", ".join(f"'{k}': {v}" for k, v in opts.items()) + "}"
    SKIP.update(x for x in a.skip.split(",") if x)
    print(machine_note(), flush=True)
    emit(run(a.rows, a.repeat, tuple(s for s in a.sets.split(",") if s), a.trials,
             tuple(d for d in a.definitions.split(",") if d)), a.json)
