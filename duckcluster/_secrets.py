"""Secret values in use in this process, and the one scrubber stored texts go through.

A provider may echo an API key back (inside an error, a malformed answer, even a valid
label), and a webhook receiver may echo anything. So every text duckcluster stores
(run errors and notes, labels, summaries, keywords and attributes, the label cache,
label failures, trigger errors and firings, webhook delivery logs) and every error
message it raises passes through :func:`scrub`, which replaces each known secret value
with ``***``.

Known values: every API key resolved for a provider (from an environment variable or a
DuckDB secret, :mod:`duckcluster.labels.llm._keys`), every webhook signing secret used,
and the current values of the environment variables providers read keys from (even
before this process read them). Values shorter than :data:`MIN_LENGTH` characters are not
treated as secrets: a real key is longer, and scrubbing a short word would mangle labels.

>>> remember("sk-example-0123456789")
>>> scrub("echo: Bearer sk-example-0123456789")
'echo: Bearer ***'
"""

from __future__ import annotations

import os
import threading
from typing import Any

MASK = "***"
MIN_LENGTH = 8

_lock = threading.Lock()
_values: set[str] = set()
#: Environment variables whose values are secrets (providers add theirs at import).
_env_names: set[str] = {"OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"}


def remember(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (no-op for None or short values)."""
    if isinstance(value, str) and len(value) >= MIN_LENGTH:
        with _lock:
            _values.add(value)


def watch_env(*names: str | None) -> None:
    """Treat the values of these environment variables as secrets."""
    with _lock:
        _env_names.update(n for n in names if n)


def values() -> list[str]:
    """Every known secret value, longest first (so a key containing another is masked
    whole)."""
    with _lock:
        found = set(_values)
        names = list(_env_names)
    for n in names:
        v = os.environ.get(n)
        if v and len(v) >= MIN_LENGTH:
            found.add(v)
    return sorted(found, key=len, reverse=True)


def scrub(text: Any) -> Any:
    """``text`` with every known secret replaced by ``***`` (non-strings unchanged)."""
    if not isinstance(text, str) or not text:
        return text
    for v in values():
        if v in text:
            text = text.replace(v, MASK)
    return text


def scrub_value(obj: Any) -> Any:
    """:func:`scrub` applied to every string inside lists, tuples and dicts (keys too)."""
    secrets = values()
    if not secrets:
        return obj

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            for v in secrets:
                if v in o:
                    o = o.replace(v, MASK)
            return o
        if isinstance(o, dict):
            return {walk(k): walk(x) for k, x in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(walk(x) for x in o)
        return o

    return walk(obj)
