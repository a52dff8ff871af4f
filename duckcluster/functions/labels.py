"""SQL functions of the labels area: labeling, enrichment, taxonomies, text embeddings.

Registered through ``duckcluster.functions.AREAS``: :func:`register_udfs` adds the private
``_dc_*`` UDFs on each connection (its own copies); :data:`MACROS` (public TEMP macros
with ``:=`` arguments) runs on every connection.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import DataError, SpecError
from ..catalog import labels as store
from ..labels import ask as _ask
from ..labels import enrich as _enrich
from ..labels import labeling as _labeling
from ..labels import taxonomy as _taxonomy
from ..labels.config import EMBED_OPTIONS, LABEL_OPTIONS
from ._declare import Function, P, decode_options, macros_sql, options, register
from ._registry import _report

_TAXONOMY_CACHE_SECONDS = 1.0


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
    cache = state.taxonomy_cache
    now = time.monotonic()
    gen = state.taxonomy_generation
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


def _label(state):
    read_secret = _secret_reader(state)

    def label(name, run_id, options):
        if name is None:
            raise SpecError("cluster_label needs a definition name; got NULL.")
        with state.cursor() as cur:
            report = _labeling.label_run(cur, name, run_id, decode_options(options),
                                         read_secret=read_secret, progress=_report)
        return report.message()
    return label


def _enrich_body(state):
    def enrich(name, target, options):
        if name is None:
            raise SpecError("cluster_enrich needs a definition name; got NULL.")
        opts = decode_options(options)
        fields = opts.pop("fields", None)
        with state.cursor() as cur:
            return _enrich.enrich(cur, name, target, fields, opts).message()
    return enrich


def _promote(state):
    def promote(name, taxonomy, options):
        if name is None:
            raise SpecError("cluster_promote needs a definition name; got NULL.")
        if taxonomy is None:
            raise SpecError("cluster_promote needs a taxonomy name: cluster_promote(name, "
                            "'my_taxonomy') or taxonomy_name := 'my_taxonomy'.")
        opts = decode_options(options)
        clusters = opts.pop("clusters", None)
        with state.cursor() as cur:
            msg = _taxonomy.promote(cur, name, taxonomy, clusters, opts)
        state.taxonomy_generation += 1
        return msg
    return promote


def _taxonomy_delete(state):
    def taxonomy_delete(taxonomy):
        with state.cursor() as cur:
            cur.execute("BEGIN")
            try:
                store.delete_taxonomy(cur, taxonomy)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        state.taxonomy_generation += 1
        return f"deleted taxonomy {taxonomy!r}"
    return taxonomy_delete


def _embed(state):
    read_secret = _secret_reader(state)

    def embed(text: pa.ChunkedArray, options: pa.ChunkedArray):
        texts = text.to_pylist()
        opts = options.to_pylist()
        out: list = [None] * len(texts)
        for o in set(opts):
            idx = [i for i, x in enumerate(opts) if x == o]
            vecs = _ask.embed_texts([texts[i] for i in idx], decode_options(o),
                                         read_secret=read_secret)
            for i, v in zip(idx, vecs):
                out[i] = v
        return pa.array(out, pa.list_(pa.float32()))
    return embed


def _assign(detail: bool):
    return lambda state: lambda e, n, t: _assign_taxonomy(state, e, n, t, detail)


_EMB = P("embedding", to="arg", sql_type="FLOAT[]", cast=True)
_TAX = (P("taxonomy_name", to="arg"),
        P("threshold", "NULL", to="arg", sql_type="FLOAT", cast=True))

#: The regular functions of this area (see :mod:`._declare`). Their JSON options are the
#: keys the Python side validates (``LABEL_OPTIONS`` and friends; test_sql_surface checks).
FUNCTIONS = (
    Function("cluster_label", "_dc_label", "VARCHAR", _label,
             (P("name", to="arg"), P("run_id", "NULL", to="arg"), *options((
                 "text", "provider", "model", "base_url", "input_mappings", "custom_prompt",
                 "response_shape", "max_samples_per_cluster", "sample_text_max_length",
                 "include_summary", "include_keywords", "n_keywords", "use_embedding_dedup",
                 "embedding_similarity_threshold", "embedding_provider", "embedding_model",
                 "embedding_base_url", "cache_ttl_seconds", "secret", "api_key_env", "timeout",
                 "max_retries", "retry_backoff", "concurrency", "json_mode", "temperature"))),
             checks=LABEL_OPTIONS,
             doc="labels, summaries and keywords per cluster: offline keywords by default, or an "
                 "LLM provider"),
    Function("cluster_enrich", "_dc_enrich", "VARCHAR", _enrich_body,
             (P("name", to="arg"), P("target", to="arg"),
              *options(("fields", "run_id", "id", "prefix", "insert_missing"))),
             checks=_enrich.OPTIONS,
             doc="writes cluster_id / label / summary / keywords into a target table, in one "
                 "transaction"),
    Function("cluster_promote", "_dc_promote", "VARCHAR", _promote,
             (P("name", to="arg"),
              P("taxonomy_name", "NULL", to="arg", expr="coalesce(taxonomy_name, taxonomy)"),
              *options(("run_id", "clusters", "min_size", "min_mean_similarity", "threshold",
                        "mode", "prefix")), P("taxonomy", "NULL", to="none")),
             aliases={"taxonomy": "taxonomy_name"}, checks=_taxonomy.OPTIONS,
             doc="stable clusters of a run become the reference nodes of a taxonomy"),
    Function("taxonomy_delete", "_dc_taxonomy_delete", "VARCHAR", _taxonomy_delete,
             (P("taxonomy_name", to="arg"),), null_handling="default",
             doc="remove a taxonomy and its nodes"),
    Function("assign_taxonomy", "_dc_assign_taxonomy", "VARCHAR", _assign(False),
             (_EMB, *_TAX), udf_type="arrow",
             doc="the taxonomy node nearest an embedding (NULL below the threshold)"),
    Function("assign_taxonomy_detail", "_dc_assign_taxonomy_detail",
             "STRUCT(node_id VARCHAR, label VARCHAR, similarity FLOAT, path VARCHAR[])",
             _assign(True), (_EMB, *_TAX), udf_type="arrow",
             doc="assign_taxonomy with the node's label, similarity and path from the root"),
    Function("embed_text", "_dc_embed_text", "FLOAT[]", _embed,
             (P("input", to="arg", cast=True), P("provider", "'openai'"), *options((
                 "model", "base_url", "dimensions", "secret", "api_key_env", "timeout",
                 "max_retries", "retry_backoff"))),
             udf_type="arrow", null_handling="default", checks=EMBED_OPTIONS,
             doc="embeddings of a text column from an OpenAI-compatible endpoint"),
)


def register_udfs(con: duckdb.DuckDBPyConnection, state) -> None:
    """Private UDFs of one connection (each connection registers its own copies)."""
    register(con, state, FUNCTIONS)


MACROS = macros_sql(FUNCTIONS)
