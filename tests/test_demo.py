"""``duckcluster demo``, end to end on the shipped docstring embeddings: topics with names,
new rows landing in them, and a drift check that names the topic the clustering never saw."""

from __future__ import annotations

import contextlib
import io
import html
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

import duckcluster
from duckcluster.cli.demo import TRY_NEXT, demo_data_path, run_demo

NOVEL = "gui"  # the held-out topic of demo_docs.parquet (split 'novel')


@contextlib.contextmanager
def _no_progress(enabled: bool = True):
    yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    console = Console(file=out, width=200)
    result = run_demo(str(d / "demo.duckdb"), None, console, _no_progress)
    return result, out.getvalue(), d


def test_data_file_is_what_the_demo_says():
    con = duckcluster.connect()
    try:
        rows = dict(con.execute(
            "SELECT split, count(DISTINCT category) FROM read_parquet(?) GROUP BY ALL",
            [demo_data_path()]).fetchall())
        novel = con.execute("SELECT DISTINCT category FROM read_parquet(?) WHERE split = "
                            "'novel'", [demo_data_path()]).fetchall()
        dims = con.execute("SELECT DISTINCT len(embedding) FROM read_parquet(?)",
                           [demo_data_path()]).fetchall()
    finally:
        con.close()
    assert rows["train"] == rows["new_batch"] == 8 and rows["novel"] == 1
    assert novel == [(NOVEL,)] and dims == [(384,)]
    assert os.path.getsize(demo_data_path()) <= 4 * 2**20


def test_topics_are_named_and_scored(demo):
    r, out, _ = demo
    real = [t for t in r.topics if t.cluster_id != -1]
    assert r.n_clusters == len(real) >= 2
    assert all(t.label and t.keywords for t in real)
    assert sum(t.size for t in r.topics) == r.n_train
    assert all(0 < t.purity <= 1 for t in r.topics)
    assert {t.majority for t in r.topics} <= {la.category for la in r.landings}
    assert -0.5 <= r.ari <= 1 and 0 <= r.noise_ratio < 1
    for t in real:  # every named topic is in the printed table
        assert t.label in out
    assert f"ARI {r.ari:.3f}" in out


def test_new_rows_of_known_topics_are_assigned(demo):
    r, out, _ = demo
    assert len(r.landings) == 8 and NOVEL not in {la.category for la in r.landings}
    assert all(0 <= la.own_topic <= la.assigned <= 1 for la in r.landings)
    # held-back rows of known topics mostly land in their own category's topic when they fit
    n = sum(la.n for la in r.landings)
    assert sum(la.own_topic * la.n for la in r.landings) / n > 0.2
    assert "in their own category's topic" in out


def test_drift_names_the_unseen_topic_as_new(demo):
    r, out, _ = demo
    assert r.drift_detected and r.drift["mmd"]["drift_detected"]
    assert r.new_regions, "the drift check found nothing new"
    region = r.new_regions[0]
    gui = [ex for ex in region.examples if ex.category == NOVEL]
    assert len(region.examples) >= 3 and len(gui) >= 0.8 * len(region.examples)
    # its keywords are words of the unseen topic's texts, rarer in the training rows
    con = duckcluster.connect(r.db_path, read_only=True)
    try:
        texts = dict(con.sql("SELECT split = 'novel', list(lower(text)) FROM demo_docs "
                             "WHERE split IN ('novel', 'train') GROUP BY ALL").fetchall())
    finally:
        con.close()

    def share(word, docs):  # a two-word keyword's words may have stop words between them
        pattern = r"\W+(?:\w+\W+){0,2}".join(re.escape(w) for w in word.split())
        return sum(bool(re.search(rf"\b{pattern}", d)) for d in docs) / len(docs)

    top = region.keywords[:3]
    assert all(share(w, texts[True]) > 3 * share(w, texts[False]) for w in top), top
    assert "new" in out and region.name in out


def test_report_is_written(demo):
    r, out, _ = demo
    assert r.report_path and os.path.exists(r.report_path)
    with open(r.report_path, encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert os.path.abspath(r.report_path) in out
    # what moved is named in words (the new region's label), not by a region number
    moved = page.split("<h2>What moved</h2>", 1)[1].split("</table>", 1)[0]
    assert r.new_regions[0].name in html.unescape(moved) and "region " not in moved


def test_try_next_sql_runs(demo):
    r, out, _ = demo
    assert r.try_next == list(TRY_NEXT)
    con = duckcluster.connect(r.db_path, read_only=True)
    try:
        for q in r.try_next:
            assert con.sql(q).fetchall(), q
            assert q in out
    finally:
        con.close()


def test_cli_offers_both_demos():
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "demo", "--help"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "--digits" in r.stdout and "--report" in r.stdout


def test_cli_refuses_a_missing_folder_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "demo", "--db",
                        str(tmp_path / "demo.duckdb"), "--report",
                        str(tmp_path / "missing" / "drift.html")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--report" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "demo.duckdb").exists()
