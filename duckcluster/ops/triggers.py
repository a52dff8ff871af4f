"""Triggers: when a definition runs by itself. Validated here, evaluated by the scheduler.

Three kinds, stored in ``duckcluster.triggers``:

- ``cron``: ``schedule`` is a standard 5-field crontab line (minute hour
  day-of-month month day-of-week, 0 and 7 = Sunday) or an ``@hourly`` /
  ``@daily`` / ``@weekly`` / ``@monthly`` / ``@yearly`` alias, read by croniter
  in ``timezone`` (default UTC; DST gaps fire at the next valid time).
- ``interval``: every ``every`` (an INTERVAL, '6 hours', or seconds), counted from
  the last firing (the first one ``every`` after creation).
- ``event``: ``when_rows_added`` fires once the source has at least that many rows
  more than the latest successful run saw (or than the last firing saw, so a failed
  run does not re-fire on the same rows); ``when_drift_above`` fires when the
  drift statistic of ``method`` (default mmd; what the statistic measures differs per
  method: ``DriftMethod.statistic``, listed in docs/operations.md) between the rows of
  the latest successful full run and the current rows exceeds the threshold, and records a
  ``duckcluster.drift_checks`` row each time it is computed (a webhook's
  ``drift.detected`` when above). ``drift_current`` is ``'new_rows'`` (default:
  source rows whose id that run did not see) or ``'source'`` (every source row:
  for tables whose embeddings are rewritten in place). ``every``, if given, is the
  least time between two evaluations; after a firing whose run failed an event
  trigger stays quiet for ``cooldown`` (default 1 hour).

Missed cron and interval firings (the scheduler was down) are coalesced into one
firing when it comes back. Every firing is a row of ``duckcluster.trigger_firings``
with its run id, or with why no run started (a full run of the definition was in
progress: ``skipped``).
"""

from __future__ import annotations

import datetime as _dt
import json
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .._errors import DuckclusterError, SpecError, closest
from .._params import Param, optional_import, validate_params
from .._source import quote_ident, quote_literal, source_sql
from ..catalog import ops as store
from ..catalog import runs as catalog

KINDS = ("cron", "interval", "event")
DRIFT_CURRENT = ("new_rows", "source")
CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly",
                "@annually")
DEFAULT_COOLDOWN_S = 3600.0
DEFAULT_DRIFT_METHOD = "mmd"
_OPTIONS = ("name", "kind", "schedule", "every", "when_rows_added", "when_drift_above", "method",
            "mode", "assignment_threshold", "timezone", "cooldown", "drift_current", "enabled")

#: The scalar options, checked as data before any kind-specific rule (durations, the cron
#: schedule and the drift method have their own parsers below).
PARAMS = {
    "kind": Param(str, choices=KINDS, nullable=True),
    "mode": Param(str, "full", choices=("full", "assign")),
    "assignment_threshold": Param(float, None, low=0.0, high=1.0, nullable=True),
    "when_rows_added": Param(int, None, low=1, nullable=True),
    "when_drift_above": Param(float, None, low=0.0, nullable=True),
    "drift_current": Param(str, None, choices=DRIFT_CURRENT, nullable=True),
    "enabled": Param(bool, True),
}


