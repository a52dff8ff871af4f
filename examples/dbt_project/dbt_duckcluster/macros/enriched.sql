{#- An enrichment model: every row of `relation` with its cluster and the cluster's label.

    {{ config(materialized='table') }}
    {{ dbt_duckcluster.enriched('topics', ref('docs'), id='doc_id') }}

  Rows that are members of the definition's latest successful run take their
  cluster from the run; other rows (new since the run) are assigned to the
  nearest centroid of the latest full run by cosine (-1 below `threshold`, by
  default the run's own, as assign_cluster does). Labels, summaries and keywords come from the same full
  run (fill them with cluster_label, e.g. the cluster_run materialization's
  `label` config). `fields` picks from cluster_id, label, summary, keywords,
  cosine_similarity_to_centroid, assigned (true for rows assigned here, false
  for run members); `prefix` is put in front of every added column name.
  Materialize it as a table: assign_cluster is a Python function.
-#}
{% macro enriched(cluster_name, relation, id='id', embedding='embedding',
                  fields=['cluster_id', 'label', 'keywords', 'cosine_similarity_to_centroid'],
                  threshold=none, prefix='') -%}
  {%- set allowed = ['cluster_id', 'label', 'summary', 'keywords', 'cosine_similarity_to_centroid', 'assigned'] -%}
  {%- for f in fields if f not in allowed -%}
    {{ exceptions.raise_compiler_error("dbt_duckcluster.enriched: unknown field '" ~ f ~ "'. Valid fields: " ~ allowed | join(', ') ~ ".") }}
  {%- endfor -%}
  {%- set name = dbt_duckcluster.sql_literal(cluster_name) -%}
  {%- set exprs = {
      'cluster_id': '__dc_r.__dc_cluster_id',
      'label': '__dc_c.label',
      'summary': '__dc_c.summary',
      'keywords': '__dc_c.keywords',
      'cosine_similarity_to_centroid': '__dc_r.__dc_similarity',
      'assigned': '__dc_r.__dc_assigned'} -%}
  with __dc_j as (
    select __dc_src.*,
           __dc_m.cluster_id as __dc_member_cluster,
           __dc_m.cosine_similarity_to_centroid as __dc_member_similarity,
           __dc_m.id is null as __dc_assigned,
           case when __dc_m.id is null
                then assign_cluster_detail(__dc_src.{{ adapter.quote(embedding) }}, {{ name }},
                                           threshold := {{ dbt_duckcluster.sql_literal(threshold) }})
           end as __dc_detail
    from {{ relation }} as __dc_src
    left join cluster_members({{ name }}) as __dc_m
      on __dc_src.{{ adapter.quote(id) }} = __dc_m.id
  ),
  __dc_r as (
    select * exclude (__dc_member_cluster, __dc_member_similarity, __dc_detail),
           coalesce(__dc_member_cluster, __dc_detail.cluster_id) as __dc_cluster_id,
           coalesce(__dc_member_similarity, __dc_detail.similarity) as __dc_similarity
    from __dc_j
  ),
  __dc_c as (
    select cluster_id, label, summary, keywords
    from cluster_centroids({{ name }}, run_id := _dc_latest_full_run({{ name }}))
    where hierarchy_level = 0
  )
  select __dc_r.* exclude (__dc_cluster_id, __dc_similarity, __dc_assigned)
    {%- for f in fields %},
         {{ exprs[f] }} as {{ adapter.quote(prefix ~ f) }}
    {%- endfor %}
  from __dc_r
  left join __dc_c on __dc_c.cluster_id = __dc_r.__dc_cluster_id
{%- endmacro %}
