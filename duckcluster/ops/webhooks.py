"""Signed webhooks: a JSON POST on ``run.succeeded``, ``run.failed`` and ``drift.detected``.

Delivery works from an outbox: an event is pending for a webhook while
``duckcluster.webhook_deliveries`` has no final row (``delivered`` or
``failed``) for that (webhook, event, subject). Runs finished by any means
(``cluster_submit``, a trigger, or ``cluster_execute`` in any session) and drift
checks above a trigger's threshold are therefore delivered by the next sweep:
at the end of each background run (before ``cluster_wait`` returns; a slow
receiver delays the next queued run), on every scheduler tick, or on
``SELECT cluster_webhook_deliver()``. Only events after the webhook's creation
are sent. Every HTTP attempt is one row of ``duckcluster.webhook_deliveries``.

The request::

    POST <url>
    Content-Type: application/json
    User-Agent: duckcluster/<version>
    X-Duckcluster-Event: run.succeeded
    X-Duckcluster-Delivery: dlv_...          same id on every retry: deduplicate on it
    X-Duckcluster-Attempt: 1
    X-Duckcluster-Signature: sha256=<hex>    HMAC-SHA256(secret, raw body)

    {"cluster": "topics", "created_at": "...Z", "delivery_id": "dlv_...",
     "event": "run.succeeded", "run": {...}, "trigger": {...} | null}

To verify, compute HMAC-SHA256 with the shared secret over the **raw request
body bytes** (before any JSON parsing), hex-encode it, prefix ``sha256=`` and
compare in constant time (:func:`verify_signature` does this). The body carries
``created_at`` and ``delivery_id``, so a receiver can refuse stale or replayed
deliveries.

Retries (``duckcluster._http.post``, shared with the LLM providers): timeouts,
connection errors, HTTP 408/409/425/429 and 5xx are retried up to ``max_attempts`` (default 4) with exponential backoff from 0.5 s (doubling,
capped at 8 s, ``Retry-After`` honoured up to the cap); any 2xx is success; other
statuses (4xx, unfollowed 3xx) fail at once. A delivery interrupted by a shutdown
resumes at its next attempt on the next sweep.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _http, _secrets
from .._errors import SpecError, closest
from .._http import RetryPolicy
from .._params import Param, validate_params
from .._version import __version__
from ..catalog import ops as store

if TYPE_CHECKING:  # imported where it is used: 0.1-0.3 s of every fresh process
    import httpx

log = logging.getLogger("duckcluster.webhooks")

EVENTS = ("run.succeeded", "run.failed", "drift.detected")
SIGNATURE_HEADER = "X-Duckcluster-Signature"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 4
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
_SWEEP_LOCK = threading.Lock()
_RUN_FIELDS = ("run_id", "name", "mode", "status", "error", "progress", "submitted_at",
               "started_at", "finished_at", "duration_s", "n_rows", "n_null", "n_members",
               "n_clusters", "dim", "base_run_id", "assignment_threshold", "silhouette_score",
               "mean_cosine_to_centroid", "noise_ratio", "cluster_size_entropy",
               "davies_bouldin", "calinski_harabasz", "should_recluster", "artifacts_path")
_DRIFT_FIELDS = ("check_id", "checked_at", "method", "statistic", "p_value", "alpha",
                 "drift_detected", "threshold", "above_threshold", "baseline_run_id",
                 "drift_current", "n_baseline", "n_current")


# -- signatures -------------------------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body with secret>``: the signature header's value."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True if ``header`` is the signature of the raw ``body`` under ``secret``.

    >>> body = b'{"event": "run.succeeded"}'
    >>> verify_signature("s3cret", body, sign("s3cret", body))
    True
    >>> verify_signature("s3cret", body + b" ", sign("s3cret", body))
    False
    """
    return bool(header) and hmac.compare_digest(sign(secret, body), header.strip())


# -- definitions ------------------------------------------------------------------------

_URL_HELP = "e.g. url := 'https://hooks.example.com/duckcluster'"


