"""Cluster labels: offline class-based TF-IDF keywords by default, LLM labels on request.

Offline (the default, deterministic, no network): for every cluster node the
keywords are its class-based TF-IDF top terms (all documents of a cluster form
one class; ``tf`` per class, ``idf = log(1 + A / f_t)`` with ``A`` the mean
class size in words), the label is built from the top keywords, and the
representative documents are the members closest to the centroid.

With a provider (``openai``-compatible or ``gemini``) each node's representative
documents, shaped by the input mappings, go to the LLM with the offline
keywords as hints; the answer must match the response shape. Transport faults
are retried in :mod:`duckcluster.labels.llm`; a malformed or off-shape answer is asked
again once; a node whose call still fails keeps its offline label and the
failure is recorded. Answers are cached by request hash for
``cache_ttl_seconds``; similar labels can be merged by embedding similarity.

>>> ctfidf_keywords([["the cat sat on the mat", "cats purr"],
...                  ["stocks fell", "the market and stocks"]], n=2)
[['cat', 'cats'], ['stocks', 'fell']]
>>> offline_label(['linear algebra', 'linear', 'matrix', 'eigenvalues'])
'linear algebra, matrix, eigenvalues'
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._errors import DataError, DuckclusterError, SpecError
from .._params import Param, validate_params
from .._source import (describe, quote_ident, require_columns, source_sql,
                       validate_text_expression)
from ..catalog import labels as store
from ..catalog import runs as catalog
from ..core import progress as _steps
from ..core.assign import normalize_rows
from ..core.keywords import ctfidf_keywords, offline_label
from .llm import LLMError, RetryPolicy, chat_provider, embedding_provider, provider_name
from .llm._keys import SecretReader
from .prompt import (
    SYSTEM,
    InputMapping,
    ShapeError,
    build_prompt,
    check_shape,
    default_shape,
    document_parts,
    document_text,
    jsonable,
    literal_parts,
    parse_answer,
    parse_mappings,
    payload_columns,
    truncate,
    validate_shape,
)

Progress = Callable[[str], None]

#: Label options, declared as data (cluster_label arguments and the definition's labeling).
LABEL_OPTIONS: dict[str, Param] = {
    "provider": Param(str, "offline", doc="'offline' (default), 'openai' or 'gemini'"),
    "model": Param(str, None, nullable=True, doc="chat model; provider default if not set"),
    "base_url": Param(str, None, nullable=True, doc="API root, e.g. http://localhost:11434/v1"),
    "api_key_env": Param(str, None, nullable=True, doc="environment variable holding the key"),
    "secret": Param(str, None, nullable=True, doc="DuckDB http secret holding the key"),
    "text": Param(str, None, nullable=True, doc="SQL expression over the source: the text"),
    "custom_prompt": Param(str, None, nullable=True, doc="replaces the default instructions"),
    "max_samples_per_cluster": Param(int, 5, low=1, high=100),
    "sample_text_max_length": Param(int, 2000, low=1, doc="characters per document text"),
    "include_summary": Param(bool, True),
    "include_keywords": Param(bool, True),
    "n_keywords": Param(int, 10, low=1, high=50, doc="offline keywords per cluster"),
    "use_embedding_dedup": Param(bool, False),
    "embedding_similarity_threshold": Param(float, 0.8, low=0.0, high=1.0),
    "embedding_provider": Param(str, None, nullable=True),
    "embedding_model": Param(str, None, nullable=True),
    "embedding_base_url": Param(str, None, nullable=True),
    "cache_ttl_seconds": Param(int, 604800, low=0, doc="0 disables the label cache"),
    "timeout": Param(float, 60.0, low=0.0, low_open=True, doc="seconds per HTTP attempt"),
    "max_retries": Param(int, 3, low=0, high=10, doc="retries of timeouts, 429 and 5xx"),
    "retry_backoff": Param(float, 0.5, low=0.0, doc="first backoff in seconds, doubling"),
    "concurrency": Param(int, 4, low=1, high=32, doc="LLM requests in flight"),
    "json_mode": Param(bool, True, doc="ask the provider for JSON output"),
    "temperature": Param(float, 0.0, low=0.0, high=2.0),
}
_STRUCTURED = ("input_mappings", "response_shape")
_ALIASES = {"model_name": "model", "labeling_inputs": "input_mappings", "prompt": "custom_prompt"}
_OFFLINE = ("offline", "none")
MAX_DOCS_PER_NODE = 3000  # documents per cluster fed to c-TF-IDF (a seeded sample above it)


@dataclass(frozen=True)
class LabelConfig:
    """Validated label options (see :data:`LABEL_OPTIONS`)."""

    provider: str = "offline"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    secret: str | None = None
    text: str | None = None
    custom_prompt: str | None = None
    max_samples_per_cluster: int = 5
    sample_text_max_length: int = 2000
    include_summary: bool = True
    include_keywords: bool = True
    n_keywords: int = 10
    use_embedding_dedup: bool = False
    embedding_similarity_threshold: float = 0.8
    embedding_provider: str | None = None
    embedding_model: str | None = None
    embedding_base_url: str | None = None
    cache_ttl_seconds: int = 604800
    timeout: float = 60.0
    max_retries: int = 3
    retry_backoff: float = 0.5
    concurrency: int = 4
    json_mode: bool = True
    temperature: float = 0.0
    input_mappings: tuple[InputMapping, ...] = ()
    response_shape: Mapping[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelConfig:
        """Validate options; None counts as not given. Accepts the seed's names
        (model_name, labeling_inputs, enabled)."""
        d = {_ALIASES.get(k, k): v for k, v in dict(d or {}).items() if v is not None}
        enabled = d.pop("enabled", None)
        structured = {k: d.pop(k) for k in _STRUCTURED if k in d}
        opts = validate_params("cluster_label", {**LABEL_OPTIONS,
                                                 **{k: Param(str) for k in _STRUCTURED}}, d)
        for k in _STRUCTURED:
            opts.pop(k, None)
        prov = str(opts["provider"]).lower()
        if enabled is False:
            prov = "offline"
        opts["provider"] = prov if prov in _OFFLINE else provider_name(prov)
        if opts["provider"] == "sentence-transformers":
            raise SpecError("provider 'sentence-transformers' only embeds; label with 'offline', "
                            "'openai' or 'gemini' and pass it as embedding_provider.")
        if opts["provider"] == "none":
            opts["provider"] = "offline"
        if opts["embedding_provider"]:
            opts["embedding_provider"] = provider_name(opts["embedding_provider"])
        shape = structured.get("response_shape")
        return cls(**opts, input_mappings=parse_mappings(structured.get("input_mappings")),
                   response_shape=validate_shape(shape) if shape is not None else None)

    @property
    def offline(self) -> bool:
        return self.provider == "offline"

    @property
    def shape(self) -> dict[str, Any]:
        return dict(self.response_shape) if self.response_shape else default_shape(
            self.include_summary, self.include_keywords)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff=self.retry_backoff,
                           timeout=self.timeout)

    def public(self) -> dict[str, Any]:
        """Options as plain JSON (no keys are ever part of the config)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["input_mappings"] = [m.__dict__ for m in self.input_mappings]
        return out


