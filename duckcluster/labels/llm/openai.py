"""OpenAI-compatible chat completions and embeddings (OpenAI, Ollama, vLLM, LM Studio...).

``base_url`` is the API root that ``/chat/completions`` and ``/embeddings``
hang off, e.g. ``https://api.openai.com/v1`` or ``http://localhost:11434/v1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..._http import LLMError, post_json
from ._base import Endpoint, Part, dig, scrub

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
ENV_KEYS = ("OPENAI_API_KEY",)
ENV_BASE_URL = "OPENAI_BASE_URL"


def _headers(ep: Endpoint) -> dict[str, str]:
    h = {"content-type": "application/json"}
    if ep.api_key:
        h["authorization"] = f"Bearer {ep.api_key}"
    return h


def _content(parts: list[Part]) -> str | list[dict]:
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    out: list[dict] = []
    for p in parts:
        if p["type"] == "text":
            out.append({"type": "text", "text": p["text"]})
        elif p["type"] == "image_url":
            out.append({"type": "image_url", "image_url": {"url": p["url"]}})
        else:  # chat completions take images only; other media go in as links
            out.append({"type": "text", "text": f"{p['type']}: {p['url']}"})
    return out


class OpenAIChat:
    """POST {base_url}/chat/completions; the answer is choices[0].message.content."""

    def __init__(self, ep: Endpoint):
        self.ep = ep

    def complete(self, client: httpx.Client, system: str, parts: list[Part]) -> str:
        body: dict = {"model": self.ep.model, "temperature": self.ep.temperature,
                      "messages": [{"role": "system", "content": system},
                                   {"role": "user", "content": _content(parts)}]}
        if self.ep.json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            data = post_json(client, self.ep.base_url.rstrip("/") + "/chat/completions", body,
                             _headers(self.ep), self.ep.policy, f"openai chat ({self.ep.model})")
        except LLMError as exc:
            raise LLMError(scrub(str(exc), self.ep.api_key), exc.kind, exc.attempts) from None
        text = dig(data, "choices", 0, "message", "content")
        if not isinstance(text, str):
            raise LLMError("openai chat: the response has no choices[0].message.content.",
                           "malformed_json")
        return scrub(text, self.ep.api_key)  # an echoed key never reaches a label or error


class OpenAIEmbeddings:
    """POST {base_url}/embeddings; rows come back in ``index`` order."""

    def __init__(self, ep: Endpoint, batch_size: int = 256, dimensions: int | None = None):
        self.ep = ep
        self.batch_size = batch_size
        self.dimensions = dimensions

    def embed(self, client: httpx.Client, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            body: dict = {"model": self.ep.model, "input": chunk}
            if self.dimensions:
                body["dimensions"] = self.dimensions
            try:
                data = post_json(client, self.ep.base_url.rstrip("/") + "/embeddings", body,
                                 _headers(self.ep), self.ep.policy,
                                 f"openai embeddings ({self.ep.model})")
            except LLMError as exc:
                raise LLMError(scrub(str(exc), self.ep.api_key), exc.kind, exc.attempts) from None
            items = dig(data, "data")
            if not isinstance(items, list) or len(items) != len(chunk):
                raise LLMError(f"openai embeddings: expected {len(chunk)} embeddings, got "
                               f"{len(items) if isinstance(items, list) else 'none'}.",
                               "malformed_json")
            items = sorted(items, key=lambda it: it.get("index", 0))
            rows.extend(it.get("embedding") for it in items)
        return _matrix(rows, "openai embeddings")


def _matrix(rows: list, what: str) -> np.ndarray:
    try:
        X = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise LLMError(f"{what}: the vectors are missing or of different lengths.",
                       "malformed_json") from None
    if X.ndim != 2 or (X.size and not np.isfinite(X).all()):
        raise LLMError(f"{what}: the vectors are missing, ragged or not finite.", "malformed_json")
    return X
