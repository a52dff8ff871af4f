"""Embed the raw documents: one FLOAT[64] vector per document.

A stand-in for your embedding model that needs no network or GPU: hashed bag of
words, L2-normalized. Swap in sentence-transformers, an API, or duckcluster's
embed_text() in SQL; nothing downstream changes.
"""

import numpy as np
import pyarrow as pa
from sklearn.feature_extraction.text import HashingVectorizer

DIM = 64


def model(dbt, session):
    dbt.config(materialized="table")
    raw = dbt.ref("raw_docs").order("doc_id").to_arrow_table()
    vectorizer = HashingVectorizer(n_features=DIM, alternate_sign=False, norm="l2")
    X = vectorizer.transform(raw.column("body").to_pylist()).toarray().astype(np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), DIM)
    return raw.append_column("embedding", embedding)
