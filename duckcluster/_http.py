"""POST with retries: the only place duckcluster sends HTTP requests (LLM providers in
labels/llm through :func:`post_json`, webhooks in ops/webhooks through :func:`post`).

Timeouts, connection errors, 408/409/425/429 and 5xx are retried with exponential
backoff (``Retry-After`` honoured up to the cap); other 4xx fail at once. Error
messages name the URL path and status, never headers or query strings, so API keys
cannot leak into them.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import DuckclusterError

if TYPE_CHECKING:  # imported by post(): httpx (with its CLI's rich) took 0.1-0.3 s of
    import httpx  # every fresh process, which mostly never makes a request


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


#: Statuses worth another attempt (with every 5xx): the request may succeed as it is.
RETRY_STATUS = frozenset({408, 409, 425, 429})


def redact_url(url: str) -> str:
    """Scheme, host and path only: query strings may carry keys."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: show nothing of it
        return "<an invalid URL>"
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


@dataclass
class Attempt:
    """One POST and what it came to. ``error`` is None for a 2xx answer, else a sentence
    naming the redacted URL; ``kind``: ok, timeout, connection, rate_limit or http;
    ``retry``: the fault is transient; ``interrupted``: the caller stopped the backoff."""

    number: int
    seconds: float
    response: httpx.Response | None = None
    error: str | None = None
    kind: str = "ok"
    retry: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code


def post(client: httpx.Client, url: str, policy: RetryPolicy, *,
         headers: Mapping[str, str] | Callable[[int], Mapping[str, str]],
         json: Any = None, content: bytes | None = None, first: int = 1,
         on_retry: Callable[[Attempt], None] | None = None,
         wait: Callable[[float], bool] | None = None) -> Attempt:
    """POST until a 2xx answer, a fault that is not transient, or attempt number
    ``policy.max_retries + 1`` (counting from ``first``, so a resumed delivery goes on
    where it stopped); return the last :class:`Attempt`.

    Timeouts, connection errors, :data:`RETRY_STATUS` and 5xx are transient; a request the
    client refuses (an invalid header, say) and other statuses are not. ``headers``: a
    mapping, or a function of the attempt number. ``on_retry(attempt)`` runs before each
    backoff; ``wait(seconds)`` replaces ``time.sleep`` and returns True to stop now (the
    attempt comes back ``interrupted``).
    """
    import httpx

    shown = redact_url(url)
    number = first
    while True:
        t0 = time.perf_counter()
        sent = headers(number) if callable(headers) else headers
        try:
            resp = client.post(url, json=json, content=content, headers=dict(sent),
                               timeout=policy.timeout)
        except httpx.TimeoutException:
            a = Attempt(number, time.perf_counter() - t0, None,
                        f"no answer from {shown} within {policy.timeout:g} s", "timeout", True)
        except httpx.TransportError as exc:  # the query string may hold a token: redacted
            a = Attempt(number, time.perf_counter() - t0, None,
                        f"cannot reach {shown} ({type(exc).__name__}: "
                        f"{str(exc).replace(url, shown)})", "connection", True)
        except Exception as exc:  # noqa: BLE001 - the client refused the request: said
            a = Attempt(number, time.perf_counter() - t0, None,
                        f"could not send to {shown} ({type(exc).__name__}: "
                        f"{str(exc).replace(url, shown)})", "connection", False)
        else:
            took, code = time.perf_counter() - t0, resp.status_code
            if 200 <= code < 300:
                return Attempt(number, took, resp)
            a = Attempt(number, took, resp, f"{shown} answered HTTP {code}",
                        "rate_limit" if code == 429 else "http",
                        code in RETRY_STATUS or code >= 500)
        if not a.retry or number >= policy.max_retries + 1:
            return a
        if on_retry is not None:
            on_retry(a)
        delay = policy.delay(number - 1, None if a.response is None
                             else a.response.headers.get("retry-after"))
        if wait is None:
            time.sleep(delay)
        elif wait(delay):
            a.interrupted = True
            return a
        number += 1


def post_json(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str],
              policy: RetryPolicy, what: str) -> Any:
    """POST ``body`` as JSON and return the decoded JSON response, retrying transient
    faults (:func:`post`); else an :class:`LLMError` whose message starts with ``what``."""
    a = post(client, url, policy, headers=headers, json=body)
    if a.ok:
        try:
            return a.response.json()
        except ValueError:
            raise LLMError(f"{what}: {redact_url(url)} answered HTTP {a.status} with a body "
                           "that is not JSON.", "malformed_json", a.number) from None
    last = f"{what}: {a.error}" + ("" if a.response is None else _error_detail(a.response))
    if a.status in (401, 403):
        raise LLMError(last + ". Check the API key (environment variable or DuckDB "
                       "secret).", "auth", a.number)
    if not a.retry:
        raise LLMError(last + ".", a.kind, a.number)
    raise LLMError(f"{last} (gave up after {a.number} attempts).", a.kind, a.number)


def _error_detail(resp: httpx.Response) -> str:
    """A short provider error message, if the body has one (never echoes headers)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
    return f": {str(msg)[:200]}" if msg else ""
