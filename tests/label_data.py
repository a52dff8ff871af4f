"""Test data for labels, enrichment and taxonomies: four topics with nested payloads."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from conftest import blobs

TOPIC_WORDS = (
    ("fruit", ["apple banana fruit juice", "fruit salad with apple", "banana smoothie fruit"]),
    ("space", ["rocket launch into orbit", "space shuttle orbit nasa", "nasa rocket space mission"]),
    ("code", ["python code compiler bug", "code review of python", "compiler bug in code"]),
    ("sport", ["football match league goal", "league match referee", "goal in the football match"]),
)


def make_docs(con, n_per: int = 30, name: str = "docs", d: int = 16, seed: int = 0):
    """CREATE TABLE name(id BIGINT PRIMARY KEY, topic, body, meta STRUCT, extra JSON text,
    document_blobs LIST(STRUCT(url)), embedding FLOAT[d]); returns the true topics."""
    X, y = blobs(n_per=n_per, k=len(TOPIC_WORDS), d=d, seed=seed)
    n = len(y)
    topic = [TOPIC_WORDS[t][0] for t in y]
    body = [f"{TOPIC_WORDS[t][1][i % 3]} number {i}" for i, t in enumerate(y)]
    meta = [{"headline": f"{TOPIC_WORDS[t][0].upper()} headline {i}",
             "description": TOPIC_WORDS[t][1][(i + 1) % 3]} for i, t in enumerate(y)]
    extra = [json.dumps({"nested": {"note": f"{TOPIC_WORDS[t][0]} note {i}"}})
             for i, t in enumerate(y)]
    blobs_col = [[{"url": f"https://example.test/{TOPIC_WORDS[t][0]}/{i}.jpg"}]
                 for i, t in enumerate(y)]
    tbl = pa.table({
        "id": pa.array(np.arange(n), pa.int64()), "topic": topic, "body": body,
        "meta": pa.array(meta), "extra": extra,
        "document_blobs": pa.array(blobs_col),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d),
    })
    con.register("__label_docs", tbl)
    con.execute(f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, topic VARCHAR, body VARCHAR, '
                "meta STRUCT(headline VARCHAR, description VARCHAR), extra VARCHAR, "
                f"document_blobs STRUCT(url VARCHAR)[], embedding FLOAT[{d}])")
    con.execute(f'INSERT INTO "{name}" SELECT id, topic, body, meta, extra, document_blobs, '
                f"CAST(embedding AS FLOAT[{d}]) FROM __label_docs")
    con.unregister("__label_docs")
    return np.asarray(topic)


def cluster(con, name: str = "topics", source: str = "docs", k: int = 4, **extra) -> str:
    """Create and run a kmeans definition; returns the run id."""
    args = ", ".join(f"{key} := {val}" for key, val in extra.items())
    con.sql(f"SELECT cluster_create('{name}', source := '{source}', embedding := 'embedding', "
            f"algorithm := 'kmeans', params := {{'n_clusters': {k}}}"
            + (f", {args}" if args else "") + ")").fetchall()
    return con.sql(f"SELECT cluster_execute('{name}')").fetchall()[0][0]


def topic_of_clusters(con, name: str, topics: np.ndarray) -> dict[int, str]:
    """cluster_id -> majority true topic."""
    rows = con.sql(f"SELECT id, cluster_id FROM cluster_members('{name}')").fetchall()
    out: dict[int, list[str]] = {}
    for i, c in rows:
        out.setdefault(c, []).append(topics[int(i)])
    return {c: max(set(v), key=v.count) for c, v in out.items()}
