"""``duckcluster demo``: topics in real text, new rows landing in them, and a drift check
that says what is new, from SQL in one run (``--digits``: the older digits demo).

The texts are the shipped ``duckcluster/data/demo_docs.parquet``: first paragraphs of
Python standard-library docstrings from 8 module families, embedded with
all-MiniLM-L6-v2 (see ``duckcluster/data/README.md``), split into the rows the clustering
sees (``train``), held-back rows of the same families (``new_batch``) and rows of a
family it never sees (``novel``: tkinter and turtle). Every duckcluster call uses the
package defaults; the known categories only score the result.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from .. import connect
from .._errors import MissingDependencyError
from .display import choices_summary

#: The definition the text demo creates.
NAME = "topics"

#: Statements the text demo runs, in order (printed as it goes, so a reader can redo them).
SETUP_SQL = (
    ("CREATE TABLE demo_docs AS SELECT id, category, split, text, "
     "embedding::FLOAT[384] AS embedding FROM read_parquet(?)"),
    # what the clustering sees, the held-back rows of known topics, and the batch the
    # drift check compares with the training rows (held-back rows plus an unseen topic)
    ("CREATE VIEW docs AS SELECT id, category, text, embedding FROM demo_docs "
     "WHERE split = 'train'"),
    ("CREATE VIEW new_docs AS SELECT id, category, text, embedding FROM demo_docs "
     "WHERE split = 'new_batch'"),
    ("CREATE VIEW incoming AS SELECT id, category, text, embedding FROM demo_docs "
     "WHERE split <> 'train'"),
)
CREATE_SQL = (f"SELECT cluster_create('{NAME}', source := 'docs', embedding := 'embedding', "
              "id := 'id')")
EXECUTE_SQL = f"SELECT cluster_execute('{NAME}')"
LABEL_SQL = f"SELECT cluster_label('{NAME}', text := 'text')"
#: The drift check: MMD (embedding_drift's default method) and the share of rows per topic
#: (both sides assigned to the topics' centroids).
DRIFT_METHODS = ("mmd", "cluster")
DRIFT_SQL = ("SELECT method, statistic, p_value, drift_detected, details FROM "
             f"embedding_drift('docs', 'incoming', 'embedding', method := ['mmd', 'cluster'], "
             f"reference := '{NAME}')")

#: Printed at the end and run by the tests: each works on the demo database.
TRY_NEXT = (
    (f"SELECT cluster_id, size, label, keywords FROM cluster_centroids('{NAME}') "
     "ORDER BY size DESC"),
    (f"SELECT d.text FROM cluster_members('{NAME}') m JOIN docs d ON d.id = m.id "
     "WHERE m.cluster_id = 0 ORDER BY m.cosine_similarity_to_centroid DESC LIMIT 5"),
    (f"SELECT category, assign_cluster(embedding, '{NAME}') AS cluster_id, text FROM new_docs "
     "LIMIT 10"),
    ("SELECT method, statistic, p_value, drift_detected FROM embedding_drift('docs', "
     "'incoming', 'embedding', method := 'all')"),
    f"SELECT * FROM cluster_quality('{NAME}')",
    f"SELECT * FROM cluster_runs('{NAME}')",
)

#: Examples printed per new region.
N_EXAMPLES = 5


@dataclass(frozen=True)
class Topic:
    """One cluster of the training rows, scored against the known categories."""
    cluster_id: int            # -1: noise (rows the clustering put in no topic)
    label: str | None
    keywords: list[str]
    size: int
    majority: str              # the most common known category of its rows
    purity: float              # share of its rows in that category


@dataclass(frozen=True)
class Landing:
    """Where the held-back rows of one known category landed."""
    category: str
    n: int
    assigned: float            # share that fits a topic (assign_cluster's default threshold)
    own_topic: float           # share in a topic whose majority is their own category


@dataclass(frozen=True)
class Example:
    id: int
    category: str
    text: str


@dataclass(frozen=True)
class NewRegion:
    """Batch content the training rows do not have, in words."""
    name: str
    keywords: list[str]
    size: int                  # batch rows in the region
    share: float               # of all batch rows
    examples: list[Example]


@dataclass(frozen=True)
class DemoResult:
    db_path: str
    definition: str
    algorithm: str             # what the definition ran with (the package default)
    n_train: int
    n_clusters: int
    noise_ratio: float
    silhouette: float | None
    ari: float                 # adjusted Rand index against the known categories (noise = own class)
    topics: list[Topic]
    landings: list[Landing]
    n_batch: int
    drift_detected: bool
    drift: dict[str, dict]     # method -> {statistic, p_value, drift_detected, details}
    new_regions: list[NewRegion]
    report_path: str | None    # None when matplotlib is missing
    try_next: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def demo_data_path() -> str:
    """The shipped Parquet file of the text demo."""
    return str(resources.files("duckcluster").joinpath("data", "demo_docs.parquet"))


def run_demo(db_path: str, artifacts_dir: str | None, console: Console, progress_display,
             digits: bool = False, report_path: str | None = None):
    """Run the demo into ``db_path`` (recreated); the text demo returns a :class:`DemoResult`."""
    if digits:
        return run_digits_demo(db_path, artifacts_dir, console, progress_display)
    return run_text_demo(db_path, artifacts_dir, console, progress_display, report_path)


def _fresh(db_path: str, artifacts_dir: str | None) -> str:
    for path in (db_path, db_path + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    art = artifacts_dir or os.path.splitext(os.path.abspath(db_path))[0] + ".artifacts"
    shutil.rmtree(art, ignore_errors=True)
    return art


def run_text_demo(db_path: str, artifacts_dir: str | None, console: Console, progress_display,
                  report_path: str | None = None) -> DemoResult:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    art = _fresh(db_path, artifacts_dir)
    report_path = report_path or os.path.splitext(db_path)[0] + "_drift.html"
    console.print(f"[bold]duckcluster demo[/bold]: topics in Python standard-library "
                  f"docstrings -> {db_path}")
    con = connect(db_path, artifacts_dir=art)
    try:
        t = time.perf_counter()
        con.execute(SETUP_SQL[0], [demo_data_path()])
        for stmt in SETUP_SQL[1:]:
            con.execute(stmt)
        counts = dict(con.sql("SELECT split, count(*) FROM demo_docs GROUP BY ALL").fetchall())
        n_train, n_batch = counts.get("train", 0), counts.get("new_batch", 0) + counts.get(
            "novel", 0)
        timings["load"] = time.perf_counter() - t
        console.print(
            f"loaded {sum(counts.values()):,} docstring paragraphs (all-MiniLM-L6-v2, 384-d): "
            f"view [bold]docs[/bold] ({n_train:,} rows the clustering sees), "
            f"[bold]new_docs[/bold] ({counts.get('new_batch', 0):,} held-back rows of the "
            f"same topics), [bold]incoming[/bold] (new_docs + {counts.get('novel', 0):,} rows "
            "of a topic it never sees)")

        # -- 1. cluster and label, with the package defaults ---------------------------------
        _show(console, CREATE_SQL, EXECUTE_SQL, LABEL_SQL)
        t = time.perf_counter()
        con.sql(CREATE_SQL).fetchall()
        with progress_display(True):
            con.sql(EXECUTE_SQL).fetchall()
        timings["cluster"] = time.perf_counter() - t
        t = time.perf_counter()
        con.sql(LABEL_SQL).fetchall()
        timings["label"] = time.perf_counter() - t
        algorithm = con.execute("SELECT algorithm FROM cluster_list() WHERE name = ?",
                                [NAME]).fetchall()[0][0]
        n_clusters, noise, silhouette = con.execute(
            f"SELECT n_clusters, noise_ratio, silhouette_score FROM cluster_quality('{NAME}')"
        ).fetchall()[0]
        topics, ari = _topics(con)
        chose = con.execute(f"SELECT choices FROM cluster_runs('{NAME}') ORDER BY started_at "
                            "DESC LIMIT 1").fetchall()[0][0]
        _print_topics(console, topics, algorithm, n_train, n_clusters, noise, silhouette, ari,
                      timings["cluster"], choices_summary(chose))

        # -- 2. new rows of known topics ------------------------------------------------------
        t = time.perf_counter()
        landings = _landings(con, topics)
        timings["assign"] = time.perf_counter() - t
        _print_landings(console, landings)

        # -- 3. drift: the training rows against a batch with a topic never seen -------------
        t = time.perf_counter()
        _show(console, DRIFT_SQL.replace(", details", ""))
        with progress_display(True):
            drift = _drift(con)
        _show(console, EXPLAIN_SQL)
        regions = _new_regions(con)
        timings["drift"] = time.perf_counter() - t
        detected = any(d["drift_detected"] for d in drift.values())
        _print_drift(console, drift, regions, n_batch, detected)

        # -- 4. the HTML report --------------------------------------------------------------
        t = time.perf_counter()
        written = _report(con, report_path, console, progress_display)
        timings["report"] = time.perf_counter() - t
        seconds = time.perf_counter() - t_start
        console.print(f"artifacts (Parquet per run) under {art}")
        console.print(f"done in {seconds:.1f} s ("
                      + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")\n")
        console.print("[bold]Try next[/bold]:")
        for q in TRY_NEXT:
            console.print(f'  duckcluster sql {db_path} -c "{q}"', soft_wrap=True,
                          highlight=False)
        return DemoResult(
            db_path=db_path, definition=NAME, algorithm=algorithm, n_train=n_train,
            n_clusters=int(n_clusters), noise_ratio=float(noise),
            silhouette=None if silhouette is None else float(silhouette), ari=ari,
            topics=topics, landings=landings, n_batch=n_batch, drift_detected=detected,
            drift=drift, new_regions=regions, report_path=written, try_next=list(TRY_NEXT),
            seconds=seconds, timings=timings)
    finally:
        con.close()


def _show(console: Console, *statements: str) -> None:
    for s in statements:
        console.print(f"  [dim]{s};[/dim]", soft_wrap=True, highlight=False)


def _topics(con) -> tuple[list[Topic], float]:
    """Topics of the latest run (top level) with their known-category make-up, and the ARI."""
    from sklearn.metrics import adjusted_rand_score

    pairs = con.sql(f"""
        SELECT m.cluster_id, d.category FROM cluster_members('{NAME}') m
        JOIN docs d ON d.id = m.id
        WHERE m.cluster_id = -1 OR coalesce(m.hierarchy_level, 0) = 0""").fetchall()
    cids = np.array([p[0] for p in pairs])
    cats = np.array([p[1] for p in pairs], dtype=object)
    ari = float(adjusted_rand_score(cats, cids))
    names = {r[0]: (r[1], list(r[2] or [])) for r in con.sql(
        f"SELECT cluster_id, label, keywords FROM cluster_centroids('{NAME}') "
        "WHERE hierarchy_level = 0").fetchall()}
    topics = []
    for cid in np.unique(cids):
        members = cats[cids == cid]
        values, n = np.unique(members, return_counts=True)
        label, keywords = names.get(int(cid), (None, []))
        topics.append(Topic(int(cid), label, keywords, len(members),
                            str(values[n.argmax()]), float(n.max() / len(members))))
    topics.sort(key=lambda tp: (tp.cluster_id == -1, -tp.size))
    return topics, ari


def _landings(con, topics: list[Topic]) -> list[Landing]:
    rows = con.sql(f"SELECT category, assign_cluster(embedding, '{NAME}') FROM new_docs"
                   ).fetchall()
    majority = {tp.cluster_id: tp.majority for tp in topics if tp.cluster_id != -1}
    out = []
    for cat in sorted({r[0] for r in rows}):
        got = [cid for c, cid in rows if c == cat]
        out.append(Landing(cat, len(got), float(np.mean([cid != -1 for cid in got])),
                           float(np.mean([majority.get(cid) == cat for cid in got]))))
    return out


def _drift(con) -> dict[str, dict]:
    import json

    out = {}
    for method, stat, p, detected, details in con.sql(DRIFT_SQL).fetchall():
        out[method] = {"statistic": stat, "p_value": p, "drift_detected": bool(detected),
                       "details": json.loads(details) if isinstance(details, str) else details}
    return out


#: What is new in the batch, in words: regions of both sides pooled whose batch share has
#: (next to) no counterpart in the training rows, named by their keywords.
EXPLAIN_SQL = ("SELECT label, keywords, n_current, current_share, example_ids FROM "
               "embedding_drift_explain('docs', 'incoming', 'embedding', text := 'text', "
               "id := 'id', n_examples := 5) WHERE kind = 'new' ORDER BY n_current DESC")


def _new_regions(con) -> list[NewRegion]:
    """The ``new`` regions of ``embedding_drift_explain`` (batch content the training rows
    do not have), with the examples nearest each region's centre."""
    out = []
    for label, keywords, size, share, example_ids in con.sql(EXPLAIN_SQL).fetchall():
        ids = [int(i) for i in example_ids or []]
        rows = dict((r[0], r[1:]) for r in con.execute(
            "SELECT id, category, text FROM incoming WHERE id IN (SELECT unnest(?))",
            [ids]).fetchall())
        examples = [Example(i, *rows[i]) for i in ids if i in rows]
        keywords = list(keywords or [])
        out.append(NewRegion(label or ", ".join(keywords[:3]) or "unnamed", keywords,
                             int(size), float(share), examples))
    return out


