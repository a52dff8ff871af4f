{#- The documents of var('drift_month'); schema.yml tests their embeddings for drift
    against January's with dbt_duckcluster.no_embedding_drift. -#}
{{ config(materialized='table') }}
select doc_id, published_on, body, embedding
from {{ ref('docs') }}
where strftime(published_on, '%Y-%m') = '{{ var("drift_month") }}'