def check_url(url: Any) -> str:
    """``url`` if it is an http(s) URL with a host that the HTTP client accepts as it is;
    else a :class:`SpecError` saying what is wrong. Control characters and spaces (CR/LF
    would split the request) are refused, not silently dropped as ``urlsplit`` does."""
    if not isinstance(url, str) or not url.strip():
        raise SpecError(f"cluster_webhook_create: url must be an http:// or https:// URL, "
                        f"{_URL_HELP}. Got {url!r}.")
    for i, ch in enumerate(url):
        if ord(ch) <= 0x20 or 0x7f <= ord(ch) <= 0x9f:
            raise SpecError(
                f"cluster_webhook_create: url must not contain spaces or control characters "
                f"(CR, LF, tab...); found {ch!r} at position {i}. Percent-encode it (%20, %0D, "
                f"%0A) or remove it. Got {url!r}.")
    import httpx

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0-65535
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise SpecError(f"cluster_webhook_create: url {url!r} is not a valid URL ({exc}); "
                        f"{_URL_HELP}.") from None
    if parts.scheme not in ("http", "https"):
        raise SpecError(f"cluster_webhook_create: url must be an http:// or https:// URL, "
                        f"{_URL_HELP}. Got {url!r}.")
    if not parts.hostname:
        raise SpecError(f"cluster_webhook_create: url {url!r} has no host; {_URL_HELP}.")
    del port
    return url

#: The numeric options of cluster_webhook_create, checked as data.
PARAMS = {
    "timeout": Param(float, DEFAULT_TIMEOUT_S, low=0.0, high=300.0, low_open=True,
                     doc="seconds per delivery attempt"),
    "max_attempts": Param(int, DEFAULT_MAX_ATTEMPTS, low=1, high=20,
                          doc="attempts per event, with exponential backoff"),
}


