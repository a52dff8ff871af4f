-- The documents as a Parquet file, the dbt-duckdb way (materialized 'external'): a
-- stand-in for the Parquet lake your embeddings already live in. lake_topics reads it
-- back through the source 'lake' declared in schema.yml.
{{ config(materialized='external', location='docs_lake.parquet') }}
select * from {{ ref('docs') }}
