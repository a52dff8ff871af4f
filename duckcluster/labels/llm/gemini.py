"""Google Gemini: ``models/{model}:generateContent`` and ``:batchEmbedContents``.

The key goes in the ``x-goog-api-key`` header, never in the URL.
"""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING

import numpy as np

from ..._http import LLMError, post_json
from ._base import Endpoint, Part, dig, scrub
from .openai import _matrix

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_EMBEDDING_MODEL = "text-embedding-004"
ENV_KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
ENV_BASE_URL = "GEMINI_BASE_URL"

_DEFAULT_MIME = {"image_url": "image/jpeg", "video_url": "video/mp4", "audio_url": "audio/mpeg"}


def _headers(ep: Endpoint) -> dict[str, str]:
    h = {"content-type": "application/json"}
    if ep.api_key:
        h["x-goog-api-key"] = ep.api_key
    return h


def _model_path(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def _parts(parts: list[Part]) -> list[dict]:
    out: list[dict] = []
    for p in parts:
        if p["type"] == "text":
            out.append({"text": p["text"]})
        else:
            mime = mimetypes.guess_type(p["url"].split("?")[0])[0] or _DEFAULT_MIME[p["type"]]
            out.append({"fileData": {"mimeType": mime, "fileUri": p["url"]}})
    return out


class GeminiChat:
    """generateContent with a system instruction; the answer is the first candidate's text."""

    def __init__(self, ep: Endpoint):
        self.ep = ep

    def complete(self, client: httpx.Client, system: str, parts: list[Part]) -> str:
        body: dict = {"systemInstruction": {"parts": [{"text": system}]},
                      "contents": [{"role": "user", "parts": _parts(parts)}],
                      "generationConfig": {"temperature": self.ep.temperature}}
        if self.ep.json_mode:
            body["generationConfig"]["responseMimeType"] = "application/json"
        url = f"{self.ep.base_url.rstrip('/')}/{_model_path(self.ep.model)}:generateContent"
        try:
            data = post_json(client, url, body, _headers(self.ep), self.ep.policy,
                             f"gemini generateContent ({self.ep.model})")
        except LLMError as exc:
            raise LLMError(scrub(str(exc), self.ep.api_key), exc.kind, exc.attempts) from None
        texts = dig(data, "candidates", 0, "content", "parts")
        if not isinstance(texts, list) or not any(isinstance(t, dict) and "text" in t
                                                  for t in texts):
            reason = dig(data, "candidates", 0, "finishReason") or dig(
                data, "promptFeedback", "blockReason")
            raise LLMError(scrub("gemini generateContent: the response has no text"
                                 + (f" (finish reason {reason})" if reason else "") + ".",
                                 self.ep.api_key), "malformed_json")
        return scrub("".join(t.get("text", "") for t in texts if isinstance(t, dict)),
                     self.ep.api_key)  # an echoed key never reaches a label or error


class GeminiEmbeddings:
    """batchEmbedContents, 100 texts per request."""

    def __init__(self, ep: Endpoint, batch_size: int = 100, dimensions: int | None = None):
        self.ep = ep
        self.batch_size = batch_size
        self.dimensions = dimensions

    def embed(self, client: httpx.Client, texts: list[str]) -> np.ndarray:
        model = _model_path(self.ep.model)
        url = f"{self.ep.base_url.rstrip('/')}/{model}:batchEmbedContents"
        rows: list = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            reqs = []
            for t in chunk:
                r: dict = {"model": model, "content": {"parts": [{"text": t}]}}
                if self.dimensions:
                    r["outputDimensionality"] = self.dimensions
                reqs.append(r)
            try:
                data = post_json(client, url, {"requests": reqs}, _headers(self.ep),
                                 self.ep.policy, f"gemini embeddings ({self.ep.model})")
            except LLMError as exc:
                raise LLMError(scrub(str(exc), self.ep.api_key), exc.kind, exc.attempts) from None
            embs = dig(data, "embeddings")
            if not isinstance(embs, list) or len(embs) != len(chunk):
                raise LLMError(f"gemini embeddings: expected {len(chunk)} embeddings.",
                               "malformed_json")
            rows.extend(dig(e, "values") for e in embs)
        return _matrix(rows, "gemini embeddings")
