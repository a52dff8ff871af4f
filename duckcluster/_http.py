"""One JSON POST with retries: the only place duckcluster talks HTTP.

Timeouts, connection errors, 429 and 5xx are retried with exponential backoff
(``Retry-After`` honoured up to the cap); other 4xx fail at once. Error
messages name the URL path and status, never headers, so API keys cannot leak
into them.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from ._errors import DuckclusterError


class LLMError(DuckclusterError):
    """A provider call failed after its retries. ``kind`` is a short category."""

    def __init__(self, message: str, kind: str = "http", attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``max_retries`` after the first attempt, exponential backoff
    from ``backoff`` seconds (doubling, capped at ``max_backoff``), ``timeout`` per
    attempt."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    timeout: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass
        base = min(self.backoff * (2 ** attempt), self.max_backoff)
        return base * (1.0 + 0.1 * random.random())


_RETRY_STATUS = {408, 409, 425, 429}


def redact_url(url: str) -> str:
    """Scheme, host and path only: query strings may carry keys."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: show nothing of it
        return "<an invalid URL>"
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def post_json(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str],
              policy: RetryPolicy, what: str) -> Any:
    """POST ``body`` as JSON and return the decoded JSON response, retrying transient faults."""
    shown = redact_url(url)
    last = ""
    kind = "http"
    attempts = 0
    for attempt in range(policy.max_retries + 1):
        attempts = attempt + 1
        retry_after = None
        try:
            resp = client.post(url, json=body, headers=headers, timeout=policy.timeout)
        except httpx.TimeoutException:
            kind, last = "timeout", f"{what}: no answer from {shown} within {policy.timeout:g} s"
        except httpx.TransportError as exc:
            kind, last = "connection", f"{what}: cannot reach {shown} ({type(exc).__name__})"
        else:
            if resp.status_code < 300:
                try:
                    return resp.json()
                except ValueError:
                    raise LLMError(f"{what}: {shown} answered HTTP {resp.status_code} with a body "
                                   "that is not JSON.", "malformed_json", attempts) from None
            detail = _error_detail(resp)
            last = f"{what}: {shown} answered HTTP {resp.status_code}{detail}"
            if resp.status_code in (401, 403):
                raise LLMError(last + ". Check the API key (environment variable or DuckDB "
                               "secret).", "auth", attempts)
            if resp.status_code not in _RETRY_STATUS and resp.status_code < 500:
                raise LLMError(last + ".", "http", attempts)
            kind = "rate_limit" if resp.status_code == 429 else "http"
            retry_after = resp.headers.get("retry-after")
        if attempt < policy.max_retries:
            time.sleep(policy.delay(attempt, retry_after))
    raise LLMError(f"{last} (gave up after {attempts} attempts).", kind, attempts)


def _error_detail(resp: httpx.Response) -> str:
    """A short provider error message, if the body has one (never echoes headers)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
    return f": {str(msg)[:200]}" if msg else ""
