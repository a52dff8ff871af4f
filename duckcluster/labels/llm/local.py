"""Local embeddings with sentence-transformers (optional extra, imported lazily)."""

from __future__ import annotations

import numpy as np

from ..._params import optional_import

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class SentenceTransformerEmbeddings:
    """Embeds with a local sentence-transformers model; no network once it is cached."""

    def __init__(self, model: str | None = None):
        st = optional_import(
            "sentence_transformers", "local-embeddings", "Local embeddings",
            what="sentence-transformers",
            alternative=", or use an OpenAI-compatible endpoint: embedding_provider := 'openai' "
                        "(with embedding_base_url := 'http://localhost:11434/v1' for Ollama)")
        self.model = st.SentenceTransformer(model or DEFAULT_MODEL)

    def embed(self, client, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True),
                          dtype=np.float32)


def available() -> bool:
    """True when sentence-transformers can be imported."""
    import importlib.util

    return importlib.util.find_spec("sentence_transformers") is not None
