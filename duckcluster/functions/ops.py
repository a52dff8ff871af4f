"""SQL functions of the operations area: background runs, triggers, webhooks.

Registered through ``duckcluster.functions.AREAS``: :func:`register_udfs` adds the private
``_dc_*`` UDFs on each connection (its own copies); :data:`MACROS` (public TEMP macros
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

import threading
import time

import duckdb

from .._errors import RunCancelledError, SpecError
from ..catalog import ops as store
from ..catalog import runs as catalog
from ..ops import triggers, webhooks
from ..ops.background import Runner, file_reopener
from ._declare import Function, P, decode_options, macros_sql, options, register
from ._registry import cancel_requested

_RUNNER_LOCK = threading.Lock()


def runner_for(state) -> Runner:
    """The background runner of a database instance (created on first use)."""
    with _RUNNER_LOCK:
        runner = state.ops_runner
        if runner is None:
            runner = Runner(state.cursor, state.settings, on_finished=_notify,
                            reopen=file_reopener(state.cursor))
            state.ops_runner = runner
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


def _wait(state, run_id: str, timeout: float | None) -> str:
    if run_id is None:
        raise SpecError("cluster_wait needs a run id; got NULL.")
    timeout = 600.0 if timeout is None else float(timeout)
    with state.cursor() as cur:
        run_id = store.find_run(cur, run_id)
    runner = state.ops_runner
    deadline = time.monotonic() + timeout
    ours = runner is not None and runner.knows(run_id)
    try:
        while True:  # in slices: Ctrl-C (the shell's request_cancel) is seen within 0.1 s
            # a run of this runner is over once its job is done (its connection closed,
            # webhooks sent), not when its status changes; others: poll the catalog
            done = ours and runner.wait(run_id, max(0.0, min(0.1, deadline - time.monotonic())))
            if cancel_requested():
                raise KeyboardInterrupt
            if ours and not done and time.monotonic() < deadline:
                continue
            with state.cursor() as cur:
                status = store.run_status(cur, run_id)
            if ours or status not in store.ACTIVE or time.monotonic() >= deadline:
                return status
            time.sleep(0.1)
    except KeyboardInterrupt:  # raised in here when this UDF runs on the main thread
        _interrupted_wait(runner if ours else None, run_id)
        raise


def _interrupted_wait(runner, run_id: str) -> None:
    """Ctrl-C while cluster_wait waits: a run of this process is cancelled (recorded
    'cancelled' at its next progress report, nothing written); another process's goes on."""
    if runner is None:
        raise RunCancelledError(f"interrupted (Ctrl-C) while waiting for run {run_id}, which "
                                "goes on in the process that runs it.")
    runner.cancel("interrupted (Ctrl-C) while cluster_wait waited for it", [run_id])
    runner.wait(run_id, 60.0)
    raise RunCancelledError(f"cancelled: interrupted (Ctrl-C); run {run_id} was cancelled "
                            "and nothing of it was written.")


def _deliver(state) -> str:
    with state.cursor() as cur:
        catalog.require_writable(cur, "cluster_webhook_deliver")  # every attempt is logged
        done = webhooks.deliver_pending(cur)
    by: dict[str, int] = {}
    for d in done:
        by[d.status] = by.get(d.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(by.items())) or "nothing pending"


def _submit(state):
    def submit(name, mode, threshold):
        runner = runner_for(state)
        with state.cursor() as cur:
            return runner.submit(cur, name, mode or "full", threshold)
    return submit


def _trigger_create(state):
    def trigger_create(args_json):
        with state.cursor() as cur:
            spec = triggers.TriggerSpec.from_dict(decode_options(args_json), triggers.seconds_parser(cur))
            return triggers.create(cur, spec)
    return trigger_create


def _webhook_create(state):
    def webhook_create(args_json):
        spec = webhooks.WebhookSpec.from_dict(decode_options(args_json))
        with state.cursor() as cur:
            return webhooks.create(cur, spec)
    return webhook_create