# -- offline core -------------------------------------------------------------------------

def offline_summary(size: int, keywords: Sequence[str], example: str | None) -> str:
    text = f"{size} document{'s' if size != 1 else ''}"
    if keywords:
        text += f" about {', '.join(keywords[:6])}"
    if example:
        text += f'. Most typical: "{truncate(" ".join(example.split()), 160)}"'
    return text + "."


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


# -- the labeling run ------------------------------------------------------------------------

@dataclass
class LabelReport:
    """What a cluster_label call did."""

    name: str
    run_id: str
    provider: str
    model: str | None = None
    n_nodes: int = 0
    n_llm: int = 0
    n_cached: int = 0
    n_failed: int = 0
    n_merged: int = 0
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        head = f"labeled {self.n_nodes} cluster node(s) of run {self.run_id}"
        if self.provider == "offline":
            text = head + " offline (class-based TF-IDF keywords)"
        else:
            parts = [f"{self.n_llm} by {self.provider} {self.model}"]
            if self.n_cached:
                parts.append(f"{self.n_cached} from the label cache")
            if self.n_failed:
                parts.append(f"{self.n_failed} kept the offline label after an LLM failure "
                             f"(see SELECT * FROM cluster_label_failures({self.name!r}))")
            text = f"{head}: " + ", ".join(parts)
        if self.n_merged:
            text += f"; {self.n_merged} label(s) merged into similar ones"
        for note in self.notes:
            text += f"; {note}"
        return text


@dataclass
class _Node:
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


