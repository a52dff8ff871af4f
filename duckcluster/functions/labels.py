"""SQL functions of the labels area: labeling, enrichment, taxonomies, text embeddings.

Registered through ``duckcluster.functions.AREAS``: :func:`register_udfs` adds the private
``_dc_*`` UDFs once per database instance; :data:`MACROS` (public TEMP macros
with ``:=`` arguments) runs on every connection.
"""

from __future__ import annotations

import json
import time
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import DataError, SpecError
from ..catalog import labels as store
from ..labels import enrich as _enrich
from ..labels import labeling as _labeling
from ..labels import taxonomy as _taxonomy

_TAXONOMY_CACHE_SECONDS = 1.0


def _options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    return {k: v for k, v in json.loads(text).items() if v is not None}


def _secret_reader(state):
    """Bearer token of a named http secret, or of the one scoped to a URL (None if none)."""
    def read(name: str | None, url: str | None) -> str | None:
        with state.cursor() as cur:
            try:
                if name is None:
                    rows = cur.execute("SELECT name FROM which_secret(?, 'http')",
                                       [url]).fetchall()
                    if not rows:
                        return None
                    name = rows[0][0]
                rows = cur.execute("SELECT secret_string FROM duckdb_secrets(redact := false) "
                                   "WHERE name = ?", [name]).fetchall()
            except duckdb.Error as exc:
                if "unredacted" in str(exc) and name is not None:
                    raise SpecError(
                        f"DuckDB hides the value of secret {name!r} from this connection. Open "
                        "it with config={'allow_unredacted_secrets': True} (duckcluster.connect"
                        "(path, config=...)), or set the API key in the environment.") from None
                return None
        if not rows:
            return None
        for part in rows[0][0].split(";"):
            k, _, v = part.partition("=")
            if k.strip() in ("bearer_token", "token", "api_key") and v and v != "redacted":
                return v
        return None
    return read


def _load_taxonomy(state, name: str) -> _taxonomy.Taxonomy:
    cache = state.__dict__.setdefault("taxonomy_cache", {})
    now = time.monotonic()
    gen = state.__dict__.get("taxonomy_generation", 0)
    hit = cache.get(name)
    if hit and hit[0] == gen and now - hit[1] < _TAXONOMY_CACHE_SECONDS:
        return hit[2]
    with state.cursor() as cur:
        tax = _taxonomy.load(cur, name)
    cache[name] = (gen, now, tax)
    return tax


