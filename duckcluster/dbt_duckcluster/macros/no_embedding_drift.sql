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
  p_value and details.
-#}
{% test no_embedding_drift(model, column_name=none, baseline=none, method=none, options={}) %}
  {%- if baseline is none %}
  select * from {{ model }} where {{ adapter.quote(column_name or 'drift_detected') }}
  {%- else %}
  select * from (
    {{ dbt_duckcluster.embedding_drift(baseline, model, embedding=column_name or 'embedding',
                                       method=method, options=options) }}
  ) as __dc_drift
  where drift_detected
  {%- endif %}
{% endtest %}