def _report(con, path: str, console: Console, progress_display) -> str | None:
    from ..drift.report import drift_report

    try:
        with progress_display(True):
            drift_report(con, "docs", "incoming", path, methods=list(DRIFT_METHODS),
                         reference=NAME, text="text", id="id",
                         title="Embedding drift: incoming vs docs (demo)")
    except MissingDependencyError as exc:
        console.print(f"[yellow]no HTML report[/yellow]: {exc}")
        return None
    console.print(f"HTML drift report: [bold]{os.path.abspath(path)}[/bold]")
    return path


# -- printing --------------------------------------------------------------------------


def _print_topics(console, topics, algorithm, n_train, n_clusters, noise, silhouette, ari,
                  secs, chose: str = "") -> None:
    table = Table(title=f"{n_clusters} topics in {n_train:,} docstrings ('{NAME}', algorithm "
                        f"{algorithm}, {secs:.1f} s)", header_style="bold")
    for col, just in (("cluster", "right"), ("label (offline keywords)", "left"),
                      ("rows", "right"), ("known category", "left"), ("purity", "right")):
        table.add_column(col, justify=just)
    for tp in topics:
        if tp.cluster_id == -1:  # a remainder, not a topic: its make-up means nothing
            table.add_row("-1", "[dim](noise: in no topic)[/dim]", str(tp.size), "", "")
        else:
            table.add_row(str(tp.cluster_id), tp.label or "", str(tp.size), tp.majority,
                          f"{tp.purity:.0%}")
    console.print(table)
    if chose:
        console.print(f"{algorithm} chose: {chose} (cluster_runs.choices has every candidate)")
    console.print(f"quality: silhouette {_fmt(silhouette)}, noise {noise:.1%}; agreement with "
                  f"the known categories: ARI {ari:.3f} (1 = the same partition, 0 = chance)")


