"""SQL functions of the operations area: background runs, triggers, webhooks.

Registered through ``duckcluster.functions.AREAS``: :func:`register_udfs` adds the private
``_dc_*`` UDFs once per database instance; :data:`MACROS` (public TEMP macros
with ``:=`` arguments) runs on every connection.

    cluster_submit(name, mode := 'full', assignment_threshold := NULL) -> run_id
    cluster_status(run_id)                       table: status, progress, error, timings
    cluster_wait(run_id, timeout := 600)         -> final status (blocks)
    cluster_trigger_create(name, kind := ..., schedule | every | when_rows_added |
        when_drift_above, method, drift_current, mode, assignment_threshold,
        timezone, cooldown, enabled)             -> trigger_id
    cluster_trigger_delete(trigger_id)           cluster_trigger_list([name])
    cluster_trigger_history([name or trigger_id])
    cluster_webhook_create(name, url := ..., secret := ... | secret_env := ...,
        events := [...], timeout := 10, max_attempts := 4)   -> webhook_id
    cluster_webhook_delete(webhook_id)           cluster_webhook_list([name])
    cluster_webhook_deliveries([name])           cluster_webhook_deliver()
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import duckdb

from .._errors import SpecError
from ..catalog import ops as store
from ..ops import triggers, webhooks
from ..ops.background import Runner, file_reopener

_RUNNER_LOCK = threading.Lock()


def runner_for(state) -> Runner:
    """The background runner of a database instance (created on first use)."""
    with _RUNNER_LOCK:
        runner = state.__dict__.get("ops_runner")
        if runner is None:
            runner = Runner(state.cursor, state.settings, on_finished=_notify,
                            reopen=file_reopener(state.cursor))
            state.__dict__["ops_runner"] = runner
        return runner


def _notify(conn: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """After a background run: label its new clusters (as cluster_execute does), then
    deliver its webhooks (and any other pending ones of it)."""
    from ..labels.labeling import label_after_run

    with conn.cursor() as cur:
        run = cur.execute("SELECT name FROM duckcluster.runs WHERE run_id = ?",
                          [run_id]).fetchall()
        if run:
            label_after_run(cur, run[0][0], run_id)
        webhooks.deliver_pending(cur, subject_id=run_id)


def _options(text: str | None) -> dict[str, Any]:
    return {k: v for k, v in json.loads(text).items() if v is not None} if text else {}


def _wait(state, run_id: str, timeout: float | None) -> str:
    if run_id is None:
        raise SpecError("cluster_wait needs a run id; got NULL.")
    timeout = 600.0 if timeout is None else float(timeout)
    with state.cursor() as cur:
        run_id = store.resolve_run(cur, run_id)
    runner = state.__dict__.get("ops_runner")
    deadline = time.monotonic() + timeout
    if runner is not None and runner.knows(run_id):
        runner.wait(run_id, timeout)
    while True:  # runs of other runners or processes: poll the catalog
        with state.cursor() as cur:
            status = store.run_status(cur, run_id)
        if status not in store.ACTIVE or time.monotonic() >= deadline:
            return status
        time.sleep(0.1)


def _deliver(state) -> str:
    with state.cursor() as cur:
        store.require_writable(cur, "cluster_webhook_deliver")  # every attempt is logged
        done = webhooks.deliver_pending(cur)
    by: dict[str, int] = {}
    for d in done:
        by[d.status] = by.get(d.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(by.items())) or "nothing pending"


def register_udfs(con: duckdb.DuckDBPyConnection, state) -> None:
    """Private UDFs, once per database instance."""
    from ._registry import _wrap

    def submit(name, mode, threshold):
        runner = runner_for(state)
        with state.cursor() as cur:
            return runner.submit(cur, name, mode or "full", threshold)

    def status_run(x):
        with state.cursor() as cur:
            return store.resolve_run(cur, x)

    def trigger_create(args_json):
        args = _options(args_json)
        with state.cursor() as cur:
            spec = triggers.TriggerSpec.from_dict(args, triggers.seconds_parser(cur))
            return triggers.create(cur, spec)

    def trigger_delete(trigger_id):
        with state.cursor() as cur:
            store.require_writable(cur, "cluster_trigger_delete")
            row = store.delete_trigger(cur, trigger_id)
        return f"deleted trigger {trigger_id} ({row['kind']}) of {row['name']!r}; its history is kept"

    def webhook_create(args_json):
        spec = webhooks.WebhookSpec.from_dict(_options(args_json))
        with state.cursor() as cur:
            return webhooks.create(cur, spec)

    def webhook_delete(webhook_id):
        with state.cursor() as cur:
            store.require_writable(cur, "cluster_webhook_delete")
            row = store.delete_webhook(cur, webhook_id)
        return f"deleted webhook {webhook_id} ({row['url']}); its delivery log is kept"

    f = con.create_function
    f("_dc_submit", _wrap(submit), ["VARCHAR", "VARCHAR", "DOUBLE"], "VARCHAR",
      side_effects=True, null_handling="special")
    f("_dc_status_run", _wrap(status_run), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_wait", _wrap(lambda r, t: _wait(state, r, t)), ["VARCHAR", "DOUBLE"], "VARCHAR",
      side_effects=True, null_handling="special")
    f("_dc_trigger_create", _wrap(trigger_create), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_trigger_delete", _wrap(trigger_delete), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_trigger_next", _wrap(triggers.next_fire),
      ["VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "TIMESTAMP", "TIMESTAMP", "TIMESTAMP"],
      "TIMESTAMP", null_handling="special")
    f("_dc_webhook_create", _wrap(webhook_create), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_webhook_delete", _wrap(webhook_delete), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_webhook_deliver", _wrap(lambda: _deliver(state)), [], "VARCHAR", side_effects=True)


MACROS = r"""
CREATE OR REPLACE TEMP MACRO cluster_submit(name, mode := 'full', assignment_threshold := NULL) AS
    _dc_submit(name, mode, CAST(assignment_threshold AS DOUBLE));