def label_run(cur, name: str, run_id: str | None, args: Mapping[str, Any],
              read_secret: SecretReader | None = None,
              progress: Progress = lambda s: None, only_unlabeled: bool = False) -> LabelReport:
    """Label every cluster node of a run (default: the latest) and store the labels.

    ``only_unlabeled``: leave nodes that already have a label (carried from the previous
    run) as they are; keywords are still computed over every node (c-TF-IDF compares
    the clusters), but only the others are written or sent to an LLM."""
    catalog.require_writable(cur, "cluster_label")
    spec = catalog.get_definition(cur, name)
    base = dict(spec.labeling or {})
    cfg = LabelConfig.from_dict({**base, **{k: v for k, v in args.items() if v is not None}})
    run_id = catalog.resolve_run(cur, name, run_id)
    chat = ep = embedder = None
    if not cfg.offline:
        chat, ep = chat_provider(cfg.provider, model=cfg.model, base_url=cfg.base_url,
                                 policy=cfg.policy, json_mode=cfg.json_mode,
                                 api_key_env=cfg.api_key_env, secret=cfg.secret,
                                 read_secret=read_secret, temperature=cfg.temperature)
    if cfg.use_embedding_dedup:
        embedder = _dedup_embedder(cfg, read_secret)
    report = LabelReport(name, run_id, cfg.provider, ep.model if ep else None)
    rows = store.run_nodes(cur, run_id)
    if not rows:
        report.notes.append("the run has no clusters (all noise)")
        return report
    progress(f"{name}: reading member texts")
    members = store.run_members(cur, run_id)
    ids = np.asarray(members.column("id").to_pylist(), dtype=object)
    texts = _member_texts(cur, spec, cfg, ids)
    sims = _member_scores(cur, spec, ids, members, rows)
    nodes = _nodes(rows, members)
    rng = np.random.default_rng(spec.seed)
    for nd, score in zip(nodes, sims):
        order = nd.members[np.argsort(-score, kind="stable")]
        nd.reps = [str(ids[i]) for i in order[:cfg.max_samples_per_cluster]]
    progress(f"{name}: offline keywords for {len(nodes)} node(s)")
    _offline(nodes, texts, ids, cfg, rng)
    if only_unlabeled:
        nodes = _unlabeled(nodes, report)
        if not nodes:
            return report
    failures: list[dict[str, Any]] = []
    cache_puts: list[tuple[str, str, str, Any]] = []
    now = catalog.now()
    if chat is not None:
        _llm_label(cur, name, nodes, cfg, chat, ep, spec, report, failures, cache_puts, now,
                   progress)
    if embedder is not None:
        _dedup(nodes, cfg, embedder, report, failures)
    report.n_nodes = len(nodes)
    model = ep.model if ep else None
    label_rows = [{
        "node_id": nd.row.node_id, "label": nd.label, "summary": nd.summary,
        "keywords": nd.out_keywords, "attributes": nd.attributes, "source": nd.source,
        "provider": cfg.provider if nd.source != "offline" else "offline",
        "model": model if nd.source != "offline" else None,
        "representative_ids": nd.reps, "merged_into": nd.merged_into} for nd in nodes]
    for f in failures:
        f.setdefault("provider", cfg.provider)
        f.setdefault("model", model)
    cur.execute("BEGIN")
    try:
        if cache_puts and cfg.cache_ttl_seconds > 0:
            store.cache_put(cur, cache_puts, now, cfg.cache_ttl_seconds)
        store.write_labels(cur, run_id, name, label_rows, now)
        store.write_failures(cur, run_id, name, failures, now)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    try:
        store.rewrite_centroids_artifact(cur, run_id)
    except Exception as exc:  # the catalog is the source of truth; say so, do not fail
        report.notes.append(f"centroids.parquet not rewritten ({type(exc).__name__})")
    return report


def _unlabeled(nodes: list[_Node], report: LabelReport) -> list[_Node]:
    """The nodes without a stored label; their new offline labels are kept apart from
    the labels the others carry (same level)."""
    kept = [nd for nd in nodes if nd.row.label is not None]
    todo = [nd for nd in nodes if nd.row.label is None]
    taken = {(nd.row.level, nd.row.label) for nd in kept}
    for nd in todo:
        if (nd.row.level, nd.label) in taken:
            nd.label = f"{nd.label} ({nd.row.node_id})"
        taken.add((nd.row.level, nd.label))
    if kept:
        report.notes.append(f"{len(kept)} kept the label they carry")
    return todo


