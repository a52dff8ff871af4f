-- Has the embedding distribution moved between January and var('drift_month')?
-- Tested by dbt_duckcluster.no_embedding_drift (drift_detected must be false).
{{ config(materialized='table') }}
{{ dbt_duckcluster.embedding_drift(
     "select doc_id, embedding from " ~ ref('docs') ~ " where published_on < date '2024-02-01'",
     "select doc_id, embedding from " ~ ref('docs') ~ " where strftime(published_on, '%Y-%m') = '" ~ var('drift_month') ~ "'",
     embedding='embedding', method='mmd') }}