@dataclass(frozen=True)
class TriggerSpec:
    """A validated ``cluster_trigger_create`` call (durations already in seconds)."""

    name: str
    kind: str
    schedule: str | None = None
    timezone: str | None = None
    every_s: float | None = None
    when_rows_added: int | None = None
    when_drift_above: float | None = None
    method: str | None = None
    drift_current: str | None = None
    mode: str = "full"
    assignment_threshold: float | None = None
    cooldown_s: float | None = None
    enabled: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], seconds: Callable[[Any, str], float]
                  ) -> "TriggerSpec":
        """``seconds(value, field)`` turns an INTERVAL text or number into seconds."""
        d = {k: v for k, v in d.items() if v is not None}
        for key in d:
            if key not in _OPTIONS:
                raise SpecError(f"Unknown trigger option {key!r}.{closest(key, _OPTIONS)} "
                                f"Valid options: {', '.join(_OPTIONS)}.")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError("cluster_trigger_create needs the definition name first, e.g. "
                            "cluster_trigger_create('topics', kind := 'cron', schedule := "
                            "'0 3 * * *').")
        kind = d.get("kind") or _infer_kind(d)
        if kind not in KINDS:
            raise SpecError(f"Unknown trigger kind {kind!r}.{closest(str(kind), KINDS)} Valid "
                            f"kinds: {', '.join(KINDS)}.")
        checked = validate_params("cluster_trigger_create", PARAMS,
                                  {k: v for k, v in d.items() if k in PARAMS})
        d = {**d, **{k: v for k, v in checked.items() if k in d}}
        own = {"cron": {"schedule", "timezone"}, "interval": {"every"},
               "event": {"when_rows_added", "when_drift_above", "method", "drift_current",
                         "every", "cooldown"}}[kind]
        other = sorted(k for k in ("schedule", "timezone", "every", "when_rows_added",
                                   "when_drift_above", "method", "drift_current", "cooldown")
                       if k in d and k not in own)
        if other:
            article = "An" if kind[0] in "aeiou" else "A"
            raise SpecError(f"{article} {kind} trigger does not take {', '.join(other)}. It takes "
                            f"{', '.join(sorted(own))}.")
        out: dict[str, Any] = {"name": name, "kind": kind, "mode": checked["mode"],
                               "assignment_threshold": checked["assignment_threshold"],
                               "enabled": checked["enabled"]}
        if kind == "cron":
            out.update(_cron(d))
        elif kind == "interval":
            if "every" not in d:
                raise SpecError("An interval trigger needs every := INTERVAL 6 HOUR (or "
                                "'30 minutes', or a number of seconds).")
            out["every_s"] = _positive(seconds(d["every"], "every"), "every", 1.0)
        else:
            out.update(_event(d, seconds))
        return cls(**out)


def _infer_kind(d: Mapping[str, Any]) -> str:
    if "schedule" in d:
        return "cron"
    if "when_rows_added" in d or "when_drift_above" in d:
        return "event"
    if "every" in d:
        return "interval"
    raise SpecError("cluster_trigger_create needs kind := 'cron' (with schedule := "
                    "'0 3 * * *'), 'interval' (with every := INTERVAL 6 HOUR) or 'event' (with "
                    "when_rows_added := 10000 and/or when_drift_above := 0.1).")


def _positive(x: float, what: str, low: float) -> float:
    if not x >= low:
        raise SpecError(f"{what!r} must be at least {low:g} second(s). Got {x:g} s.")
    return x


def _croniter():
    return optional_import("croniter", "ops", "A cron trigger").croniter


def _cron(d: Mapping[str, Any]) -> dict[str, Any]:
    croniter = _croniter()
    schedule = d.get("schedule")
    if not isinstance(schedule, str) or not schedule.strip():
        raise SpecError("A cron trigger needs schedule := '<minute> <hour> <day of month> "
                        "<month> <day of week>', e.g. '0 3 * * *' (03:00 every day).")
    schedule = " ".join(schedule.split())
    fields = schedule.split(" ")
    if not (len(fields) == 5 or (len(fields) == 1 and schedule.lower() in CRON_ALIASES)):
        raise SpecError(f"schedule must have 5 fields (minute hour day-of-month month "
                        f"day-of-week) or be one of {', '.join(CRON_ALIASES)}. Got "
                        f"{schedule!r} ({len(fields)} fields).")
    if not croniter.is_valid(schedule):
        try:
            croniter(schedule)
            detail = ""
        except Exception as exc:  # croniter's own words on what is wrong
            detail = f" ({exc})"
        raise SpecError(f"schedule {schedule!r} is not a valid crontab expression{detail}. "
                        "Example: '*/15 * * * *' (every 15 minutes), '0 3 * * 1-5' (03:00 on "
                        "weekdays).")
    tz = d.get("timezone", "UTC")
    _zone(tz)
    return {"schedule": schedule, "timezone": tz}


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise SpecError(f"Unknown timezone {tz!r}. Use an IANA name such as 'UTC', "
                        "'Europe/Paris' or 'America/New_York'.") from None