def label_after_run(cur, name: str, run_id: str, progress: Progress = lambda s: None
                    ) -> LabelReport | None:
    """At the end of a full run of a labeled definition (one with ``labeling`` settings,
    or with labels on an earlier run), label the clusters that carried no label, with
    the definition's settings (offline keywords when it has none). ``labeling``
    ``enabled: false`` turns this off. A failure does not undo the run: it is noted in
    the run's ``error`` column, which ``cluster_centroids`` shows as the label_note."""
    run = catalog.get_run(cur, run_id)
    if run["status"] != "succeeded" or run["mode"] != "full":
        return None
    spec = catalog.get_definition(cur, name)
    if (spec.labeling or {}).get("enabled") is False:
        return None
    if not spec.labeling and not store.has_labels(cur, name):
        return None
    try:
        return label_run(cur, name, run_id, {}, progress=progress, only_unlabeled=True)
    except Exception as exc:  # noqa: BLE001 - recorded, the run itself succeeded
        catalog.note_run(cur, run_id, f"run succeeded; automatic labeling failed: "
                                      f"{type(exc).__name__}: {exc}")
        return None


def _dedup_embedder(cfg: LabelConfig, read_secret: SecretReader | None):
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


def _nodes(rows: Sequence[store.NodeRow], members) -> list[_Node]:
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
    return [_Node(r, np.asarray(index[r.node_id], dtype=np.int64)) for r in rows]


def _member_texts(cur, spec, cfg: LabelConfig, ids: np.ndarray) -> dict[str, str]:
    """id -> the text c-TF-IDF sees, for the run's members."""
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    id_col = spec.id
    require_columns(cols, [id_col], "id", spec.source)
    qid = quote_ident(id_col)
    text_mappings = [m for m in cfg.input_mappings
                     if m.input_key == "text" and m.source_type != "literal"]
    if cfg.text:
        expr = quote_ident(cfg.text) if cfg.text in cols else cfg.text
        if cfg.text not in cols:
            validate_text_expression(cur, cfg.text)
        sql = f"SELECT CAST({qid} AS VARCHAR), CAST(({expr}) AS VARCHAR) FROM {src}"
    elif text_mappings:
        need = [c for c in payload_columns(text_mappings) if c in cols]
        if not need:
            raise SpecError(f"No column of source {spec.source!r} matches the input mappings' "
                            f"paths ({', '.join(m.path or '' for m in text_mappings)}). "
                            f"Columns: {', '.join(cols)}.")
        tbl = cur.sql(f"SELECT CAST({qid} AS VARCHAR) AS __dc_id, "
                      f"{', '.join(quote_ident(c) for c in need)} FROM {src}").to_arrow_table()
        out = {}
        for r in tbl.to_pylist():
            key = r.pop("__dc_id")
            out[key] = document_text(r, text_mappings)
        return out
    else:
        skip = {id_col, *spec.embedding}
        text_cols = [c for c, t in cols.items() if c not in skip and t in ("VARCHAR", "JSON")]
        if not text_cols:
            raise SpecError(f"Source {spec.source!r} has no text column to label from. Pass "
                            "text := '<column or SQL expression>' or input_mappings := [...].")
        joined = ", ".join(quote_ident(c) for c in text_cols)
        sql = f"SELECT CAST({qid} AS VARCHAR), concat_ws(' ', {joined}) FROM {src}"
    return {k: v for k, v in cur.execute(sql).fetchall() if v is not None}


def _member_scores(cur, spec, ids: np.ndarray, members, rows) -> list[np.ndarray]:
    """Per node: cosine of each subtree member to the node's centroid (for representatives)."""
    from ..engine.reader import read_source

    nodes = _nodes(rows, members)
    stored = np.nan_to_num(np.asarray(members.column("sim").to_numpy(zero_copy_only=False),
                                      dtype=np.float32), nan=-1.0)
    if all(r.level == 0 for r in rows):  # stored similarities are to these very centroids
        return [stored[nd.members] for nd in nodes]
    X = None
    try:
        data = read_source(cur, spec)
        pos = {k: i for i, k in enumerate(data.ids.tolist())}
        at = np.asarray([pos.get(k, -1) for k in ids.tolist()], dtype=np.int64)
        if data.X.shape[1] == rows[0].centroid.shape[0]:
            X = data.X
    except DuckclusterError:  # the source changed since the run: use stored similarities
        pass
    out = []
    for nd in nodes:
        if X is None:
            out.append(stored[nd.members])
            continue
        c = normalize_rows(nd.row.centroid[None, :])[0]
        rows_at = at[nd.members]
        s = np.full(len(nd.members), -2.0, dtype=np.float32)
        ok = rows_at >= 0
        s[ok] = X[rows_at[ok]] @ c
        out.append(s)
    return out


