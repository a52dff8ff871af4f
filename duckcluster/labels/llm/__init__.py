"""LLM and embedding providers: a registry of small protocol implementations.

=======================  ==========================================  =====================
name                     chat                                        embeddings
=======================  ==========================================  =====================
``openai``               OpenAI-compatible ``/chat/completions``     ``/embeddings``
``gemini`` (``google``)  Gemini ``generateContent``                  ``batchEmbedContents``
``sentence-transformers``  --                                        local model (extra)
=======================  ==========================================  =====================

A new provider is one module plus one :data:`PROVIDERS` entry. Every HTTP call
goes through :func:`._http.post_json` (retries with backoff on timeouts, 429
and 5xx). Keys come from the environment or a DuckDB secret (:mod:`._keys`).

>>> sorted(PROVIDERS)
['gemini', 'openai', 'sentence-transformers']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ... import _secrets
from ..._errors import SpecError, unknown_name
from ..._http import LLMError, RetryPolicy
from . import gemini, local, openai
from ._base import ChatProvider, EmbeddingProvider, Endpoint, Part
from ._keys import SecretReader, env_value, resolve_key

__all__ = [
    "PROVIDERS",
    "ChatProvider",
    "EmbeddingProvider",
    "Endpoint",
    "LLMError",
    "Part",
    "RetryPolicy",
    "chat_provider",
    "embedding_provider",
    "provider_name",
]


@dataclass(frozen=True)
class Provider:
    """One registry entry: its endpoints' defaults and its implementations."""

    name: str
    chat: Callable[[Endpoint], ChatProvider] | None
    embeddings: Callable[..., EmbeddingProvider] | None
    base_url: str = ""
    model: str = ""
    embedding_model: str = ""
    env_keys: tuple[str, ...] = ()
    env_base_url: str = ""


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", openai.OpenAIChat, openai.OpenAIEmbeddings,
                       openai.DEFAULT_BASE_URL, openai.DEFAULT_MODEL,
                       openai.DEFAULT_EMBEDDING_MODEL, openai.ENV_KEYS, openai.ENV_BASE_URL),
    "gemini": Provider("gemini", gemini.GeminiChat, gemini.GeminiEmbeddings,
                       gemini.DEFAULT_BASE_URL, gemini.DEFAULT_MODEL,
                       gemini.DEFAULT_EMBEDDING_MODEL, gemini.ENV_KEYS, gemini.ENV_BASE_URL),
    "sentence-transformers": Provider("sentence-transformers", None, None,
                                      model=local.DEFAULT_MODEL,
                                      embedding_model=local.DEFAULT_MODEL),
}
for _p in PROVIDERS.values():
    _secrets.watch_env(*_p.env_keys)
ALIASES = {"google": "gemini", "ollama": "openai", "vllm": "openai", "lmstudio": "openai"}


def provider_name(name: str) -> str:
    """Canonical provider name; unknown names get an error listing the valid ones."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in PROVIDERS:
        raise unknown_name("provider", name, [*PROVIDERS, *ALIASES])
    return key


def _endpoint(p: Provider, model: str | None, base_url: str | None, policy: RetryPolicy,
              json_mode: bool, api_key_env: str | None, secret: str | None,
              read_secret: SecretReader | None, embedding: bool) -> Endpoint:
    url = base_url or env_value(p.env_base_url) or p.base_url
    # A self-hosted OpenAI-compatible server (Ollama, vLLM) usually needs no key.
    required = url.rstrip("/") == p.base_url.rstrip("/") or bool(secret) or bool(api_key_env)
    key = resolve_key(p.name, p.env_keys, api_key_env=api_key_env, secret=secret, base_url=url,
                      read_secret=read_secret, required=required)
    return Endpoint(base_url=url, model=model or (p.embedding_model if embedding else p.model),
                    api_key=key, policy=policy, json_mode=json_mode)


def chat_provider(name: str, *, model: str | None = None, base_url: str | None = None,
                  policy: RetryPolicy = RetryPolicy(), json_mode: bool = True,
                  api_key_env: str | None = None, secret: str | None = None,
                  read_secret: SecretReader | None = None, temperature: float = 0.0
                  ) -> tuple[ChatProvider, Endpoint]:
    """A chat provider ready to call, and its endpoint (for the cache key and messages)."""
    p = PROVIDERS[provider_name(name)]
    if p.chat is None:
        raise SpecError(f"Provider {p.name!r} has no chat model; use 'openai' or 'gemini'.")
    ep = _endpoint(p, model, base_url, policy, json_mode, api_key_env, secret, read_secret,
                   embedding=False)
    ep = dataclasses.replace(ep, temperature=temperature)
    return p.chat(ep), ep


def embedding_provider(name: str, *, model: str | None = None, base_url: str | None = None,
                       policy: RetryPolicy = RetryPolicy(), dimensions: int | None = None,
                       api_key_env: str | None = None, secret: str | None = None,
                       read_secret: SecretReader | None = None) -> EmbeddingProvider:
    """An embedding provider ready to call."""
    p = PROVIDERS[provider_name(name)]
    if p.name == "sentence-transformers":
        return local.SentenceTransformerEmbeddings(model)
    ep = _endpoint(p, model, base_url, policy, True, api_key_env, secret, read_secret,
                   embedding=True)
    assert p.embeddings is not None  # every HTTP provider has one
    return p.embeddings(ep, dimensions=dimensions)
