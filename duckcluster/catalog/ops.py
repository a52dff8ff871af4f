"""Catalog I/O of the operations area: queued runs, triggers, firings, drift checks, webhooks.

The only module that reads and writes those ``duckcluster.*`` tables (and the
``progress`` / ``submitted_at`` columns of ``duckcluster.runs``). DDL:
``sql/catalog_ops.sql``. Every statement auto-commits on the cursor it is given
unless the caller opened a transaction.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _json
from .._errors import RunNotFoundError, SpecError, UnknownNameError, closest
from .._secrets import scrub, scrub_value
from ..core.spec import ClusterSpec
from . import runs as catalog

ACTIVE = ("queued", "running")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def _rows(cur, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    rel = cur.execute(sql, list(params))
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r)) for r in rel.fetchall()]





# -- runs ---------------------------------------------------------------------------------

def queue_run(cur, spec: ClusterSpec, mode: str, threshold: float | None) -> str:
    """Insert a run row with status 'queued' (committed at once) and return its id."""
    run_id = catalog.start_run(cur, spec, mode, threshold, status="queued", verb="submit")
    cur.execute("UPDATE duckcluster.runs SET submitted_at = started_at, progress = 'queued' "
                "WHERE run_id = ?", [run_id])
    return run_id


def mark_started(cur, run_id: str) -> None:
    """The run left the queue: started_at is now, so duration_s is execution time."""
    cur.execute("UPDATE duckcluster.runs SET started_at = ?, progress = 'starting' "
                "WHERE run_id = ? AND status = 'queued'", [catalog.now(), run_id])


def set_progress(cur, run_id: str, text: str) -> None:
    cur.execute("UPDATE duckcluster.runs SET progress = ? WHERE run_id = ?", [text, run_id])


def run_status(cur, run_id: str) -> str | None:
    row = cur.execute("SELECT status FROM duckcluster.runs WHERE run_id = ?",
                      [run_id]).fetchall()
    return row[0][0] if row else None


def active_runs(cur, name: str, mode: str | None = None, process_token: str | None = None
                ) -> list[dict[str, Any]]:
    """Runs of ``name`` that are queued or running (of one mode / process if given; a
    process is its :func:`~duckcluster.catalog.runs.process_token`, not its pid)."""
    q = ("SELECT run_id, mode, status, started_at, pid FROM duckcluster.runs WHERE name = ? "
         "AND status IN ('queued', 'running')")
    params: list[Any] = [name]
    if mode is not None:
        q += " AND mode = ?"
        params.append(mode)
    if process_token is not None:
        q += " AND process_token = ?"
        params.append(process_token)
    return _rows(cur, q + " ORDER BY run_seq", params)


def find_run(cur, run_or_name: str) -> str:
    """A run id as given, or the latest run (any status) of a definition name."""
    if run_or_name is None:
        raise SpecError("cluster_status needs a run id (or a definition name); got NULL.")
    row = cur.execute("SELECT run_id FROM duckcluster.runs WHERE run_id = ?",
                      [run_or_name]).fetchall()
    if row:
        return row[0][0]
    row = cur.execute("SELECT r.run_id FROM duckcluster.runs r JOIN duckcluster.definitions d "
                      f"ON d.name = r.name AND {catalog.INCARNATION} WHERE r.name = ? "
                      "ORDER BY r.run_seq DESC LIMIT 1", [run_or_name]).fetchall()
    if row:
        return row[0][0]
    recent = [r[0] for r in cur.execute(
        "SELECT run_id FROM duckcluster.runs ORDER BY run_seq DESC LIMIT 200").fetchall()]
    raise RunNotFoundError(
        f"No run with id {run_or_name!r} (and no definition of that name with runs)."
        f"{closest(run_or_name, recent)} List runs with SELECT * FROM cluster_runs('<name>').")


def fail_queued(cur, run_id: str, error: str, status: str = "failed") -> None:
    """Record a run that never left the queue (or stopped before execute took it) as
    failed (or ``status``: 'cancelled')."""
    if run_status(cur, run_id) in ACTIVE:
        catalog.fail_run(cur, run_id, error, status=status)


# -- triggers -----------------------------------------------------------------------------

TRIGGER_COLUMNS = ("trigger_id", "name", "kind", "schedule", "timezone", "every_s",
                   "when_rows_added", "when_drift_above", "method", "drift_current", "mode",
                   "assignment_threshold", "cooldown_s", "enabled", "created_at")


def insert_trigger(cur, row: Mapping[str, Any]) -> None:
    cols = ", ".join(TRIGGER_COLUMNS)
    cur.execute(f"INSERT INTO duckcluster.triggers ({cols}) VALUES "
                f"({', '.join('?' for _ in TRIGGER_COLUMNS)})",
                [row.get(c) for c in TRIGGER_COLUMNS])


def triggers(cur, name: str | None = None, enabled_only: bool = False) -> list[dict[str, Any]]:
    q = "SELECT * FROM duckcluster.triggers WHERE 1 = 1"
    params: list[Any] = []
    if name is not None:
        q += " AND name = ?"
        params.append(name)
    if enabled_only:
        q += " AND enabled"
    return _rows(cur, q + " ORDER BY created_at, trigger_id", params)


def get_trigger(cur, trigger_id: str) -> dict[str, Any]:
    rows = _rows(cur, "SELECT * FROM duckcluster.triggers WHERE trigger_id = ?", [trigger_id])
    if not rows:
        ids = [r["trigger_id"] for r in triggers(cur)]
        raise UnknownNameError(
            f"No trigger with id {trigger_id!r}.{closest(str(trigger_id), ids)} List them with "
            "SELECT * FROM cluster_trigger_list().")
    return rows[0]


def delete_trigger(cur, trigger_id: str) -> dict[str, Any]:
    row = get_trigger(cur, trigger_id)
    cur.execute("DELETE FROM duckcluster.triggers WHERE trigger_id = ?", [trigger_id])
    return row


def definition_exists(cur, name: str) -> bool:
    return cur.execute("SELECT count(*) FROM duckcluster.definitions WHERE name = ?",
                       [name]).fetchall()[0][0] > 0


def disable_trigger(cur, trigger_id: str, error: str) -> None:
    cur.execute("UPDATE duckcluster.triggers SET enabled = false, last_checked_at = ?, "
                "last_error = ? WHERE trigger_id = ?", [catalog.now(), scrub(error), trigger_id])


def note_check(cur, trigger_id: str, observed: Mapping[str, Any] | None,
               error: str | None) -> None:
    cur.execute("UPDATE duckcluster.triggers SET last_checked_at = ?, last_check = ?, "
                "last_error = ? WHERE trigger_id = ?",
                [catalog.now(),
                 _json.dumps(scrub_value(observed), sort_keys=False) if observed else None,
                 scrub(error), trigger_id])


def record_firing(cur, trig: Mapping[str, Any], *, reason: str, scheduled_for=None,
                  observed: Mapping[str, Any] | None = None, run_id: str | None = None,
                  outcome: str = "submitted", error: str | None = None) -> str:
    """One firing row plus the trigger's last_fired_at / last_scheduled_at, in one transaction."""
    firing_id = f"fire_{catalog.now():%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"
    ts = catalog.now()
    cur.execute("BEGIN")
    try:
        cur.execute("INSERT INTO duckcluster.trigger_firings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?)",
                    [firing_id, trig["trigger_id"], trig["name"], trig["kind"], ts,
                     scheduled_for, scrub(reason),
                     _json.dumps(scrub_value(observed), sort_keys=False)
                     if observed is not None else None, run_id, outcome, scrub(error)])
        cur.execute("UPDATE duckcluster.triggers SET last_fired_at = ?, "
                    "last_scheduled_at = coalesce(?, last_scheduled_at) WHERE trigger_id = ?",
                    [ts, scheduled_for and ts, trig["trigger_id"]])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return firing_id


