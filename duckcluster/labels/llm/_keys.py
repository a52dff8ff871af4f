"""API keys: from the environment or a DuckDB secret. The one module that reads them.

Keys are resolved at call time, passed to the HTTP client as a header and
dropped; they are never stored in the catalog, in artifacts or in messages.

A DuckDB secret holds a key as an ``http`` secret's bearer token::

    CREATE SECRET openai_key (TYPE http, BEARER_TOKEN 'sk-...', SCOPE 'https://api.openai.com');

DuckDB only shows secret values to a connection opened with
``allow_unredacted_secrets`` (``duckcluster.connect(path, config={'allow_unredacted_secrets': True})``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ... import _secrets
from ..._errors import SpecError

#: Reads the bearer token of a named DuckDB secret, or of the secret whose scope
#: matches a URL; returns None if there is none. Supplied by the SQL layer.
SecretReader = Callable[[str | None, str | None], str | None]


def env_key(names: Sequence[str]) -> str | None:
    """The first non-empty environment variable of ``names``."""
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


def env_value(name: str) -> str | None:
    """One environment variable (base URLs and the like), or None."""
    return os.environ.get(name) or None


def resolve_key(provider: str, env_names: Sequence[str], *, api_key_env: str | None = None,
                secret: str | None = None, base_url: str | None = None,
                read_secret: SecretReader | None = None, required: bool = True) -> str | None:
    """The API key for ``provider``: a named secret, else the environment, else a secret
    scoped to ``base_url``. Raises SpecError naming every way to supply it if required.
    The key is remembered as a secret (:mod:`duckcluster._secrets`): no stored text and no
    message will carry it."""
    _secrets.watch_env(api_key_env, *env_names)
    key = _resolve(provider, env_names, api_key_env, secret, base_url, read_secret, required)
    _secrets.remember(key)
    return key


def _resolve(provider, env_names, api_key_env, secret, base_url, read_secret, required):
    if secret:
        if read_secret is None:
            raise SpecError(f"secret := {secret!r} needs a DuckDB connection to read it from.")
        key = read_secret(secret, None)
        if not key:
            raise SpecError(
                f"DuckDB secret {secret!r} was not found or has no BEARER_TOKEN. Create it with "
                f"CREATE SECRET {secret} (TYPE http, BEARER_TOKEN '...').")
        return key
    names = [api_key_env] if api_key_env else list(env_names)
    key = env_key(names)
    if key:
        return key
    if read_secret is not None and base_url:
        key = read_secret(None, base_url)
        if key:
            return key
    if not required:
        return None
    raise SpecError(
        f"No API key for provider {provider!r}: set {' or '.join(names)}, or create a DuckDB "
        "secret (CREATE SECRET name (TYPE http, BEARER_TOKEN '...')) and pass secret := 'name' "
        "on a connection opened with config={'allow_unredacted_secrets': True}.")
