"""What a provider is: a small protocol, a connection config and content parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ... import _secrets
from ..._http import RetryPolicy

if TYPE_CHECKING:  # httpx is imported where requests are made (0.1-0.3 s)
    import httpx

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
    """Remove the endpoint's key and every other known secret from a text a server sent
    (an error, an answer), should it ever echo one."""
    if secret:
        text = text.replace(secret, _secrets.MASK)
    return _secrets.scrub(text)


def dig(obj: Any, *path: Any) -> Any:
    """obj[p0][p1]...; None when any step is missing."""
    for p in path:
        try:
            obj = obj[p]
        except (KeyError, IndexError, TypeError):
            return None
    return obj