CREATE OR REPLACE TEMP MACRO cluster_wait(run_id, timeout := 600) AS
    _dc_wait(run_id, CAST(timeout AS DOUBLE));

CREATE OR REPLACE TEMP MACRO cluster_status(run_id) AS TABLE
    SELECT r.run_id, r.name, r.mode, r.status,
           CASE WHEN r.status = 'succeeded' THEN 'done' ELSE r.progress END AS progress,
           r.error, r.submitted_at,
           r.started_at, r.finished_at,
           coalesce(r.duration_s, CASE WHEN r.status = 'running' THEN
               date_diff('millisecond', r.started_at,
                         CAST(now() AT TIME ZONE 'UTC' AS TIMESTAMP)) / 1000.0 END) AS elapsed_s,
           r.n_rows, r.n_members, r.n_clusters, r.noise_ratio, r.silhouette_score, r.pid
    FROM duckcluster.runs r
    WHERE COLUMNS('^run_id$') = (SELECT _dc_status_run(run_id));

CREATE OR REPLACE TEMP MACRO cluster_trigger_create(name, kind := NULL, schedule := NULL,
    every := NULL, when_rows_added := NULL, when_drift_above := NULL, method := NULL,
    mode := NULL, assignment_threshold := NULL, timezone := NULL, cooldown := NULL,
    drift_current := NULL, enabled := NULL) AS
    _dc_trigger_create(json_object('name', name, 'kind', kind, 'schedule', schedule,
        'every', CAST(every AS VARCHAR), 'when_rows_added', when_rows_added,
        'when_drift_above', when_drift_above, 'method', method, 'mode', mode,
        'assignment_threshold', assignment_threshold, 'timezone', timezone,
        'cooldown', CAST(cooldown AS VARCHAR), 'drift_current', drift_current,
        'enabled', enabled)::VARCHAR);

CREATE OR REPLACE TEMP MACRO cluster_trigger_delete(trigger_id) AS _dc_trigger_delete(trigger_id);