def _print_landings(console, landings: list[Landing]) -> None:
    table = Table(title="held-back rows of known topics: assign_cluster(embedding, "
                        f"'{NAME}') FROM new_docs", header_style="bold")
    for col, just in (("category", "left"), ("rows", "right"), ("fit a topic", "right"),
                      ("in their own category's topic", "right")):
        table.add_column(col, justify=just)
    for la in landings:
        table.add_row(la.category, str(la.n), f"{la.assigned:.0%}", f"{la.own_topic:.0%}")
    n = sum(la.n for la in landings)
    table.add_row("[bold]all[/bold]", str(n),
                  f"{sum(la.assigned * la.n for la in landings) / n:.0%}",
                  f"{sum(la.own_topic * la.n for la in landings) / n:.0%}")
    console.print(table)


def _print_drift(console, drift, regions, n_batch, detected) -> None:
    mmd, shares = drift.get("mmd", {}), drift.get("cluster", {})
    verdict = "[red]drift detected[/red]" if detected else "[green]no drift[/green]"
    console.print(f"[bold]drift check[/bold] (docs vs incoming, {n_batch:,} rows): {verdict}; "
                  f"MMD p = {_fmt(mmd.get('p_value'), 4)}, topic shares p = "
                  f"{_fmt(shares.get('p_value'), 4)}")
    d = shares.get("details") or {}
    if d:
        console.print(f"  {d['new_content_share']:.0%} of the batch fits no topic at the "
                      f"assignment threshold {d['assignment_threshold']:g} "
                      f"({d['baseline_unassigned_share']:.0%} of the training rows)")
    if not regions:
        console.print("  no region of the batch lacks a counterpart in the training rows")
    for r in regions:
        console.print(f"  [bold]new[/bold]: {r.size} rows ({r.share:.0%} of the batch) in a "
                      f"region the training rows (next to) lack, about "
                      f"[bold]{r.name}[/bold] ({', '.join(r.keywords[:8])}); for example:")
        for ex in r.examples:
            console.print(f"    - {_clip(ex.text, 110)}", highlight=False)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


