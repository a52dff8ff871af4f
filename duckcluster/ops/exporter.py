"""Prometheus metrics of a duckcluster database: ``duckcluster exporter DB --port 9464``.

Gauges per definition (label ``name``; ``mode`` = full | assign for run figures):
the latest successful run's quality metrics, noise ratio, cluster count, member
and source row counts, duration and finish time; run counts by status, runs in
progress, whether the latest run failed; the latest drift check of each event
trigger method (statistic, p-value, alpha, threshold, detected / above
threshold, when); trigger firings; webhook deliveries by final status.

How it reads the file, given DuckDB's one-writer rule: the standalone exporter
opens the database **read-only for each refresh** and closes it at once, at most
once every ``min_interval`` seconds (scrapes in between get the cached
snapshot). A read-only open fails while another process writes the file (a run
in progress); the exporter then serves the last snapshot and sets
``duckcluster_up`` to 0, and ``duckcluster_snapshot_age_seconds`` says how old
it is. Its own short opens can likewise make a writer's open fail for a moment.
With a scheduler, prefer ``duckcluster scheduler DB --metrics-port 9464``: the
scheduler serves the snapshot it takes at the end of each tick, and no second
process touches the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

from .._params import optional_import

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "abandoned")
QUALITY = ("silhouette_score", "mean_cosine_to_centroid", "noise_ratio", "cluster_size_entropy",
           "davies_bouldin", "calinski_harabasz")
_HELP = {
    "silhouette_score": "Silhouette score of the latest successful run (-1..1, higher is better).",
    "mean_cosine_to_centroid": "Mean cosine similarity of members to their centroid, latest "
                               "successful run.",
    "noise_ratio": "Share of rows labelled noise (-1) in the latest successful run.",
    "cluster_size_entropy": "Normalized entropy of cluster sizes (0-1), latest successful run.",
    "davies_bouldin": "Davies-Bouldin index of the latest successful run (lower is better).",
    "calinski_harabasz": "Calinski-Harabasz index of the latest successful run (higher is "
                         "better).",
}


@dataclass
class Snapshot:
    """Everything the gauges show, read in one go."""

    taken_at: float = 0.0
    read_seconds: float = 0.0
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _has(cur, table: str) -> bool:
    return cur.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'duckcluster' "
                       "AND table_name = ? AND database_name = current_database()",
                       [table]).fetchall()[0][0] > 0


def _rows(cur, sql: str) -> list[dict[str, Any]]:
    rel = cur.execute(sql)
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r)) for r in rel.fetchall()]


_QUERIES = {
    "definitions": ("definitions", """
        SELECT name, json_extract_string(spec, '$.algorithm') AS algorithm
        FROM duckcluster.definitions ORDER BY name"""),
    "latest": ("runs", f"""
        SELECT name, mode, n_clusters, n_members, n_rows, duration_s, should_recluster,
               epoch(finished_at) AS finished_epoch, {', '.join(QUALITY)}
        FROM duckcluster.runs WHERE status = 'succeeded'
        QUALIFY row_number() OVER (PARTITION BY name, mode ORDER BY run_seq DESC) = 1"""),
    "durations": ("runs", """
        SELECT name, mode, count(*) AS n, sum(duration_s) AS total
        FROM duckcluster.runs WHERE status = 'succeeded' GROUP BY ALL"""),
    "counts": ("runs", "SELECT name, status, count(*) AS n FROM duckcluster.runs GROUP BY ALL"),
    "last_status": ("runs", """
        SELECT name, status FROM duckcluster.runs
        QUALIFY row_number() OVER (PARTITION BY name ORDER BY run_seq DESC) = 1"""),
    "drift": ("drift_checks", """
        SELECT name, method, statistic, p_value, alpha, threshold, drift_detected,
               above_threshold, epoch(checked_at) AS checked_epoch
        FROM duckcluster.drift_checks
        QUALIFY row_number() OVER (PARTITION BY name, method ORDER BY checked_at DESC,
                                   check_id DESC) = 1"""),
    "triggers": ("triggers", """
        SELECT trigger_id, name, kind, enabled, epoch(last_fired_at) AS fired_epoch
        FROM duckcluster.triggers"""),
    "firings": ("trigger_firings", """
        SELECT trigger_id, name, kind, outcome, count(*) AS n
        FROM duckcluster.trigger_firings GROUP BY ALL"""),
    "deliveries": ("webhook_deliveries", """
        SELECT webhook_id, name, final AS status, count(*) AS n FROM (
            SELECT webhook_id, any_value(name) AS name,
                   arg_max(status, attempt) AS final
            FROM duckcluster.webhook_deliveries GROUP BY webhook_id, delivery_id)
        GROUP BY ALL"""),
}


def snapshot(cur) -> Snapshot:
    """Read every figure the gauges show (tables missing from an older catalog are skipped)."""
    t0 = time.perf_counter()
    snap = Snapshot()
    present: dict[str, bool] = {}
    for key, (table, sql) in _QUERIES.items():
        if table not in present:
            present[table] = _has(cur, table)
        snap.tables[key] = _rows(cur, sql) if present[table] else []
    snap.taken_at = time.time()
    snap.read_seconds = time.perf_counter() - t0
    return snap


class ReadOnlySource:
    """Snapshots of a database file opened read-only per refresh (see the module docstring)."""

    def __init__(self, path: str, min_interval: float = 5.0):
        self.path = path
        self.min_interval = float(min_interval)
        self.last: Snapshot | None = None
        self.ok = False
        self.error: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> tuple[Snapshot | None, bool]:
        with self._lock:
            if self.last is not None and self.ok and \
                    time.time() - self.last.taken_at < self.min_interval:
                return self.last, True
            try:
                con = duckdb.connect(self.path, read_only=True)
            except duckdb.Error as exc:
                self.ok, self.error = False, str(exc)
                return self.last, False
            try:
                self.last = snapshot(con)
                self.ok, self.error = True, None
            except duckdb.Error as exc:
                self.ok, self.error = False, str(exc)
            finally:
                con.close()
            return self.last, self.ok


class SharedSource:
    """The snapshot another component (the scheduler's tick) hands over."""

    def __init__(self) -> None:
        self.last: Snapshot | None = None

    def put(self, snap: Snapshot) -> None:
        self.last = snap

    def __call__(self) -> tuple[Snapshot | None, bool]:
        return self.last, self.last is not None


class Collector:
    """prometheus-client collector over a snapshot source ``() -> (Snapshot | None, ok)``."""

    def __init__(self, source: Callable[[], tuple[Snapshot | None, bool]]):
        self.source = source

    def describe(self) -> list:  # no eager collect() at registration
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

        snap, ok = self.source()
        yield _gauge(GaugeMetricFamily, "duckcluster_up",
                     "1 if the last read of the database succeeded, else 0.", [], [([], ok)])
        if snap is None:
            return
        yield _gauge(GaugeMetricFamily, "duckcluster_snapshot_age_seconds",
                     "Seconds since the figures were read from the database.", [],
                     [([], time.time() - snap.taken_at)])
        yield _gauge(GaugeMetricFamily, "duckcluster_snapshot_read_seconds",
                     "Seconds the last read of the database took.", [],
                     [([], snap.read_seconds)])
        t = snap.tables
        yield _gauge(GaugeMetricFamily, "duckcluster_definition_info",
                     "One series per cluster definition, with its algorithm.",
                     ["name", "algorithm"],
                     [([r["name"], r["algorithm"] or ""], 1) for r in t["definitions"]])
        nm = ["name", "mode"]
        latest = t["latest"]
        for q in QUALITY:
            yield _gauge(GaugeMetricFamily, f"duckcluster_{q}", _HELP[q], nm,
                         [([r["name"], r["mode"]], r[q]) for r in latest])
        for metric, col, help_ in (
                ("duckcluster_clusters", "n_clusters", "Clusters found by the latest "
                                                       "successful run."),
                ("duckcluster_members", "n_members", "Rows with an embedding in the latest "
                                                     "successful run."),
                ("duckcluster_source_rows", "n_rows", "Source rows read by the latest "
                                                      "successful run."),
                ("duckcluster_should_recluster", "should_recluster",
                 "1 if the latest successful run's quality crossed a should_recluster "
                 "threshold."),
                ("duckcluster_last_run_duration_seconds", "duration_s",
                 "Duration of the latest successful run."),
                ("duckcluster_last_success_timestamp_seconds", "finished_epoch",
                 "Unix time the latest successful run finished.")):
            yield _gauge(GaugeMetricFamily, metric, help_, nm,
                         [([r["name"], r["mode"]], r[col]) for r in latest])
        s = SummaryMetricFamily("duckcluster_run_duration_seconds",
                                "Durations of successful runs (count and sum).", labels=nm)
        for r in t["durations"]:
            s.add_metric([r["name"], r["mode"]], count_value=r["n"], sum_value=r["total"] or 0.0)
        yield s
        counts = {(r["name"], r["status"]): r["n"] for r in t["counts"]}
        names = sorted({r["name"] for r in t["definitions"]} | {k[0] for k in counts})
        yield _gauge(GaugeMetricFamily, "duckcluster_runs",
                     "Runs by status (every status, 0 included, so failures can be rated).",
                     ["name", "status"], [([n, st], counts.get((n, st), 0))
                                          for n in names for st in RUN_STATUSES])
        active: dict[str, int] = {}
        for r in t["counts"]:
            active[r["name"]] = active.get(r["name"], 0) + \
                (r["n"] if r["status"] in ("queued", "running") else 0)
        yield _gauge(GaugeMetricFamily, "duckcluster_runs_in_progress",
                     "Runs queued or running.", ["name"], [([k], v) for k, v in active.items()])
        yield _gauge(GaugeMetricFamily, "duckcluster_last_run_failed",
                     "1 if the latest run of the definition failed or was abandoned.", ["name"],
                     [([r["name"]], r["status"] in ("failed", "abandoned"))
                      for r in t["last_status"]])
        nmeth = ["name", "method"]
        for metric, col, help_ in (
                ("duckcluster_drift_statistic", "statistic",
                 "Drift statistic of the latest check (larger = more drift)."),
                ("duckcluster_drift_p_value", "p_value", "p-value of the latest drift check."),
                ("duckcluster_drift_alpha", "alpha", "Significance level of the drift test."),
                ("duckcluster_drift_threshold", "threshold",
                 "The trigger's when_drift_above threshold on the statistic."),
                ("duckcluster_drift_detected", "drift_detected",
                 "1 if the latest check's p-value was below alpha."),
                ("duckcluster_drift_above_threshold", "above_threshold",
                 "1 if the latest check's statistic exceeded the trigger's threshold."),
                ("duckcluster_drift_checked_timestamp_seconds", "checked_epoch",
                 "Unix time of the latest drift check.")):
            yield _gauge(GaugeMetricFamily, metric, help_, nmeth,
                         [([r["name"], r["method"]], r[col]) for r in t["drift"]])
        tk = ["name", "trigger_id", "kind"]
        yield _gauge(GaugeMetricFamily, "duckcluster_trigger_last_fired_timestamp_seconds",
                     "Unix time a trigger last fired.", tk,
                     [([r["name"], r["trigger_id"], r["kind"]], r["fired_epoch"])
                      for r in t["triggers"]])
        yield _gauge(GaugeMetricFamily, "duckcluster_trigger_firings",
                     "Firings of a trigger by outcome (submitted, skipped, error).",
                     tk + ["outcome"],
                     [([r["name"], r["trigger_id"], r["kind"], r["outcome"]], r["n"])
                      for r in t["firings"]])
        yield _gauge(GaugeMetricFamily, "duckcluster_webhook_deliveries",
                     "Webhook deliveries by final status (delivered, failed, retrying).",
                     ["name", "webhook_id", "status"],
                     [([r["name"] or "", r["webhook_id"], r["status"]], r["n"])
                      for r in t["deliveries"]])


def _gauge(cls, name: str, help_: str, labels: list[str], samples) -> Any:
    g = cls(name, help_, labels=labels)
    for values, v in samples:
        if v is None:
            continue
        v = float(v)
        if v != v:  # NaN: no sample rather than a NaN gauge
            continue
        g.add_metric([str(x) for x in values], v)
    return g


def _prometheus():
    return optional_import("prometheus_client", "ops", "The exporter", what="prometheus-client")


def serve(source: Callable[[], tuple[Snapshot | None, bool]], port: int = 9464,
          host: str = "0.0.0.0"):
    """Serve ``/metrics`` on ``host:port`` in a background thread; returns the HTTP server
    (``server.shutdown()`` stops it)."""
    prometheus_client = _prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Collector(source))
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return server


def render(source: Callable[[], tuple[Snapshot | None, bool]]) -> str:
    """The exposition text of one scrape (for tests and ``--once``)."""
    prometheus_client = _prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Collector(source))
    return prometheus_client.generate_latest(registry).decode("utf-8")
