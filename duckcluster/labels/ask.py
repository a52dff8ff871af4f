"""LLM labels: each node's representative documents, shaped by the input mappings, go to
the provider with the offline keywords as hints; the answer must match the response shape.
Transport faults are retried in :mod:`duckcluster.labels.llm`; a malformed or off-shape
answer is asked again once; a node whose call still fails keeps its offline label and the
failure is recorded. Answers are cached by request hash; similar labels can be merged by
embedding similarity (:func:`dedup`). Also ``embed_text``'s embeddings."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._errors import DataError, SpecError
from .._params import validate_params
from .._source import quote_ident, source_sql
from ..catalog import labels as store
from ..core import progress as _steps
from ..core.assign import normalize_rows
from .config import EMBED_OPTIONS, LabelConfig, check_base_url
from .keywords import Node
from .llm import LLMError, RetryPolicy, embedding_provider
from .llm._keys import SecretReader
from .prompt import (
    SYSTEM,
    ShapeError,
    build_prompt,
    check_shape,
    document_parts,
    jsonable,
    literal_parts,
    parse_answer,
)


def payloads_of(cur, spec, wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Source rows (without embedding columns) of the representative ids."""
    src = source_sql(cur, spec.source)
    qid = quote_ident(spec.id)
    emb = ", ".join(quote_ident(c) for c in spec.embedding)
    tbl = cur.sql(f"SELECT CAST({qid} AS VARCHAR) AS __dc_id, * EXCLUDE ({emb}) FROM {src} "
                  f"WHERE CAST({qid} AS VARCHAR) IN (SELECT unnest(?::VARCHAR[]))",
                  params=[list(wanted)]).to_arrow_table()
    out = {}
    for r in tbl.to_pylist():
        key = r.pop("__dc_id")
        out[key] = jsonable(r)
    return out


