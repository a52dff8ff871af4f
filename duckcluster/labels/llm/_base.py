"""What a provider is: a small protocol, a connection config and content parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np

from ..._http import RetryPolicy

#: One piece of a user message: {"type": "text", "text": ...} or
#: {"type": "image_url" | "video_url" | "audio_url", "url": ...}.
Part = dict[str, str]


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call a provider. The key is kept out of repr()."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    policy: RetryPolicy = RetryPolicy()
    json_mode: bool = True
    temperature: float = 0.0


class ChatProvider(Protocol):
    """Answers one prompt with text that should be JSON."""

    def complete(self, client: httpx.Client, system: str, parts: list[Part]) -> str: ...


class EmbeddingProvider(Protocol):
    """Embeds texts as float32 rows of shape (len(texts), d)."""

    def embed(self, client: httpx.Client, texts: list[str]) -> np.ndarray: ...


def scrub(text: str, secret: str | None) -> str:
    """Remove a key from a message, should a server ever echo it."""
    return text.replace(secret, "***") if secret else text


def dig(obj: Any, *path: Any) -> Any:
    """obj[p0][p1]...; None when any step is missing."""
    for p in path:
        try:
            obj = obj[p]
        except (KeyError, IndexError, TypeError):
            return None
    return obj
