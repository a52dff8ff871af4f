{#- The `cluster_run` materialization: a model whose SQL selects the rows to cluster.

    {{ config(materialized='cluster_run', embedding='embedding', id='doc_id',
              algorithm='kmeans', params={'n_clusters': 4}, label={'text': 'body'}) }}
    select doc_id, body, embedding from {{ ref('docs') }}

  On every run it
    1. stores the duckcluster definition `cluster_name` (default: the model's name)
       with the model's SQL as its source (cluster_create(..., "replace" := true);
       earlier runs are kept),
    2. executes it (cluster_execute, mode 'full' or 'assign'), then labels the run
       if `label` is set (true, or a mapping of cluster_label options),
    3. builds the model's table: the model's rows plus the run's member fields
       (cluster_id, cosine_similarity_to_centroid, x, y, run_id by default;
       `fields` to choose), joined on the id column. Rows without an embedding are
       kept with NULL fields.
  With mode 'assign' the rows are assigned to the centroids of the latest full run
  (x, y are NULL: assign runs store no plotting coordinates).
  Steps 1-2 commit on duckcluster's own connection, so they run outside dbt's
  transaction; step 3 swaps the table in atomically. A failed clustering fails the
  model and is recorded as a failed run (SELECT * FROM cluster_runs('<name>')).

  Definition options (all optional except `embedding`): embedding, id, algorithm
  (default 'auto'), params, preprocessing, sample_size, hierarchical,
  max_hierarchy_depth, dimensions, seed, assignment_threshold, pooling, labeling,
  noise, noise_threshold, partition_by (one clustering per value of that column or
  expression of the model's rows; the default fields then include `partition`).
-#}

{% macro cluster_create_sql(name, source, options) -%}
  select cluster_create({{ dbt_duckcluster.sql_literal(name) }},
      source := {{ dbt_duckcluster.source_literal(source) }}
      {%- set named = dbt_duckcluster.named_args(options, json_keys=['params', 'preprocessing', 'labeling']) -%}
      {%- if named %}, {{ named }}{% endif %},
      "replace" := true) as name
{%- endmacro %}

{#- Run a stored definition now and return its run_id (also usable in hooks and
    `dbt run-operation dbt_duckcluster.execute_definition --args '{name: topics}'`). -#}
{% macro execute_definition(name, mode='full', assignment_threshold=none) -%}
  {%- if not execute -%}{{ return('') }}{%- endif -%}
  {%- set q -%}
    select cluster_execute({{ dbt_duckcluster.sql_literal(name) }},
        mode := {{ dbt_duckcluster.sql_literal(mode) }},
        assignment_threshold := {{ dbt_duckcluster.sql_literal(assignment_threshold) }}) as run_id
  {%- endset -%}
  {%- set run_id = run_query(q).columns[0].values()[0] -%}
  {{ log("duckcluster: " ~ name ~ " -> " ~ run_id, info=true) }}
  {{ return(run_id) }}
{%- endmacro %}

{% macro label_run(name, run_id, options={}) -%}
  {%- set named = dbt_duckcluster.named_args(options, json_keys=['input_mappings', 'response_shape']) -%}
  {%- set q -%}
    select cluster_label({{ dbt_duckcluster.sql_literal(name) }},
        run_id := {{ dbt_duckcluster.sql_literal(run_id) }}{% if named %}, {{ named }}{% endif %}) as message
  {%- endset -%}
  {%- set message = run_query(q).columns[0].values()[0] -%}
  {{ log("duckcluster: " ~ message, info=true) }}
{%- endmacro %}

{% macro cluster_run_select(sql, name, run_id, id_column, fields) -%}
  select __dc_src.*
    {%- for f in fields %}, __dc_m.{{ adapter.quote(f) }}{% endfor %}
  from (
    {{ sql }}
  ) as __dc_src
  left join cluster_members({{ dbt_duckcluster.sql_literal(name) }},
                            run_id := {{ dbt_duckcluster.sql_literal(run_id) }}) as __dc_m
    on __dc_src.{{ adapter.quote(id_column) }} = __dc_m.id
{%- endmacro %}

{% materialization cluster_run, adapter='duckdb' %}
  {%- set name = config.get('cluster_name') or this.identifier -%}
  {%- set mode = config.get('mode', 'full') -%}
  {%- set id_column = config.get('id') or 'id' -%}
  {%- set options = {} -%}
  {%- for key in ['embedding', 'id', 'algorithm', 'params', 'preprocessing', 'sample_size',
                  'hierarchical', 'max_hierarchy_depth', 'dimensions', 'seed',
                  'assignment_threshold', 'pooling', 'labeling', 'noise', 'noise_threshold',
                  'partition_by'] -%}
    {%- do options.update({key: config.get(key)}) -%}
  {%- endfor -%}
  {%- do options.update({'id': id_column}) -%}
  {%- if options['embedding'] is none -%}
    {{ exceptions.raise_compiler_error("cluster_run model " ~ this ~ ": set the embedding column, e.g. config(materialized='cluster_run', embedding='embedding', id='doc_id').") }}
  {%- endif -%}
  {%- set default_fields = ['cluster_id', 'cosine_similarity_to_centroid', 'x', 'y'] + (['z'] if options['dimensions'] == 3 else []) + ['run_id'] + (['partition'] if options['partition_by'] else []) -%}
  {%- set fields = config.get('fields', default_fields) -%}
  {%- set label = config.get('label', false) -%}

  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set intermediate_relation = make_intermediate_relation(target_relation) -%}
  {%- set backup_relation = make_backup_relation(target_relation, 'table' if existing_relation is none else existing_relation.type) -%}
  {{ drop_relation_if_exists(load_cached_relation(intermediate_relation)) }}
  {{ drop_relation_if_exists(load_cached_relation(backup_relation)) }}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  {#- duckcluster commits definitions and runs on its own connection: no dbt transaction here -#}
  {% do run_query(dbt_duckcluster.cluster_create_sql(name, '(\n' ~ sql ~ '\n)', options)) %}
  {%- set run_id = dbt_duckcluster.execute_definition(name, mode=mode) -%}
  {%- if label -%}
    {% do dbt_duckcluster.label_run(name, run_id, label if label is mapping else {}) %}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% call statement('main') -%}
    {{ create_table_as(False, intermediate_relation, dbt_duckcluster.cluster_run_select(sql, name, run_id, id_column, fields)) }}
  {%- endcall %}
  {% if existing_relation is not none %}
    {{ adapter.rename_relation(existing_relation, backup_relation) }}
  {% endif %}
  {{ adapter.rename_relation(intermediate_relation, target_relation) }}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ drop_relation_if_exists(backup_relation) }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