def _assign_taxonomy(state, emb: pa.ChunkedArray, name: pa.ChunkedArray,
                     threshold: pa.ChunkedArray, detail: bool):
    from ..core.vectors import to_dense

    n = len(emb)
    names = name.to_pylist()
    thr = threshold.to_pylist()
    valid = np.asarray(emb.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    node_out: list[str | None] = [None] * n
    label_out: list[str | None] = [None] * n
    sim_out: list[float | None] = [None] * n
    path_out: list[list[str] | None] = [None] * n
    for nm in {x for x in names if x is not None}:
        tax = _load_taxonomy(state, nm)
        sel = np.asarray([x == nm for x in names]) & valid
        for t in {thr[i] for i in np.flatnonzero(sel)}:
            rows = np.flatnonzero(sel & np.asarray([x == t for x in thr]))
            sub = emb.take(pa.array(rows)) if rows.size != n else emb
            v = to_dense(sub, [f"#{i}" for i in rows], "embedding")
            if tax.C.shape[0] and v.X.shape[1] != tax.C.shape[1]:
                raise DataError(f"assign_taxonomy: the embedding has {v.X.shape[1]} dimensions "
                                f"but taxonomy {nm!r} has {tax.C.shape[1]}. Use the embedding "
                                "model its clusters were built on.")
            node, sim = _taxonomy.walk_tree(v.X, tax.C, tax.parent,
                                            tax.threshold if t is None else t)
            for r, k, s in zip(rows.tolist(), node.tolist(), sim.tolist()):
                if k >= 0:
                    node_out[r] = tax.node_ids[k]
                    label_out[r] = tax.labels[k]
                    sim_out[r] = s
                    path_out[r] = tax.path(k) if detail else None
    if not detail:
        return pa.array(node_out, pa.string())
    mask = np.asarray([x is None for x in node_out])
    return pa.StructArray.from_arrays(
        [pa.array(node_out, pa.string()), pa.array(label_out, pa.string()),
         pa.array(sim_out, pa.float32()), pa.array(path_out, pa.list_(pa.string()))],
        names=["node_id", "label", "similarity", "path"], mask=pa.array(mask))


def register_udfs(con: duckdb.DuckDBPyConnection, state) -> None:
    """Private UDFs, once per database instance."""
    from ._registry import _report, _wrap

    read_secret = _secret_reader(state)

    def label(name, run_id, options):
        if name is None:
            raise SpecError("cluster_label needs a definition name; got NULL.")
        with state.cursor() as cur:
            report = _labeling.label_run(cur, name, run_id, _options(options),
                                         read_secret=read_secret, progress=_report)
        return report.message()

    def enrich(name, target, options):
        if name is None:
            raise SpecError("cluster_enrich needs a definition name; got NULL.")
        opts = _options(options)
        fields = opts.pop("fields", None)
        with state.cursor() as cur:
            return _enrich.enrich(cur, name, target, fields, opts).message()

    def promote(name, taxonomy, options):
        if name is None:
            raise SpecError("cluster_promote needs a definition name; got NULL.")
        opts = _options(options)
        clusters = opts.pop("clusters", None)
        with state.cursor() as cur:
            msg = _taxonomy.promote(cur, name, taxonomy, clusters, opts)
        state.taxonomy_generation = state.__dict__.get("taxonomy_generation", 0) + 1
        return msg

    def taxonomy_delete(taxonomy):
        with state.cursor() as cur:
            cur.execute("BEGIN")
            try:
                store.delete_taxonomy(cur, taxonomy)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        state.taxonomy_generation = state.__dict__.get("taxonomy_generation", 0) + 1
        return f"deleted taxonomy {taxonomy!r}"

    def embed(text: pa.ChunkedArray, options: pa.ChunkedArray):
        texts = text.to_pylist()
        opts = options.to_pylist()
        out: list = [None] * len(texts)
        for o in set(opts):
            idx = [i for i, x in enumerate(opts) if x == o]
            vecs = _labeling.embed_texts([texts[i] for i in idx], _options(o),
                                         read_secret=read_secret)
            for i, v in zip(idx, vecs):
                out[i] = v
        return pa.array(out, pa.list_(pa.float32()))

    f = con.create_function
    f("_dc_label", _wrap(label), ["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR",
      side_effects=True, null_handling="special")
    f("_dc_enrich", _wrap(enrich), ["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR",
      side_effects=True, null_handling="special")
    f("_dc_promote", _wrap(promote), ["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR",
      side_effects=True, null_handling="special")
    f("_dc_taxonomy_delete", _wrap(taxonomy_delete), ["VARCHAR"], "VARCHAR", side_effects=True)
    f("_dc_assign_taxonomy", _wrap(lambda e, n, t: _assign_taxonomy(state, e, n, t, False)),
      ["FLOAT[]", "VARCHAR", "FLOAT"], "VARCHAR", type="arrow", null_handling="special",
      side_effects=True)
    f("_dc_assign_taxonomy_detail",
      _wrap(lambda e, n, t: _assign_taxonomy(state, e, n, t, True)),
      ["FLOAT[]", "VARCHAR", "FLOAT"],
      "STRUCT(node_id VARCHAR, label VARCHAR, similarity FLOAT, path VARCHAR[])", type="arrow",
      null_handling="special", side_effects=True)
    f("_dc_embed_text", _wrap(embed), ["VARCHAR", "VARCHAR"], "FLOAT[]", type="arrow",
      side_effects=True)


MACROS = r"""
CREATE OR REPLACE TEMP MACRO cluster_label(name, run_id := NULL, text := NULL, provider := NULL,
    model := NULL, base_url := NULL, input_mappings := NULL, custom_prompt := NULL,
    response_shape := NULL, max_samples_per_cluster := NULL, sample_text_max_length := NULL,
    include_summary := NULL, include_keywords := NULL, n_keywords := NULL,
    use_embedding_dedup := NULL, embedding_similarity_threshold := NULL,
    embedding_provider := NULL, embedding_model := NULL, embedding_base_url := NULL,
    cache_ttl_seconds := NULL, secret := NULL, api_key_env := NULL, timeout := NULL,
    max_retries := NULL, retry_backoff := NULL, concurrency := NULL, json_mode := NULL,
    temperature := NULL) AS
    _dc_label(name, run_id, json_object('text', text, 'provider', provider, 'model', model,
        'base_url', base_url, 'input_mappings', input_mappings, 'custom_prompt', custom_prompt,
        'response_shape', response_shape, 'max_samples_per_cluster', max_samples_per_cluster,
        'sample_text_max_length', sample_text_max_length, 'include_summary', include_summary,
        'include_keywords', include_keywords, 'n_keywords', n_keywords,
        'use_embedding_dedup', use_embedding_dedup,
        'embedding_similarity_threshold', embedding_similarity_threshold,
        'embedding_provider', embedding_provider, 'embedding_model', embedding_model,
        'embedding_base_url', embedding_base_url, 'cache_ttl_seconds', cache_ttl_seconds,
        'secret', secret, 'api_key_env', api_key_env, 'timeout', timeout,
        'max_retries', max_retries, 'retry_backoff', retry_backoff, 'concurrency', concurrency,
        'json_mode', json_mode, 'temperature', temperature)::VARCHAR);

CREATE OR REPLACE TEMP MACRO cluster_enrich(name, target, fields := NULL, run_id := NULL,
    id := NULL, prefix := NULL, insert_missing := NULL) AS
    _dc_enrich(name, target, json_object('fields', fields, 'run_id', run_id, 'id', id,
        'prefix', prefix, 'insert_missing', insert_missing)::VARCHAR);

CREATE OR REPLACE TEMP MACRO cluster_promote(name, taxonomy, run_id := NULL, clusters := NULL,
    min_size := NULL, min_mean_similarity := NULL, threshold := NULL, mode := NULL,
    prefix := NULL) AS
    _dc_promote(name, taxonomy, json_object('run_id', run_id, 'clusters', clusters,
        'min_size', min_size, 'min_mean_similarity', min_mean_similarity,
        'threshold', threshold, 'mode', mode, 'prefix', prefix)::VARCHAR);

CREATE OR REPLACE TEMP MACRO taxonomy_delete(taxonomy_name) AS _dc_taxonomy_delete(taxonomy_name);

CREATE OR REPLACE TEMP MACRO assign_taxonomy(embedding, taxonomy_name, threshold := NULL) AS
    _dc_assign_taxonomy(CAST(embedding AS FLOAT[]), taxonomy_name, CAST(threshold AS FLOAT));

CREATE OR REPLACE TEMP MACRO assign_taxonomy_detail(embedding, taxonomy_name, threshold := NULL) AS
    _dc_assign_taxonomy_detail(CAST(embedding AS FLOAT[]), taxonomy_name,
                               CAST(threshold AS FLOAT));

CREATE OR REPLACE TEMP MACRO embed_text(input, provider := 'openai', model := NULL,
    base_url := NULL, dimensions := NULL, secret := NULL, api_key_env := NULL, timeout := NULL,
    max_retries := NULL, retry_backoff := NULL) AS
    _dc_embed_text(CAST(input AS VARCHAR), json_object('provider', provider, 'model', model,
        'base_url', base_url, 'dimensions', dimensions, 'secret', secret,
        'api_key_env', api_key_env, 'timeout', timeout, 'max_retries', max_retries,
        'retry_backoff', retry_backoff)::VARCHAR);

-- Where each label of a run came from (offline, llm, cache, or carried from the run
-- carried_from_run_id), its extra response_shape attributes, representative documents
-- and dedup merges.
CREATE OR REPLACE TEMP MACRO cluster_labels(cluster_name, run_id := NULL) AS TABLE
    SELECT l.run_id, l.node_id, l.label, l.summary, l.keywords, l.attributes, l.source,
           l.provider, l.model, l.representative_ids, l.merged_into, l.labeled_at,
           l.carried_from_run_id
    FROM duckcluster.labels l
    WHERE l.name = cluster_name AND COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY l.node_id;

-- LLM calls that failed after their retries (the node kept its offline label).
CREATE OR REPLACE TEMP MACRO cluster_label_failures(cluster_name) AS TABLE
    SELECT f.run_id, f.node_id, f.provider, f.model, f.kind, f.error, f.attempts, f.failed_at
    FROM duckcluster.label_failures f
    WHERE f.name = cluster_name
    ORDER BY f.failed_at, f.node_id;

-- Enrichment history of a definition.
CREATE OR REPLACE TEMP MACRO cluster_enrichments(cluster_name) AS TABLE
    SELECT e.run_id, e.target, e.id_column, e.fields, e.columns, e.created_target, e.n_rows,
           e.n_matched, e.n_inserted, e.enriched_at
    FROM duckcluster.enrichments e
    WHERE e.name = cluster_name
    ORDER BY e.enriched_at;

CREATE OR REPLACE TEMP MACRO taxonomy_list() AS TABLE
    SELECT t.taxonomy, t.n_nodes, t.dim, t.threshold, t.created_at, t.updated_at
    FROM duckcluster.taxonomies t ORDER BY t.taxonomy;

CREATE OR REPLACE TEMP MACRO taxonomy_nodes(taxonomy_name) AS TABLE
    SELECT n.node_id, n.parent_node_id, n.level, n.label, n.summary, n.keywords, n.size,
           n.source_name, n.source_run_id, n.source_node_id, n.centroid, n.promoted_at
    FROM duckcluster.taxonomy_nodes n
    WHERE n.taxonomy = taxonomy_name
    ORDER BY n.level, n.node_id;
"""
