"""Keywords and short labels of groups of documents, offline (class-based TF-IDF).

Pure text work, no connection: cluster labels (``labels/``) and the regions that
``embedding_drift_explain`` names (``drift/``) both read their keywords here.

>>> ctfidf_keywords([["apple pie", "apple tart"], ["engine oil", "engine part"]], n=1)
[['apple'], ['engine']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ctfidf_keywords(class_docs: Sequence[Sequence[str]], n: int = 10) -> list[list[str]]:
    """Top ``n`` class-based TF-IDF terms (unigrams and bigrams) of each class of documents."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    flat = [d for docs in class_docs for d in docs if d and d.strip()]
    owner = [c for c, docs in enumerate(class_docs) for d in docs if d and d.strip()]
    if not flat:
        return [[] for _ in class_docs]
    vec = CountVectorizer(stop_words="english", ngram_range=(1, 2), lowercase=True,
                          token_pattern=r"(?u)\b[^\W\d_][\w\-]+\b")
    try:
        per_doc = vec.fit_transform(flat)  # per document, so no bigram spans two documents
    except ValueError:  # only stop words
        return [[] for _ in class_docs]
    onehot = sparse.csr_matrix((np.ones(len(flat)), (owner, np.arange(len(flat)))),
                               shape=(len(class_docs), len(flat)))
    counts = (onehot @ per_doc).astype(np.float64).tocsr()
    terms = vec.get_feature_names_out()
    freq = np.asarray(counts.sum(axis=0)).ravel()
    words = np.asarray(counts.sum(axis=1)).ravel()
    avg = max(words.mean(), 1.0)
    idf = np.log(1.0 + avg / np.maximum(freq, 1.0))
    idf[(freq < 2) & (np.char.count(terms.astype(str), " ") > 0)] = 0.0  # one-off bigrams
    tf = counts.multiply(1.0 / np.maximum(words, 1.0)[:, None]).tocsr()
    # share of a term's occurrences in this class: damps words every cluster uses
    share = counts.multiply(1.0 / np.maximum(freq, 1.0)[None, :]).sqrt()
    W = tf.multiply(idf[None, :]).multiply(share).tocsr()
    W.eliminate_zeros()
    out = []
    for i in range(W.shape[0]):
        row = W.getrow(i)
        order = np.lexsort((terms[row.indices], -row.data))  # score desc, then term
        out.append([str(terms[row.indices[j]]) for j in order[:n]])
    return out


def offline_label(keywords: Sequence[str], n: int = 3, taken: set[str] | None = None) -> str:
    """A short label from the top keywords, skipping words already covered; unique
    against ``taken`` (labels of sibling nodes) by adding the next keyword."""
    chosen: list[str] = []
    covered: set[str] = set()
    spare: list[str] = []
    for kw in keywords:
        toks = {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in kw.split()}
        if toks & covered:  # 'apple banana' after 'apple' adds little
            continue
        (chosen if len(chosen) < n else spare).append(kw)
        covered |= toks
    label = ", ".join(chosen)
    for kw in spare:
        if not taken or label not in taken:
            break
        label = f"{label}, {kw}"
    return label
