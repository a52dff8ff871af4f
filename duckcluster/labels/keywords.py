"""Offline labels (the default: deterministic, no network): for every cluster node the
keywords are its class-based TF-IDF top terms (all documents of a cluster form one class;
``tf`` per class, ``idf = log(1 + A / f_t)`` with ``A`` the mean class size in words;
:mod:`duckcluster.core.keywords`), the label is built from the top keywords, the summary
from its size, keywords and most typical document. An LLM gets the same keywords as hints.

>>> ctfidf_keywords([["the cat sat on the mat", "cats purr"],
...                  ["stocks fell", "the market and stocks"]], n=2)
[['cat', 'cats'], ['stocks', 'fell']]
>>> offline_label(['linear algebra', 'linear', 'matrix', 'eigenvalues'])
'linear algebra, matrix, eigenvalues'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalog import labels as store
from ..core.keywords import ctfidf_keywords, offline_label
from .config import LabelConfig
from .prompt import truncate

MAX_DOCS_PER_NODE = 3000  # documents per cluster fed to c-TF-IDF (a seeded sample above it)


@dataclass
class Node:
    """One cluster node being labeled: its catalog row, members and what labeling found."""

    row: store.NodeRow
    members: np.ndarray  # indices into the member arrays
    reps: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    label: str | None = None
    summary: str | None = None
    out_keywords: list[str] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = "offline"
    merged_into: str | None = None


def nodes_of(rows: Sequence[store.NodeRow], members) -> list[Node]:
    """Each node with the indices of the members in its subtree."""
    leaf = members.column("node_id").to_pylist()
    cid = members.column("cluster_id").to_pylist()
    parent = {r.node_id: r.parent_id for r in rows}
    index: dict[str, list[int]] = {r.node_id: [] for r in rows}
    for i, (nid, c) in enumerate(zip(leaf, cid)):
        nid = nid if nid in parent else f"cl_{c}"
        seen = 0
        while nid is not None and nid in index and seen < 64:
            index[nid].append(i)
            nid = parent.get(nid)
            seen += 1
    return [Node(r, np.asarray(index[r.node_id], dtype=np.int64)) for r in rows]


def offline_summary(size: int, keywords: Sequence[str], example: str | None) -> str:
    text = f"{size} document{'s' if size != 1 else ''}"
    if keywords:
        text += f" about {', '.join(keywords[:6])}"
    if example:
        text += f'. Most typical: "{truncate(" ".join(example.split()), 160)}"'
    return text + "."


def offline_labels(nodes: list[Node], texts: Mapping[str, str], ids: np.ndarray, cfg: LabelConfig,
             rng: np.random.Generator) -> None:
    """c-TF-IDF keywords, label and summary of every node, level by level."""
    for level in sorted({nd.row.level for nd in nodes}):
        group = [nd for nd in nodes if nd.row.level == level]
        docs = []
        for nd in group:
            m = nd.members
            if len(m) > MAX_DOCS_PER_NODE:
                m = np.sort(rng.choice(m, MAX_DOCS_PER_NODE, replace=False))
            docs.append([texts.get(str(ids[i]), "") for i in m])
        kws = ctfidf_keywords(docs, cfg.n_keywords)
        taken: set[str] = set()
        for nd, kw in zip(group, kws):
            nd.keywords = kw
            label = offline_label(kw, taken=taken) or f"cluster {nd.row.node_id}"
            if label in taken:
                label = f"{label} ({nd.row.node_id})"
            taken.add(label)
            nd.label = label
            example = texts.get(nd.reps[0]) if nd.reps else None
            nd.summary = offline_summary(nd.row.size, kw, example) if cfg.include_summary \
                else None
            nd.out_keywords = list(kw) if cfg.include_keywords else None