def _event(d: Mapping[str, Any], seconds: Callable[[Any, str], float]) -> dict[str, Any]:
    rows, drift = d.get("when_rows_added"), d.get("when_drift_above")
    if rows is None and drift is None:
        raise SpecError("An event trigger needs when_rows_added := <rows> and/or "
                        "when_drift_above := <drift statistic>.")
    out: dict[str, Any] = {}
    if rows is not None:  # checked against PARAMS already
        out["when_rows_added"] = int(rows)
    if drift is None and ("method" in d or "drift_current" in d):
        raise SpecError("method and drift_current belong to when_drift_above; give a drift "
                        "threshold too, e.g. when_drift_above := 0.1.")
    if drift is not None:  # a number >= 0 (PARAMS): the drift statistic of the method
        from ..drift import get_method

        method = d.get("method", DEFAULT_DRIFT_METHOD)
        get_method(method)  # unknown -> the valid names
        current = d.get("drift_current", "new_rows")
        out.update(when_drift_above=float(drift), method=method, drift_current=current)
    if "every" in d:
        out["every_s"] = _positive(seconds(d["every"], "every"), "every", 1.0)
    out["cooldown_s"] = _positive(seconds(d["cooldown"], "cooldown"), "cooldown", 0.0) \
        if "cooldown" in d else DEFAULT_COOLDOWN_S
    return out


def create(cur, spec: TriggerSpec) -> str:
    """Store a trigger (the definition must exist); returns its id."""
    catalog.require_writable(cur, "cluster_trigger_create")
    catalog.get_definition(cur, spec.name)
    trigger_id = store.new_id("trg")
    store.insert_trigger(cur, {**asdict(spec), "trigger_id": trigger_id,
                               "created_at": store.now()})
    return trigger_id


# -- when ----------------------------------------------------------------------------------

def _utc(ts: _dt.datetime) -> _dt.datetime:
    return ts.replace(tzinfo=_dt.timezone.utc)


def _naive(ts: _dt.datetime) -> _dt.datetime:
    return ts.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def next_fire(kind: str, schedule: str | None, timezone: str | None, every_s: float | None,
              created_at: _dt.datetime, last_scheduled_at: _dt.datetime | None,
              last_fired_at: _dt.datetime | None) -> _dt.datetime | None:
    """When a cron or interval trigger is next due (naive UTC); None for event triggers."""
    if kind == "cron":
        croniter = _croniter()
        _cron({"schedule": schedule, "timezone": timezone or "UTC"})  # rows of older versions
        base = last_scheduled_at or created_at
        local = _utc(base).astimezone(_zone(timezone or "UTC"))
        return _naive(croniter(schedule, local).get_next(_dt.datetime))
    if kind == "interval":
        return (last_fired_at or created_at) + _dt.timedelta(seconds=float(every_s))
    return None


def next_fire_of(trig: Mapping[str, Any]) -> _dt.datetime | None:
    return next_fire(trig["kind"], trig["schedule"], trig["timezone"], trig["every_s"],
                     trig["created_at"], trig["last_scheduled_at"], trig["last_fired_at"])


@dataclass
class Decision:
    """What an evaluation found: fire or not, why, and the figures behind it."""

    fire: bool
    reason: str
    observed: dict[str, Any]
    scheduled_for: _dt.datetime | None = None


