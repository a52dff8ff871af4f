"""A small real-text corpus that ships with the installed packages: docstrings by module.

Each document is the docstring of a public function, class or method of one
module; the module is the true topic. Embeddings are TF-IDF + truncated SVD,
computed here (seeded), so the tests need no network and no model weights.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

TOPICS = ("numpy.random", "numpy.linalg", "numpy.fft", "asyncio", "http.client", "tarfile",
          "unittest")
MAX_PER_TOPIC = 60
MIN_CHARS = 60


def _docs(modname: str) -> list[tuple[str, str]]:
    mod = importlib.import_module(modname)
    root = modname.split(".")[0]
    out: dict[str, str] = {}

    def add(obj, qual):
        d = inspect.getdoc(obj)
        if d and len(d) > MIN_CHARS and d not in out.values():
            out[qual] = d[:800]

    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if not str(getattr(obj, "__module__", root) or root).startswith(root):
            continue
        add(obj, name)
        if inspect.isclass(obj):
            for n2, o2 in sorted(vars(obj).items()):
                if not n2.startswith("_"):
                    add(o2, f"{name}.{n2}")
    return sorted(out.items())[:MAX_PER_TOPIC]


def corpus(dims: int = 40, seed: int = 0):
    """(ids, topics, texts, embeddings float32 (n, dims) L2-normalized)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids, topics, texts = [], [], []
    for t in TOPICS:
        for qual, doc in _docs(t):
            ids.append(f"{t}:{qual}")
            topics.append(t)
            texts.append(doc)
    tfidf = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2).fit_transform(texts)
    X = TruncatedSVD(dims, random_state=seed).fit_transform(tfidf)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return ids, topics, texts, X.astype(np.float32)
