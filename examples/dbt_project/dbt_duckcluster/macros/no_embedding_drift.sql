{#- Generic test: fails when embedding drift is detected.

  On a drift model (rows with a drift_detected column, e.g. built with
  dbt_duckcluster.embedding_drift):

      models:
        - name: topic_drift
          data_tests:
            - dbt_duckcluster.no_embedding_drift

  On an embedding column, against a baseline (drift is computed when the test runs):

      models:
        - name: docs_this_week
          columns:
            - name: embedding
              data_tests:
                - dbt_duckcluster.no_embedding_drift:
                    arguments:
                      baseline: "{{ ref('docs_last_quarter') }}"
                      method: mmd

  The failing rows are the methods that flagged drift, with their statistic,
  p_value and details; each is also logged when the test runs, e.g.
  "no_embedding_drift on topic_drift: mmd detected drift (statistic 0.0231, p-value
  0.002 < threshold 0.05; 20 baseline vs 20 current rows)".
-#}
{% test no_embedding_drift(model, column_name=none, baseline=none, method=none, options={}) %}
  {%- if baseline is none %}
    {%- set flagged -%}
      select * from {{ model }} where {{ adapter.quote(column_name or 'drift_detected') }}
    {%- endset %}
  {%- else %}
    {%- set flagged -%}
      select * from (
        {{ dbt_duckcluster.embedding_drift(baseline, model, embedding=column_name or 'embedding',
                                           method=method, options=options) }}
      ) as __dc_drift
      where drift_detected
    {%- endset %}
  {%- endif %}
  {%- if execute %}
    {#- computed once: kept in a TEMP table the test's query then reads -#}
    {%- set kept = '__dc_drift_' ~ local_md5(invocation_id ~ flagged) -%}
    {%- do run_query('create or replace temp table ' ~ kept ~ ' as ' ~ flagged) -%}
    {%- set rows = run_query('select * from ' ~ kept) -%}
    {%- for row in rows %}
      {%- set cols = row.keys() | list -%}
      {%- set v = {} -%}
      {%- for key in ('statistic', 'p_value', 'threshold') -%}
        {%- set x = row[key] if key in cols else none -%}
        {%- do v.update({key: ('%.4g' | format(x)) if x is number else 'n/a'}) -%}
      {%- endfor -%}
      {{ log("no_embedding_drift on " ~ model ~ ": " ~ (row['method'] if 'method' in cols else 'drift')
             ~ " detected drift (statistic " ~ v['statistic'] ~ ", p-value " ~ v['p_value']
             ~ " < threshold " ~ v['threshold']
             ~ ("; " ~ row['n_baseline'] ~ " baseline vs " ~ row['n_current'] ~ " current rows" if 'n_baseline' in cols else "")
             ~ ")", info=True) }}
    {%- endfor %}
  select * from {{ kept }}
  {%- else %}
  {{ flagged }}
  {%- endif %}
{% endtest %}