def last_firing(cur, trigger_id: str) -> dict[str, Any] | None:
    rows = _rows(cur, "SELECT f.*, r.status AS run_status, r.finished_at AS run_finished_at "
                      "FROM duckcluster.trigger_firings f LEFT JOIN duckcluster.runs r "
                      "USING (run_id) WHERE f.trigger_id = ? ORDER BY f.fired_at DESC LIMIT 1",
                 [trigger_id])
    return rows[0] if rows else None


def latest_succeeded(cur, name: str, mode: str | None = None) -> dict[str, Any] | None:
    q = ("SELECT r.run_id, r.mode, r.n_rows, r.finished_at FROM duckcluster.runs r JOIN "
         f"duckcluster.definitions d ON d.name = r.name AND {catalog.INCARNATION} WHERE "
         "r.name = ? AND r.status = 'succeeded'" + (" AND r.mode = ?" if mode else "") +
         " ORDER BY r.run_seq DESC LIMIT 1")
    rows = _rows(cur, q, [name, mode] if mode else [name])
    return rows[0] if rows else None


# -- drift checks -------------------------------------------------------------------------

def insert_drift_check(cur, row: Mapping[str, Any]) -> str:
    check_id = f"chk_{catalog.now():%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"
    cols = ("check_id", "name", "trigger_id", "checked_at", "method", "baseline_run_id",
            "drift_current", "statistic", "p_value", "alpha", "drift_detected", "threshold",
            "above_threshold", "n_baseline", "n_current", "details")
    values = {**row, "check_id": check_id, "checked_at": catalog.now(),
              "details": _json.dumps(row.get("details") or {}, sort_keys=False)}
    cur.execute(f"INSERT INTO duckcluster.drift_checks ({', '.join(cols)}) VALUES "
                f"({', '.join('?' for _ in cols)})", [values.get(c) for c in cols])
    return check_id


