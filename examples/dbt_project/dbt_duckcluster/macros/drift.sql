{#- A drift model: one row per drift method comparing two sets of embeddings.

    {{ config(materialized='table') }}
    {{ dbt_duckcluster.embedding_drift(
         "select * from " ~ ref('docs') ~ " where published_on < date '2024-02-01'",
         "select * from " ~ ref('docs') ~ " where published_on >= date '2024-02-01'",
         embedding='embedding', method='mmd') }}

  `baseline` and `current` are relations (ref, source), SQL text, or any
  duckcluster source string (a table name, a Parquet glob, 'run:<run_id>').
  `options` holds embedding_drift's other named arguments (alpha, seed, params,
  reference...). Test it with `no_embedding_drift` (drift_detected must be false).
-#}
{% macro embedding_drift(baseline, current, embedding='embedding', method=none, options={}) -%}
  {%- set named = dbt_duckcluster.named_args(options, json_keys=['params']) -%}
  select *
  from embedding_drift({{ dbt_duckcluster.source_literal(baseline) }},
                       {{ dbt_duckcluster.source_literal(current) }},
                       embedding := {{ dbt_duckcluster.sql_literal(embedding) }}
                       {%- if method is not none %}, method := {{ dbt_duckcluster.sql_literal(method) }}{% endif %}
                       {%- if named %}, {{ named }}{% endif %})
{%- endmacro %}