# -- --digits: the handwritten digits -----------------------------------------------------

DEFINITIONS = {
    "digits_kmeans": (
        "SELECT cluster_create('digits_kmeans', source := 'digits', embedding := 'embedding', "
        "id := 'id', algorithm := 'kmeans', params := {'n_clusters': 10})"),
    "digits_hdbscan": (
        "SELECT cluster_create('digits_hdbscan', source := 'digits', embedding := 'embedding', "
        "id := 'id', algorithm := 'hdbscan', params := {'min_cluster_size': 20}, "
        "preprocessing := [{'method': 'umap', 'n_components': 5, 'n_neighbors': 15}])"),
}


def load_digits_table() -> tuple[pa.Table, np.ndarray]:
    """The 1,797 8x8 digit images shipped with scikit-learn, as 64-d embeddings."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    return pa.table({"id": np.arange(len(X), dtype=np.int32),
                     "label": d.target.astype(np.int32), "embedding": emb}), d.target


def run_digits_demo(db_path: str, artifacts_dir: str | None, console: Console,
                    progress_display) -> None:
    from sklearn.metrics import adjusted_rand_score

    t_start = time.perf_counter()
    art = _fresh(db_path, artifacts_dir)
    console.print(f"[bold]duckcluster demo --digits[/bold]: scikit-learn's handwritten digits "
                  f"-> {db_path}")
    con = connect(db_path, artifacts_dir=art)
    try:
        tbl, truth = load_digits_table()
        con.register("__digits", tbl)
        con.execute("CREATE TABLE digits AS SELECT id, label, CAST(embedding AS FLOAT[64]) AS "
                    "embedding FROM __digits")
        con.unregister("__digits")
        console.print(f"loaded {len(truth):,} digits (64-d pixel embeddings) into table 'digits'")
        summary = Table(title="clusters of the digits", header_style="bold")
        for col in ("definition", "algorithm", "clusters", "noise", "silhouette",
                    "mean cos", "ARI vs true digit", "seconds"):
            summary.add_column(col, justify="left" if col in ("definition", "algorithm")
                               else "right", no_wrap=col in ("definition", "algorithm"))
        for name, create_sql in DEFINITIONS.items():
            con.sql(create_sql).fetchall()
            t0 = time.perf_counter()
            with progress_display(True):
                con.sql(f"SELECT cluster_execute('{name}')").fetchall()
            secs = time.perf_counter() - t0
            q = con.sql(f"SELECT n_clusters, noise_ratio, silhouette_score, "
                        f"mean_cosine_to_centroid FROM cluster_quality('{name}')").fetchall()[0]
            pred = con.sql(f"SELECT m.cluster_id FROM cluster_members('{name}') m "
                           f"ORDER BY CAST(m.id AS INTEGER)").fetchall()
            ari = adjusted_rand_score(truth, [r[0] for r in pred])
            algo = con.sql(f"SELECT algorithm FROM cluster_list() WHERE name = '{name}'"
                           ).fetchall()[0][0]
            summary.add_row(name, algo, str(q[0]), f"{q[1]:.1%}", _fmt(q[2]), _fmt(q[3]),
                            f"{ari:.3f}", f"{secs:.1f}")
        console.print(summary)
        sizes = Table(title="digits_hdbscan: cluster sizes and the digit each holds",
                      header_style="bold")
        for col in ("cluster_id", "size", "majority digit", "purity"):
            sizes.add_column(col, justify="right")
        for cid, n, digit, purity in con.sql(
                "SELECT m.cluster_id, count(*) AS n, mode(d.label) AS digit, "
                "avg((d.label = (SELECT mode(d2.label) FROM cluster_members('digits_hdbscan') m2 "
                "JOIN digits d2 ON d2.id = m2.id WHERE m2.cluster_id = m.cluster_id))::INT) AS purity "
                "FROM cluster_members('digits_hdbscan') m JOIN digits d ON d.id = m.id "
                "GROUP BY ALL ORDER BY m.cluster_id").fetchall():
            sizes.add_row(str(cid) + (" (noise)" if cid == -1 else ""), str(n), str(digit),
                          f"{purity:.1%}")
        console.print(sizes)
        console.print(f"artifacts (Parquet per run) under {art}")
        console.print(f"done in {time.perf_counter() - t_start:.1f} s\n")
        console.print("[bold]Try next[/bold]:")
        for q in (
            "SELECT cluster_id, count(*) FROM cluster_members('digits_hdbscan') GROUP BY ALL ORDER BY 2 DESC",
            "SELECT * FROM cluster_quality('digits_kmeans')",
            "SELECT id, assign_cluster(embedding, 'digits_kmeans') AS cluster_id FROM digits LIMIT 5",
            "SELECT * FROM cluster_runs('digits_hdbscan')",
        ):
            console.print(f'  duckcluster sql {db_path} -c "{q}"', soft_wrap=True, highlight=False)
    finally:
        con.close()