def get_drift_check(cur, check_id: str) -> dict[str, Any]:
    return _rows(cur, "SELECT * FROM duckcluster.drift_checks WHERE check_id = ?",
                 [check_id])[0]


# -- webhooks -----------------------------------------------------------------------------

WEBHOOK_COLUMNS = ("webhook_id", "name", "url", "events", "secret", "secret_env", "timeout_s",
                   "max_attempts", "enabled", "created_at")


def insert_webhook(cur, row: Mapping[str, Any]) -> None:
    cur.execute(f"INSERT INTO duckcluster.webhooks ({', '.join(WEBHOOK_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in WEBHOOK_COLUMNS)})",
                [row.get(c) for c in WEBHOOK_COLUMNS])


def get_webhook(cur, webhook_id: str) -> dict[str, Any]:
    rows = _rows(cur, "SELECT * FROM duckcluster.webhooks WHERE webhook_id = ?", [webhook_id])
    if not rows:
        ids = [r[0] for r in cur.execute(
            "SELECT webhook_id FROM duckcluster.webhooks").fetchall()]
        raise UnknownNameError(
            f"No webhook with id {webhook_id!r}.{closest(str(webhook_id), ids)} List them with "
            "SELECT * FROM cluster_webhook_list().")
    return rows[0]


def delete_webhook(cur, webhook_id: str) -> dict[str, Any]:
    row = get_webhook(cur, webhook_id)
    cur.execute("DELETE FROM duckcluster.webhooks WHERE webhook_id = ?", [webhook_id])
    return row


_PENDING = """
WITH events AS (
    SELECT r.name, r.run_id AS subject_id,
           CASE WHEN r.status = 'succeeded' THEN 'run.succeeded' ELSE 'run.failed' END AS event,
           r.finished_at AS at
    FROM duckcluster.runs r
    WHERE r.status IN ('succeeded', 'failed', 'abandoned') AND r.finished_at IS NOT NULL
    UNION ALL
    SELECT c.name, c.check_id, 'drift.detected', c.checked_at
    FROM duckcluster.drift_checks c WHERE c.above_threshold
)
SELECT w.webhook_id, e.name, e.event, e.subject_id
FROM duckcluster.webhooks w JOIN events e
  ON (w.name IS NULL OR w.name = e.name) AND list_contains(w.events, e.event)
 AND e.at >= w.created_at
WHERE w.enabled {extra}
  AND NOT EXISTS (SELECT 1 FROM duckcluster.webhook_deliveries d
                  WHERE d.webhook_id = w.webhook_id AND d.event = e.event
                    AND d.subject_id = e.subject_id)
ORDER BY e.at, w.webhook_id
"""


def pending_events(cur, subject_id: str | None = None) -> list[dict[str, Any]]:
    """(webhook, event, subject) triples with no delivery row yet: the outbox."""
    if subject_id is None:
        return _rows(cur, _PENDING.format(extra=""))
    return _rows(cur, _PENDING.format(extra="AND e.subject_id = ?"), [subject_id])


def log_attempt(cur, row: Mapping[str, Any]) -> None:
    row = {**row, "error": scrub(row.get("error")), "payload": scrub(row.get("payload"))}
    cols = ("delivery_id", "webhook_id", "name", "event", "subject_id", "attempt",
            "attempted_at", "status", "http_status", "error", "duration_s", "payload")
    cur.execute(f"INSERT INTO duckcluster.webhook_deliveries ({', '.join(cols)}) VALUES "
                f"({', '.join('?' for _ in cols)})", [row.get(c) for c in cols])


def run_row(cur, run_id: str) -> dict[str, Any]:
    return catalog.get_run(cur, run_id)


def firing_of_run(cur, run_id: str) -> dict[str, Any] | None:
    rows = _rows(cur, "SELECT firing_id, trigger_id, kind, reason FROM "
                      "duckcluster.trigger_firings WHERE run_id = ?", [run_id])
    return rows[0] if rows else None


def now() -> _dt.datetime:
    return catalog.now()


def this_pid() -> int:
    return os.getpid()