def evaluate(cur, trig: Mapping[str, Any], now: _dt.datetime) -> Decision | None:
    """Is ``trig`` due at ``now``? None when it was not evaluated (not yet time)."""
    if trig["kind"] in ("cron", "interval"):
        due = next_fire_of(trig)
        if due is None or due > now:
            return None
        what = f"cron {trig['schedule']!r} ({trig['timezone']})" if trig["kind"] == "cron" \
            else f"every {_human_s(trig['every_s'])}"
        late = (now - due).total_seconds()
        return Decision(True, f"{what}: due {due:%Y-%m-%d %H:%M:%S} UTC"
                        + (f" (caught up {_human_s(late)} late)" if late > 60 else ""),
                        {"due": due.isoformat()}, scheduled_for=due)
    return _evaluate_event(cur, trig, now)


def _human_s(s: float) -> str:
    s = float(s)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n and s % n == 0:
            k = int(s // n)
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{s:g} s"


def _evaluate_event(cur, trig: Mapping[str, Any], now: _dt.datetime) -> Decision | None:
    if trig["every_s"] and trig["last_checked_at"] is not None and \
            (now - trig["last_checked_at"]).total_seconds() < trig["every_s"]:
        return None
    name = trig["name"]
    last_fire = store.last_firing(cur, trig["trigger_id"])
    if last_fire and last_fire["run_status"] in ("failed", "abandoned") or \
            last_fire and last_fire["outcome"] == "error":
        since = last_fire["run_finished_at"] or last_fire["fired_at"]
        quiet_until = since + _dt.timedelta(seconds=float(trig["cooldown_s"] or 0))
        if now < quiet_until:
            return Decision(False, "cooling down after a failed firing",
                            {"cooldown_until": quiet_until.isoformat(),
                             "failed_run_id": last_fire["run_id"]})
    spec = catalog.get_definition(cur, name)
    src = source_sql(cur, spec.source)
    n_rows = int(cur.execute(f"SELECT count(*) FROM {src}").fetchall()[0][0])
    observed: dict[str, Any] = {"rows": n_rows}
    reasons: list[str] = []
    if trig["when_rows_added"] is not None:
        last = store.latest_succeeded(cur, name)
        base = int(last["n_rows"] or 0) if last else 0
        base_what = f"run {last['run_id']}" if last else "no run yet"
        if last_fire and last_fire["observed"] and (
                last is None or last_fire["fired_at"] > last["finished_at"]):
            seen = json.loads(last_fire["observed"]).get("rows")
            if seen is not None and seen > base:
                base, base_what = int(seen), f"the firing at {last_fire['fired_at']:%H:%M:%S}"
        added = n_rows - base
        observed.update(rows_added=added, rows_base=base)
        if added >= trig["when_rows_added"]:
            reasons.append(f"{added:,} rows added since {base_what} ({base:,} -> {n_rows:,}; "
                           f"threshold {trig['when_rows_added']:,})")
    if trig["when_drift_above"] is not None:
        drift = _check_drift(cur, trig, spec, src, n_rows)
        observed.update(drift)
        stat = drift.get("statistic")
        if stat is not None and stat > trig["when_drift_above"]:
            reasons.append(f"{trig['method']} drift {stat:.4g} > {trig['when_drift_above']:g} "
                           f"against run {drift['baseline_run_id']}")
    if reasons:
        return Decision(True, "; ".join(reasons), observed)
    return Decision(False, "condition not met", observed)


def _check_drift(cur, trig: Mapping[str, Any], spec, src: str, n_rows: int) -> dict[str, Any]:
    """Drift of the current rows against the latest full run; a drift_checks row if computed."""
    from ..drift import get_method
    from ..drift import sides as _drift
    from ..drift.spec import DriftSpec

    base = store.latest_succeeded(cur, spec.name, mode="full")
    if base is None:
        return {"drift_note": "no successful full run yet: nothing to compare against"}
    key = [base["run_id"], n_rows]
    prev = json.loads(trig["last_check"]) if trig["last_check"] else {}
    if prev.get("drift_key") == key and "statistic" in prev:
        return {k: prev[k] for k in ("statistic", "p_value", "baseline_run_id", "drift_key",
                                     "check_id") if k in prev}
    current = trig["drift_current"] or "new_rows"
    if current == "new_rows":
        id_col = quote_ident(spec.id or "id")
        side = (f"(SELECT * FROM {src} WHERE CAST({id_col} AS VARCHAR) NOT IN "
                f"(SELECT m.id FROM duckcluster.members m WHERE m.run_id = "
                f"{quote_literal(base['run_id'])}))")
        n_current = int(cur.execute(f"SELECT count(*) FROM {side}").fetchall()[0][0])
    else:
        side, n_current = spec.source, n_rows
    need = get_method(trig["method"]).min_rows
    if n_current < need:
        return {"drift_note": f"{n_current} current rows; {trig['method']} needs at least "
                              f"{need}", "baseline_run_id": base["run_id"], "drift_key": key}
    options: dict[str, Any] = {"method": trig["method"], "embedding": list(spec.embedding),
                               "seed": spec.seed}
    if getattr(spec, "pooling", None):
        options["pooling"] = spec.pooling
    if trig["method"] == "cluster":
        options["reference_run"] = base["run_id"]
    dspec = DriftSpec.from_dict(options)
    row = _drift.embedding_drift(cur, f"{_drift.RUN_PREFIX}{base['run_id']}", side, dspec)[0]
    stat = row.get("statistic")
    above = stat is not None and stat > trig["when_drift_above"]
    check_id = store.insert_drift_check(cur, {
        "name": spec.name, "trigger_id": trig["trigger_id"], "method": trig["method"],
        "baseline_run_id": base["run_id"], "drift_current": current, "statistic": stat,
        "p_value": row.get("p_value"), "alpha": row.get("threshold"),
        "drift_detected": row.get("drift_detected"), "threshold": trig["when_drift_above"],
        "above_threshold": above, "n_baseline": row.get("n_baseline"),
        "n_current": row.get("n_current"), "details": row.get("details")})
    return {"statistic": stat, "p_value": row.get("p_value"), "baseline_run_id": base["run_id"],
            "drift_key": key, "check_id": check_id}


# -- firing --------------------------------------------------------------------------------

def fire(cur, runner, trig: Mapping[str, Any], decision: Decision) -> tuple[str, str | None]:
    """Submit the trigger's run and record the firing; returns (firing_id, run_id or None)."""
    from .background import RunInProgressError

    firing: dict[str, str] = {}

    def record(run_id: str) -> None:
        firing["id"] = store.record_firing(cur, trig, reason=decision.reason,
                                           scheduled_for=decision.scheduled_for,
                                           observed=decision.observed, run_id=run_id)

    try:
        run_id = runner.submit(cur, trig["name"], trig["mode"], trig["assignment_threshold"],
                               on_queued=record)
    except RunInProgressError as exc:
        fid = store.record_firing(cur, trig, reason=decision.reason,
                                  scheduled_for=decision.scheduled_for,
                                  observed=decision.observed, outcome="skipped", error=str(exc))
        return fid, None
    except DuckclusterError as exc:
        fid = store.record_firing(cur, trig, reason=decision.reason,
                                  scheduled_for=decision.scheduled_for,
                                  observed=decision.observed, outcome="error",
                                  error=f"{type(exc).__name__}: {exc}")
        return fid, None
    return firing["id"], run_id


def seconds_parser(cur) -> Callable[[Any, str], float]:
    """Turn an INTERVAL, its text ('6 hours', '00:30:00') or a number into seconds."""
    def parse(value: Any, what: str) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, _dt.timedelta):
            return value.total_seconds()
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return float(cur.execute("SELECT epoch(CAST(? AS INTERVAL))",
                                     [text]).fetchall()[0][0])
        except Exception:
            raise SpecError(f"{what!r} must be an INTERVAL (INTERVAL 6 HOUR, '30 minutes') or "
                            f"a number of seconds. Got {value!r}.") from None
    return parse
