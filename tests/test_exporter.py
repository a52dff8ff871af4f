"""The Prometheus exporter, scraped over HTTP, and the Grafana dashboard built on it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import duckcluster
from conftest import blobs, load_table
from duckcluster.ops import exporter
from duckcluster.catalog import ops as store
from duckcluster.cli import main
from webhook_servers import free_port

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "duckcluster-dashboard.json"


@pytest.fixture
def filled(db_path):
    """A closed database with full, assign and failed runs, a drift check, a firing."""
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=20, k=3, d=8)
    load_table(con, "docs", X)
    con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    con.sql("SELECT cluster_execute('topics')").fetchall()
    con.sql("SELECT cluster_execute('topics', mode := 'assign')").fetchall()
    con.sql("CREATE VIEW gone AS SELECT * FROM docs").fetchall()
    con.sql("SELECT cluster_create('broken', source := 'gone', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    con.sql("DROP VIEW gone").fetchall()
    with pytest.raises(duckdb.Error):
        con.sql("SELECT cluster_execute('broken')").fetchall()
    base = con.sql("SELECT run_id FROM cluster_runs('topics') WHERE mode = 'full'"
                   ).fetchall()[0][0]
    with con.cursor() as cur:
        store.insert_drift_check(cur, {
            "name": "topics", "trigger_id": None, "method": "mmd", "baseline_run_id": base,
            "drift_current": "new_rows", "statistic": 0.42, "p_value": 0.002, "alpha": 0.05,
            "drift_detected": True, "threshold": 0.1, "above_threshold": True,
            "n_baseline": 60, "n_current": 40, "details": {}})
    tid = con.sql("SELECT cluster_trigger_create('topics', kind := 'interval', every := 60)"
                  ).fetchall()[0][0]
    with con.cursor() as cur:
        store.record_firing(cur, store.get_trigger(cur, tid), reason="test", run_id=base)
    con.close()
    return db_path


def _scrape(url: str) -> dict[str, dict[tuple, float]]:
    text = httpx.get(url, timeout=10).text
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _one(metrics, metric, /, **labels) -> float:
    return metrics[metric][tuple(sorted(labels.items()))]


def test_scraped_gauges_match_the_catalog(filled):
    server = exporter.serve(exporter.ReadOnlySource(filled, min_interval=0), free_port(),
                            "127.0.0.1")
    try:
        m = _scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
    ro = duckdb.connect(filled, read_only=True)
    try:
        full = dict(zip(
            ("silhouette_score", "noise_ratio", "n_clusters", "duration_s", "n_members"),
            ro.execute("SELECT silhouette_score, noise_ratio, n_clusters, duration_s, n_members "
                       "FROM duckcluster.runs WHERE mode = 'full' AND status = 'succeeded'"
                       ).fetchall()[0]))
    finally:
        ro.close()
    assert _one(m, "duckcluster_up") == 1
    assert _one(m, "duckcluster_definition_info", name="topics", algorithm="kmeans") == 1
    assert _one(m, "duckcluster_silhouette_score", name="topics", mode="full") == \
        pytest.approx(full["silhouette_score"])
    assert _one(m, "duckcluster_noise_ratio", name="topics", mode="full") == full["noise_ratio"]
    assert _one(m, "duckcluster_clusters", name="topics", mode="full") == 3
    assert _one(m, "duckcluster_clusters", name="topics", mode="assign") == 3
    assert _one(m, "duckcluster_members", name="topics", mode="full") == 60
    assert _one(m, "duckcluster_last_run_duration_seconds", name="topics", mode="full") == \
        pytest.approx(full["duration_s"])
    assert _one(m, "duckcluster_run_duration_seconds_count", name="topics", mode="full") == 1
    assert _one(m, "duckcluster_runs", name="topics", status="succeeded") == 2
    assert _one(m, "duckcluster_runs", name="topics", status="failed") == 0
    assert _one(m, "duckcluster_runs", name="broken", status="failed") == 1
    assert _one(m, "duckcluster_last_run_failed", name="broken") == 1
    assert _one(m, "duckcluster_last_run_failed", name="topics") == 0
    assert _one(m, "duckcluster_runs_in_progress", name="topics") == 0
    assert _one(m, "duckcluster_drift_statistic", name="topics", method="mmd") == 0.42
    assert _one(m, "duckcluster_drift_p_value", name="topics", method="mmd") == 0.002
    assert _one(m, "duckcluster_drift_above_threshold", name="topics", method="mmd") == 1
    assert _one(m, "duckcluster_drift_threshold", name="topics", method="mmd") == 0.1
    (firing,) = m["duckcluster_trigger_firings"].items()
    assert dict(firing[0])["outcome"] == "submitted" and firing[1] == 1
    assert ("name", "broken") not in {kv for k in m["duckcluster_silhouette_score"] for kv in k}


def test_stale_snapshot_while_another_process_writes(filled):
    """A writer in another process holds the lock: last snapshot served, duckcluster_up 0."""
    source = exporter.ReadOnlySource(filled, min_interval=0)
    server = exporter.serve(source, free_port(), "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    assert _one(_scrape(url), "duckcluster_up") == 1
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", filled],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        m = _scrape(url)
        assert _one(m, "duckcluster_up") == 0
        assert _one(m, "duckcluster_clusters", name="topics", mode="full") == 3  # cached
        assert "lock" in (source.error or "").lower()
    finally:
        holder.kill()
        holder.wait(10)
    try:
        assert _one(_scrape(url), "duckcluster_up") == 1
    finally:
        server.shutdown()


def test_min_interval_reuses_the_snapshot(filled):
    source = exporter.ReadOnlySource(filled, min_interval=60)
    a, ok = source()
    b, _ = source()
    assert ok and a is b


def test_empty_and_foreign_databases(tmp_path):
    path = str(tmp_path / "plain.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    text = exporter.render(exporter.ReadOnlySource(path))
    assert "duckcluster_up 1.0" in text
    assert "duckcluster_silhouette_score{" not in text


def test_cli_exporter_once(filled):
    result = CliRunner().invoke(main, ["exporter", filled, "--once"])
    assert result.exit_code == 0, result.output
    assert re.search(r'^duckcluster_clusters\{mode="full",name="topics"\} 3\.0$',
                     result.output, re.M)


def test_cli_exporter_serves_until_sigterm(filled):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "duckcluster.cli", "exporter", filled,
                             "--port", str(port), "--host", "127.0.0.1"],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                m = _scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert _one(m, "duckcluster_up") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    assert code == 0


def test_grafana_dashboard_plots_exported_metrics(filled):
    dash = json.loads(DASHBOARD.read_text())
    families = {fam.name for fam in text_string_to_metric_families(
        exporter.render(exporter.ReadOnlySource(filled)))}
    exported = families | {f + s for f in families for s in ("_sum", "_count")}
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    used = {m for e in exprs for m in re.findall(r"\bduckcluster_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    # drift is plotted next to (and together with) the outcome metric
    titles = {p["title"]: p for p in panels}
    together = titles["Drift and outcome on one chart"]
    assert {t["expr"].split("{")[0] for t in together["targets"]} == \
        {"duckcluster_drift_statistic", "$outcome_metric"}
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["outcome_metric"]["type"] == "textbox"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert dash["uid"] == "duckcluster-overview"