def _deleter(fn: str, delete, message):
    """The body of a ``fn(id)`` that removes one catalog row and says what it removed."""
    def body(state):
        def run(row_id):
            with state.cursor() as cur:
                catalog.require_writable(cur, fn)
                row = delete(cur, row_id)
            return message(row_id, row)
        return run
    return body


_trigger_delete = _deleter(
    "cluster_trigger_delete", store.delete_trigger,
    lambda i, r: f"deleted trigger {i} ({r['kind']}) of {r['name']!r}; its history is kept")
_webhook_delete = _deleter(
    "cluster_webhook_delete", store.delete_webhook,
    lambda i, r: f"deleted webhook {i} ({r['url']}); its delivery log is kept")


_THRESHOLD = P("assignment_threshold", "NULL", to="arg", sql_type="DOUBLE", cast=True)

#: The regular functions of this area (see :mod:`._declare`).
FUNCTIONS = (
    Function("cluster_submit", "_dc_submit", "VARCHAR", _submit,
             (P("name", to="arg"), P("mode", "'full'", to="arg"), _THRESHOLD),
             doc="queue a run of a definition in the background; returns its run id"),
    Function("cluster_wait", "_dc_wait", "VARCHAR", lambda state: lambda r, t: _wait(state, r, t),
             (P("run_id", to="arg"), P("timeout", "600", to="arg", sql_type="DOUBLE", cast=True)),
             doc="wait for a background run (seconds); returns its final status"),
    Function("cluster_trigger_create", "_dc_trigger_create", "VARCHAR", _trigger_create,
             (P("name"), *options(
                 ("kind", "schedule", "every", "when_rows_added", "when_drift_above", "method",
                  "mode", "assignment_threshold", "timezone", "cooldown", "drift_current",
                  "enabled"),
                 every=P("every", "NULL", expr="CAST(every AS VARCHAR)"),
                 cooldown=P("cooldown", "NULL", expr="CAST(cooldown AS VARCHAR)"))),
             checks=triggers.PARAMS,
             doc="a cron, interval or event trigger run by `duckcluster scheduler`"),
    Function("cluster_trigger_delete", "_dc_trigger_delete", "VARCHAR", _trigger_delete,
             (P("trigger_id", to="arg"),), doc="remove a trigger; its history is kept"),
    Function("cluster_webhook_create", "_dc_webhook_create", "VARCHAR", _webhook_create,
             (P("name"), *options(("url", "secret", "events", "secret_env", "timeout",
                                   "max_attempts"))),
             checks=webhooks.PARAMS,
             doc="a signed webhook called when runs of a definition (or all, name NULL) finish"),
    Function("cluster_webhook_delete", "_dc_webhook_delete", "VARCHAR", _webhook_delete,
             (P("webhook_id", to="arg"),), doc="remove a webhook; its delivery log is kept"),
    Function("cluster_webhook_deliver", "_dc_webhook_deliver", "VARCHAR",
             lambda state: lambda: _deliver(state), null_handling="default",
             doc="deliver pending webhook events now; returns what was sent"),
)


def register_udfs(con: duckdb.DuckDBPyConnection, state) -> None:
    """Private UDFs of one connection (each connection registers its own copies)."""
    from ._registry import _wrap

    def status_run(x):
        with state.cursor() as cur:
            return store.find_run(cur, x)

    register(con, state, FUNCTIONS)
    f = con.create_function
    f("_dc_status_run", _wrap(status_run), ["VARCHAR"], "VARCHAR", side_effects=True,
      null_handling="special")
    f("_dc_trigger_next", _wrap(triggers.next_fire),
      ["VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "TIMESTAMP", "TIMESTAMP", "TIMESTAMP"],
      "TIMESTAMP", null_handling="special")


# the irregular ones: SQL around a UDF call
MACROS = macros_sql(FUNCTIONS) + r"""
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
"""