def cache_key(provider: str, model: str, base_url: str, parts: Sequence[Mapping[str, str]],
              shape: Mapping[str, Any]) -> str:
    """Hash of everything that determines an answer (never the key)."""
    blob = json.dumps({"v": 1, "provider": provider, "model": model,
                       "base_url": base_url.rstrip("/"), "system": SYSTEM, "parts": list(parts),
                       "shape": shape}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Failure(Exception):
    """A node's LLM call that failed for good: ``kind`` as in ``label_failures.kind``."""

    def __init__(self, kind: str, error: str, attempts: int):
        super().__init__(error)
        self.kind, self.error, self.attempts = kind, error, attempts


def ask(chat, client, node_id: str, parts: list[dict[str, str]], shape: Mapping[str, Any]
        ) -> dict[str, Any]:
    """One node's answer, conformed to ``shape``; a bad answer is asked again once."""
    note: list[dict[str, str]] = []
    requests = 0
    kind = err = ""
    for _ in range(2):
        try:
            text = chat.complete(client, SYSTEM, parts + note)
        except LLMError as exc:
            raise Failure(exc.kind, str(exc), requests + exc.attempts) from None
        requests += 1
        try:
            return check_shape(parse_answer(text, node_id), shape)
        except ShapeError as exc:
            kind, err = "off_shape", f"the answer does not match response_shape: {exc}"
        except ValueError as exc:
            kind, err = "malformed_json", str(exc)
        note = [{"type": "text", "text": f"Your previous answer was rejected: {err}. Answer "
                 "again with only the JSON object of the requested shape."}]
    raise Failure(kind, err, requests)


def llm_label(cur, name, nodes: list[Node], cfg: LabelConfig, chat, ep, spec,
              failures: list, cache_puts: list, now, progress) -> tuple[int, int, int]:
    """Ask ``chat`` about every node not in the label cache (``concurrency`` at a time);
    answers go into the nodes, new ones into ``cache_puts``, failed calls into
    ``failures``. Returns (labeled by the LLM, from the cache, failed)."""
    import httpx

    shape = cfg.shape
    wanted = sorted({i for nd in nodes for i in nd.reps})
    payloads = payloads_of(cur, spec, wanted)
    context = literal_parts(cfg.input_mappings)
    jobs = []
    for nd in nodes:
        docs = [document_parts(payloads[i], cfg.input_mappings, cfg.sample_text_max_length)
                for i in nd.reps if i in payloads]
        parts = build_prompt(nd.row.node_id, nd.row.size, nd.keywords, docs, shape,
                             cfg.custom_prompt, context)
        jobs.append((nd, parts, cache_key(cfg.provider, ep.model, ep.base_url, parts, shape)))
    cached = store.cache_get(cur, [k for *_, k in jobs], now) if cfg.cache_ttl_seconds > 0 \
        else {}
    todo = [(nd, parts, key) for nd, parts, key in jobs if key not in cached]
    n_llm = n_failed = 0
    n_cached = len(jobs) - len(todo)
    for nd, _parts, key in jobs:
        if key in cached:
            apply_answer(nd, cached[key], "cache", cfg)
    progress(f"{name}: asking {cfg.provider} about {len(todo)} cluster node(s)")
    auth_failed = threading.Event()

    def run(job):
        nd, parts, key = job
        if auth_failed.is_set():
            return nd, key, Failure("auth", "skipped after an authentication failure", 0)
        try:
            return nd, key, ask(chat, client, nd.row.node_id, parts, shape)
        except Failure as f:
            if f.kind == "auth":
                auth_failed.set()
            return nd, key, f

    with httpx.Client() as client, ThreadPoolExecutor(cfg.concurrency) as pool:
        results = []
        for res in pool.map(run, todo):
            results.append(res)
            _steps.step("cluster nodes labeled", len(results), len(todo))
    for nd, key, res in results:
        if isinstance(res, Failure):
            failures.append({"node_id": nd.row.node_id, "kind": res.kind, "error": res.error,
                             "attempts": res.attempts})
            n_failed += 1
        else:
            apply_answer(nd, res, "llm", cfg)
            cache_puts.append((key, cfg.provider, ep.model, res))
            n_llm += 1
    return n_llm, n_cached, n_failed


def apply_answer(nd: Node, value: Mapping[str, Any], source: str, cfg: LabelConfig) -> None:
    nd.label = str(value["label"])
    if cfg.include_summary and isinstance(value.get("summary"), str):
        nd.summary = value["summary"]
    kws = value.get("keywords")
    if cfg.include_keywords and isinstance(kws, list) and all(isinstance(k, str) for k in kws):
        seen: dict[str, None] = {}
        for k in kws:
            if k.strip():
                seen.setdefault(k.strip(), None)
        nd.out_keywords = list(seen)
    nd.attributes = {k: v for k, v in value.items() if k not in ("label", "summary", "keywords")}
    nd.source = source


def leader_merges(E: np.ndarray, order: Sequence[int], groups: Sequence[Any],
                  threshold: float) -> dict[int, int]:
    """Greedy dedup: walking ``order`` (biggest first), each unmerged item absorbs later
    items of the same group whose embedding cosine is at least ``threshold``."""
    En = normalize_rows(E)
    S = En @ En.T
    merged: dict[int, int] = {}
    for a, i in enumerate(order):
        if i in merged:
            continue
        for j in order[a + 1:]:
            if j not in merged and groups[j] == groups[i] and S[i, j] >= threshold:
                merged[j] = i
    return merged


def dedup_embedder(cfg: LabelConfig, read_secret: SecretReader | None):
    from .llm import local

    name = cfg.embedding_provider
    if name is None:
        if not cfg.offline:
            name = cfg.provider
        elif local.available():
            name = "sentence-transformers"
        else:
            raise SpecError(
                "use_embedding_dedup needs label embeddings, and none are configured: pass "
                "embedding_provider := 'openai' (with embedding_base_url := ... for a local "
                "OpenAI-compatible server) or 'gemini', or install sentence-transformers "
                "(pip install 'duckcluster[local-embeddings]').")
    same = name == cfg.provider
    return embedding_provider(
        name, model=cfg.embedding_model,
        base_url=cfg.embedding_base_url or (cfg.base_url if same else None),
        policy=cfg.policy, api_key_env=cfg.api_key_env if same else None,
        secret=cfg.secret if same else None, read_secret=read_secret)


def dedup(nodes: list[Node], cfg: LabelConfig, embedder, failures: list) -> int | None:
    """Merge labels whose embeddings are at least ``embedding_similarity_threshold``
    similar (same level, the bigger node's label wins); returns how many were merged, or
    None when the embeddings call failed (recorded in ``failures``)."""
    import httpx

    labels = [nd.label or "" for nd in nodes]
    try:
        with httpx.Client() as client:
            E = embedder.embed(client, labels)
    except LLMError as exc:
        failures.append({"node_id": None, "kind": exc.kind, "attempts": exc.attempts,
                         "error": f"label dedup skipped: {exc}",
                         "provider": cfg.embedding_provider or cfg.provider,
                         "model": cfg.embedding_model})
        return None
    if E.shape[0] != len(nodes):
        raise DataError(f"label dedup: got {E.shape[0]} embeddings for {len(nodes)} labels.")
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].row.size, i))
    merges = leader_merges(E, order, [nd.row.level for nd in nodes],
                           cfg.embedding_similarity_threshold)
    for j, i in merges.items():
        nodes[j].attributes = {**nodes[j].attributes, "original_label": nodes[j].label}
        nodes[j].label = nodes[i].label
        nodes[j].merged_into = nodes[i].row.node_id
    return len(merges)


def embed_texts(texts: Sequence[str | None], options: Mapping[str, Any],
                read_secret: SecretReader | None = None) -> list[list[float] | None]:
    """Embeddings of ``texts`` (None stays None) through an embedding provider."""
    import httpx

    opts = validate_params("embed_text", EMBED_OPTIONS, options)
    check_base_url("embed_text", "base_url", opts["base_url"])
    emb = embedding_provider(opts["provider"], model=opts["model"], base_url=opts["base_url"],
                             dimensions=opts["dimensions"], api_key_env=opts["api_key_env"],
                             secret=opts["secret"], read_secret=read_secret,
                             policy=RetryPolicy(max_retries=opts["max_retries"],
                                                backoff=opts["retry_backoff"],
                                                timeout=opts["timeout"]))
    idx = [i for i, t in enumerate(texts) if t is not None]
    out: list[list[float] | None] = [None] * len(texts)
    if not idx:
        return out
    with httpx.Client() as client:
        E = emb.embed(client, [str(texts[i]) for i in idx])
    for i, row in zip(idx, E):
        out[i] = row.tolist()
    return out