@dataclass(frozen=True)
class WebhookSpec:
    """A validated ``cluster_webhook_create`` call."""

    name: str | None
    url: str
    events: tuple[str, ...]
    secret: str | None
    secret_env: str | None
    timeout_s: float
    max_attempts: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WebhookSpec":
        d = {k: v for k, v in d.items() if v is not None}
        known = {"name", "url", "events", "secret", "secret_env", "timeout", "max_attempts"}
        for key in d:
            if key not in known:
                raise SpecError(f"Unknown webhook option {key!r}.{closest(key, known)} Valid "
                                f"options: {', '.join(sorted(known))}.")
        url = check_url(d.get("url"))
        events = d.get("events", list(EVENTS))
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",") if e.strip()] \
                if not events.strip().startswith("[") else json.loads(events)
        if not events:
            raise SpecError(f"cluster_webhook_create: events must list at least one of "
                            f"{', '.join(EVENTS)}. Got an empty list.")
        for e in events:
            if e not in EVENTS:
                raise SpecError(f"Unknown webhook event {e!r}.{closest(str(e), EVENTS)} Valid "
                                f"events: {', '.join(EVENTS)}.")
        secret, secret_env = d.get("secret"), d.get("secret_env")
        for key, value in (("secret", secret), ("secret_env", secret_env)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SpecError(f"cluster_webhook_create: {key} must be a non-empty string "
                                + ("(the shared signing secret)" if key == "secret" else
                                   "naming the environment variable that holds the secret")
                                + f", or NULL. Got {value!r}.")
        if not secret and not secret_env:
            raise SpecError("cluster_webhook_create needs secret := '...' (or secret_env := "
                            "'ENV_VAR' naming an environment variable that holds it): every "
                            f"delivery is signed with HMAC-SHA256 in the {SIGNATURE_HEADER} "
                            "header.")
        if secret and secret_env:
            raise SpecError("cluster_webhook_create: give secret or secret_env, not both.")
        checked = validate_params("cluster_webhook_create", PARAMS,
                                  {k: d.get(k) for k in PARAMS})
        return cls(name=d.get("name"), url=url, events=tuple(dict.fromkeys(events)),
                   secret=secret, secret_env=secret_env, timeout_s=checked["timeout"],
                   max_attempts=checked["max_attempts"])


def create(cur, spec: WebhookSpec) -> str:
    from ..catalog import runs as catalog

    catalog.require_writable(cur, "cluster_webhook_create")
    if spec.name is not None:
        catalog.get_definition(cur, spec.name)
    webhook_id = store.new_id("wh")
    store.insert_webhook(cur, {
        "webhook_id": webhook_id, "name": spec.name, "url": spec.url,
        "events": list(spec.events), "secret": spec.secret, "secret_env": spec.secret_env,
        "timeout_s": spec.timeout_s, "max_attempts": spec.max_attempts, "enabled": True,
        "created_at": store.now()})
    return webhook_id


# -- payloads ---------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, _dt.datetime):
        return v.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    return v


def payload(cur, event: str, subject_id: str, delivery_id: str) -> dict[str, Any]:
    """The JSON body of one delivery."""
    body: dict[str, Any] = {"event": event, "delivery_id": delivery_id,
                            "created_at": _jsonable(store.now())}
    if event == "drift.detected":
        check = store.get_drift_check(cur, subject_id)
        body["cluster"] = check["name"]
        body["drift"] = {k: _jsonable(check.get(k)) for k in _DRIFT_FIELDS}
        trig_id = check.get("trigger_id")
        body["trigger"] = {"trigger_id": trig_id} if trig_id else None
    else:
        run = store.run_row(cur, subject_id)
        body["cluster"] = run["name"]
        body["run"] = {k: _jsonable(run.get(k)) for k in _RUN_FIELDS}
        firing = store.firing_of_run(cur, subject_id)
        body["trigger"] = firing
    return body


# -- delivery ---------------------------------------------------------------------------

@dataclass
class Delivery:
    """What one delivery came to."""

    delivery_id: str
    webhook_id: str
    event: str
    subject_id: str
    status: str  # delivered | failed | interrupted
    attempts: int
    error: str | None = None


def _headers(event: str, delivery_id: str, attempt: int, signature: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "User-Agent": f"duckcluster/{__version__}",
            "X-Duckcluster-Event": event, "X-Duckcluster-Delivery": delivery_id,
            "X-Duckcluster-Attempt": str(attempt), SIGNATURE_HEADER: signature}


def _resume(cur, webhook_id: str, event: str, subject_id: str) -> tuple[str, int, str | None]:
    """(delivery_id, attempts made, payload) of an interrupted delivery, or a new id."""
    row = cur.execute(
        "SELECT delivery_id, max(attempt), any_value(payload) FROM duckcluster.webhook_deliveries"
        " WHERE webhook_id = ? AND event = ? AND subject_id = ? GROUP BY delivery_id",
        [webhook_id, event, subject_id]).fetchall()
    if row:
        return row[0][0], int(row[0][1]), row[0][2]
    return store.new_id("dlv"), 0, None


def deliver(cur, hook: Mapping[str, Any], event: str, subject_id: str,
            client: httpx.Client, stop: threading.Event | None = None,
            backoff: float | None = None) -> Delivery:
    """Send one event to one webhook with retries; every attempt is logged."""
    delivery_id, done, body_text = _resume(cur, hook["webhook_id"], event, subject_id)
    _secrets.remember(hook["secret"])
    if hook.get("secret_env"):
        _secrets.watch_env(hook["secret_env"])
    if body_text is None:  # a receiver never gets a known secret either
        body = json.dumps(_secrets.scrub_value(payload(cur, event, subject_id, delivery_id)),
                          sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    else:
        body = body_text.encode("utf-8")
    policy = RetryPolicy(max_retries=int(hook["max_attempts"]) - 1,
                         backoff=BACKOFF_S if backoff is None else backoff,
                         max_backoff=MAX_BACKOFF_S, timeout=float(hook["timeout_s"]))
    base = {"delivery_id": delivery_id, "webhook_id": hook["webhook_id"], "name": hook["name"],
            "event": event, "subject_id": subject_id, "payload": body.decode("utf-8")}

    def logged(attempt: int, status: str, http_status=None, error=None, took=None) -> None:
        store.log_attempt(cur, {**base, "attempt": attempt, "attempted_at": store.now(),
                                "status": status, "http_status": http_status,
                                "error": error, "duration_s": took})

    secret = hook["secret"]
    if not secret and hook.get("secret_env"):
        secret = os.environ.get(hook["secret_env"])
        if not secret:
            err = (f"environment variable {hook['secret_env']!r} (the webhook's secret_env) is "
                   "not set, so the delivery cannot be signed; set it where the scheduler runs")
            logged(done + 1, "failed", error=err)
            return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "failed",
                            done + 1, err)
    try:  # a row written by an older version may hold a URL the client cannot send to
        check_url(hook["url"])
    except SpecError as exc:
        err = (f"the webhook's url is invalid, so nothing was sent: {exc} Replace the webhook "
               f"(SELECT cluster_webhook_delete('{hook['webhook_id']}'), then "
               "cluster_webhook_create).")
        logged(done + 1, "failed", error=err)
        return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "failed",
                        done + 1, err)
    signature = sign(secret, body)
    if done >= policy.max_retries + 1:  # resumed after the last attempt was logged
        err = f"gave up after {done} attempts"
        logged(done, "failed", error=err)
        return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "failed", done, err)
    a = _http.post(client, hook["url"], policy, content=body, first=done + 1,
                   headers=lambda n: _headers(event, delivery_id, n, signature),
                   on_retry=lambda a: logged(a.number, "retrying", a.status, a.error, a.seconds),
                   wait=None if stop is None else stop.wait)
    if a.ok:
        logged(a.number, "delivered", a.status, None, a.seconds)
        return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "delivered",
                        a.number)
    if a.interrupted:  # its 'retrying' row is logged: the next sweep resumes it
        return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "interrupted",
                        a.number, a.error)
    final = a.error + ("; gave up after {} attempts".format(a.number) if a.retry else
                       " (not retried: only timeouts, connection errors, 408/409/425/429 "
                       "and 5xx are)")
    logged(a.number, "failed", a.status, final, a.seconds)
    return Delivery(delivery_id, hook["webhook_id"], event, subject_id, "failed", a.number,
                    final)