def _offline(nodes: list[_Node], texts: Mapping[str, str], ids: np.ndarray, cfg: LabelConfig,
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


def _payloads(cur, spec, wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
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


class _Failure(Exception):
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
            raise _Failure(exc.kind, str(exc), requests + exc.attempts) from None
        requests += 1
        try:
            return check_shape(parse_answer(text, node_id), shape)
        except ShapeError as exc:
            kind, err = "off_shape", f"the answer does not match response_shape: {exc}"
        except ValueError as exc:
            kind, err = "malformed_json", str(exc)
        note = [{"type": "text", "text": f"Your previous answer was rejected: {err}. Answer "
                 "again with only the JSON object of the requested shape."}]
    raise _Failure(kind, err, requests)


def _llm_label(cur, name, nodes: list[_Node], cfg: LabelConfig, chat, ep, spec,
               report: LabelReport, failures: list, cache_puts: list, now, progress) -> None:
    import httpx

    shape = cfg.shape
    wanted = sorted({i for nd in nodes for i in nd.reps})
    payloads = _payloads(cur, spec, wanted)
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
    for nd, _parts, key in jobs:
        if key in cached:
            _apply(nd, cached[key], "cache", cfg)
            report.n_cached += 1
    progress(f"{name}: asking {cfg.provider} about {len(todo)} cluster node(s)")
    auth_failed = threading.Event()

    def run(job):
        nd, parts, key = job
        if auth_failed.is_set():
            return nd, key, _Failure("auth", "skipped after an authentication failure", 0)
        try:
            return nd, key, ask(chat, client, nd.row.node_id, parts, shape)
        except _Failure as f:
            if f.kind == "auth":
                auth_failed.set()
            return nd, key, f

    with httpx.Client() as client, ThreadPoolExecutor(cfg.concurrency) as pool:
        results = []
        for res in pool.map(run, todo):
            results.append(res)
            _steps.step("cluster nodes labeled", len(results), len(todo))
    for nd, key, res in results:
        if isinstance(res, _Failure):
            failures.append({"node_id": nd.row.node_id, "kind": res.kind, "error": res.error,
                             "attempts": res.attempts})
            report.n_failed += 1
        else:
            _apply(nd, res, "llm", cfg)
            cache_puts.append((key, cfg.provider, ep.model, res))
            report.n_llm += 1


def _apply(nd: _Node, value: Mapping[str, Any], source: str, cfg: LabelConfig) -> None:
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


def _dedup(nodes: list[_Node], cfg: LabelConfig, embedder, report: LabelReport,
           failures: list) -> None:
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
        report.notes.append("label dedup skipped: the embeddings call failed")
        return
    if E.shape[0] != len(nodes):
        raise DataError(f"label dedup: got {E.shape[0]} embeddings for {len(nodes)} labels.")
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].row.size, i))
    merges = leader_merges(E, order, [nd.row.level for nd in nodes],
                           cfg.embedding_similarity_threshold)
    for j, i in merges.items():
        nodes[j].attributes = {**nodes[j].attributes, "original_label": nodes[j].label}
        nodes[j].label = nodes[i].label
        nodes[j].merged_into = nodes[i].row.node_id
    report.n_merged = len(merges)


def embed_texts(texts: Sequence[str | None], options: Mapping[str, Any],
                read_secret: SecretReader | None = None) -> list[list[float] | None]:
    """Embeddings of ``texts`` (None stays None) through an embedding provider."""
    import httpx

    opts = validate_params("embed_text", _EMBED_OPTIONS, options)
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


_EMBED_OPTIONS: dict[str, Param] = {
    "provider": Param(str, "openai"),
    "model": Param(str, None, nullable=True),
    "base_url": Param(str, None, nullable=True),
    "dimensions": Param(int, None, low=1, nullable=True),
    "api_key_env": Param(str, None, nullable=True),
    "secret": Param(str, None, nullable=True),
    "timeout": Param(float, 60.0, low=0.0, low_open=True),
    "max_retries": Param(int, 3, low=0, high=10),
    "retry_backoff": Param(float, 0.5, low=0.0),
}