CREATE OR REPLACE TEMP MACRO cluster_trigger_list(cluster_name := NULL) AS TABLE
    SELECT t.trigger_id, t.name, t.kind,
           CASE t.kind
               WHEN 'cron' THEN 'cron ''' || t.schedule || ''' (' || t.timezone || ')'
               WHEN 'interval' THEN 'every ' || CAST(to_seconds(t.every_s) AS VARCHAR)
               ELSE concat_ws(' or ',
                   CASE WHEN t.when_rows_added IS NOT NULL
                        THEN 'rows added >= ' || t.when_rows_added END,
                   CASE WHEN t.when_drift_above IS NOT NULL
                        THEN t.method || ' drift > ' || t.when_drift_above
                             || ' (' || t.drift_current || ')' END)
           END AS condition,
           t.mode, t.enabled, t.created_at, t.last_fired_at,
           _dc_trigger_next(t.kind, t.schedule, t.timezone, t.every_s, t.created_at,
                            t.last_scheduled_at, t.last_fired_at) AS next_fire_at,
           t.last_checked_at, t.last_check, t.last_error,
           (SELECT count(*) FROM duckcluster.trigger_firings f
            WHERE f.trigger_id = t.trigger_id) AS n_firings
    FROM duckcluster.triggers t
    WHERE cluster_name IS NULL OR t.name = cluster_name
    ORDER BY t.created_at, t.trigger_id;

CREATE OR REPLACE TEMP MACRO cluster_trigger_history(cluster_name := NULL) AS TABLE
    SELECT f.fired_at, f.name, f.trigger_id, f.kind, f.reason, f.outcome, f.run_id,
           r.status AS run_status, r.duration_s, r.n_clusters,
           coalesce(f.error, r.error) AS error, f.scheduled_for, f.observed, f.firing_id
    FROM duckcluster.trigger_firings f
    LEFT JOIN duckcluster.runs r ON r.run_id = f.run_id
    WHERE cluster_name IS NULL OR f.name = cluster_name OR f.trigger_id = cluster_name
    ORDER BY f.fired_at, f.firing_id;

CREATE OR REPLACE TEMP MACRO cluster_webhook_create(name, url := NULL, secret := NULL,
    events := NULL, secret_env := NULL, timeout := NULL, max_attempts := NULL) AS
    _dc_webhook_create(json_object('name', name, 'url', url, 'secret', secret,
        'events', events, 'secret_env', secret_env, 'timeout', timeout,
        'max_attempts', max_attempts)::VARCHAR);

CREATE OR REPLACE TEMP MACRO cluster_webhook_delete(webhook_id) AS _dc_webhook_delete(webhook_id);

CREATE OR REPLACE TEMP MACRO cluster_webhook_deliver() AS _dc_webhook_deliver();

CREATE OR REPLACE TEMP MACRO cluster_webhook_list(cluster_name := NULL) AS TABLE
    SELECT w.webhook_id, w.name, w.url, w.events,
           CASE WHEN w.secret IS NOT NULL THEN 'secret (stored, hidden)'
                ELSE 'env ' || w.secret_env END AS signing,
           w.timeout_s, w.max_attempts, w.enabled, w.created_at,
           (SELECT count(DISTINCT d.delivery_id) FROM duckcluster.webhook_deliveries d
            WHERE d.webhook_id = w.webhook_id AND d.status = 'delivered') AS n_delivered,
           (SELECT count(DISTINCT d.delivery_id) FROM duckcluster.webhook_deliveries d
            WHERE d.webhook_id = w.webhook_id AND d.status = 'failed') AS n_failed
    FROM duckcluster.webhooks w
    WHERE cluster_name IS NULL OR w.name = cluster_name OR w.name IS NULL
    ORDER BY w.created_at, w.webhook_id;

CREATE OR REPLACE TEMP MACRO cluster_webhook_deliveries(cluster_name := NULL) AS TABLE
    SELECT d.attempted_at, d.webhook_id, d.name, d.event, d.subject_id, d.delivery_id,
           d.attempt, d.status, d.http_status, d.error, d.duration_s, d.payload
    FROM duckcluster.webhook_deliveries d
    WHERE cluster_name IS NULL OR d.name = cluster_name OR d.webhook_id = cluster_name
    ORDER BY d.attempted_at, d.delivery_id, d.attempt;
"""