def _pending_not_final(cur, subject_id: str | None) -> list[dict[str, Any]]:
    """The outbox, plus interrupted deliveries (a 'retrying' last row)."""
    rows = store.pending_events(cur, subject_id)
    q = ("SELECT d.webhook_id, d.name, d.event, d.subject_id "
         "FROM duckcluster.webhook_deliveries d "
         "JOIN duckcluster.webhooks w ON w.webhook_id = d.webhook_id WHERE w.enabled "
         + ("AND d.subject_id = ? " if subject_id else "") +
         "GROUP BY ALL HAVING bool_and(d.status = 'retrying') ORDER BY min(d.attempted_at)")
    rel = cur.execute(q, [subject_id] if subject_id else [])
    cols = [c[0] for c in rel.description]
    return rows + [dict(zip(cols, r)) for r in rel.fetchall()]


def _record_broken(cur, p: Mapping[str, Any], exc: Exception) -> Delivery:
    """A delivery that failed in an unexpected way: logged as failed (so it is not retried
    forever), and the sweep goes on."""
    err = f"delivery failed: {type(exc).__name__}: {exc}"
    log.warning("webhook %s %s %s: %s", p["webhook_id"], p["event"], p["subject_id"], err)
    delivery_id = store.new_id("dlv")
    try:
        store.log_attempt(cur, {"delivery_id": delivery_id, "webhook_id": p["webhook_id"],
                                "name": p.get("name"), "event": p["event"],
                                "subject_id": p["subject_id"], "attempt": 1,
                                "attempted_at": store.now(), "status": "failed",
                                "error": err})
    except Exception as log_exc:  # noqa: BLE001 - the database itself refused: said above
        log.warning("could not record it: %s", log_exc)
    return Delivery(delivery_id, p["webhook_id"], p["event"], p["subject_id"], "failed", 1, err)


def deliver_pending(cur, subject_id: str | None = None, stop: threading.Event | None = None,
                    client: httpx.Client | None = None,
                    backoff: float | None = None) -> list[Delivery]:
    """Deliver every pending event (of one run / drift check if given). One sweep at a time."""
    out: list[Delivery] = []
    with _SWEEP_LOCK:
        pending = _pending_not_final(cur, subject_id)
        if not pending:
            return out
        hooks: dict[str, dict[str, Any]] = {}
        own = client is None
        if own:
            import httpx

            client = httpx.Client(follow_redirects=False)
        try:
            for p in pending:
                if stop is not None and stop.is_set():
                    break
                try:
                    hook = hooks.get(p["webhook_id"])
                    if hook is None:
                        hook = hooks[p["webhook_id"]] = store.get_webhook(cur, p["webhook_id"])
                    d = deliver(cur, hook, p["event"], p["subject_id"], client, stop, backoff)
                except Exception as exc:  # noqa: BLE001 - one bad webhook never stops the sweep
                    d = _record_broken(cur, p, exc)
                log.info("webhook %s %s %s: %s after %d attempt(s)%s", hook["webhook_id"],
                         p["event"], p["subject_id"], d.status, d.attempts,
                         f" ({d.error})" if d.error else "")
                out.append(d)
        finally:
            if own:
                client.close()
    return out
