"""Cluster labels: offline class-based TF-IDF keywords by default (:mod:`.keywords`), LLM
labels on request (:mod:`.ask`); :func:`label_run` reads a run's members and texts, labels
every node and stores labels, failures and cache entries in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import DuckclusterError, SpecError
from .._source import (describe, quote_ident, require_columns, source_sql,
                       validate_text_expression)
from ..catalog import labels as store
from ..catalog import runs as catalog
from ..core.assign import normalize_rows
from .ask import dedup, dedup_embedder, llm_label
from .config import LabelConfig
from .keywords import Node, nodes_of, offline_labels
from .llm import chat_provider
from .llm._keys import SecretReader
from .prompt import document_text, payload_columns

Progress = Callable[[str], None]


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
        embedder = dedup_embedder(cfg, read_secret)
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
    nodes = nodes_of(rows, members)
    rng = np.random.default_rng(spec.seed)
    for nd, score in zip(nodes, sims):
        order = nd.members[np.argsort(-score, kind="stable")]
        nd.reps = [str(ids[i]) for i in order[:cfg.max_samples_per_cluster]]
    progress(f"{name}: offline keywords for {len(nodes)} node(s)")
    offline_labels(nodes, texts, ids, cfg, rng)
    if only_unlabeled:
        nodes = _unlabeled(nodes, report)
        if not nodes:
            return report
    failures: list[dict[str, Any]] = []
    cache_puts: list[tuple[str, str, str, Any]] = []
    now = catalog.now()
    if chat is not None:
        report.n_llm, report.n_cached, report.n_failed = llm_label(
            cur, name, nodes, cfg, chat, ep, spec, failures, cache_puts, now, progress)
    if embedder is not None:
        merged = dedup(nodes, cfg, embedder, failures)
        if merged is None:
            report.notes.append("label dedup skipped: the embeddings call failed")
        else:
            report.n_merged = merged
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


def _unlabeled(nodes: list[Node], report: LabelReport) -> list[Node]:
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

    nodes = nodes_of(rows, members)
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
