{#- SQL literals for values that come from dbt config and macro arguments.
    Every user value reaches SQL through one of these: strings are quoted with
    '' escaping, mappings and lists of mappings become JSON strings (duckcluster
    accepts JSON wherever it accepts a STRUCT), relations become their quoted
    name as a string. -#}

{% macro sql_literal(value) -%}
  {%- if value is none -%}NULL
  {%- elif value is sameas true -%}true
  {%- elif value is sameas false -%}false
  {%- elif value is number -%}{{ value }}
  {%- elif value is string -%}'{{ value | replace("'", "''") }}'
  {%- elif value is mapping -%}{{ dbt_duckcluster.json_literal(value) }}
  {%- elif value is iterable -%}[{%- for v in value -%}{{ dbt_duckcluster.sql_literal(v) }}{{ ", " if not loop.last }}{%- endfor -%}]
  {%- else -%}'{{ (value | string) | replace("'", "''") }}'
  {%- endif -%}
{%- endmacro %}

{% macro json_literal(value) -%}
  {%- if value is none -%}NULL
  {%- elif value is string -%}{{ dbt_duckcluster.sql_literal(value) }}
  {%- else -%}'{{ tojson(value) | replace("'", "''") }}'
  {%- endif -%}
{%- endmacro %}

{#- A duckcluster source: a relation (ref / source / this) becomes its quoted name, and
    a dbt-duckdb source with an external_location (rendered as a quoted path, or as a
    call like read_parquet(...)) the path or glob itself, or a query over the call;
    SQL text (anything starting with SELECT, WITH, FROM or '(') becomes a query in
    parentheses; any other string (a table name, a Parquet glob) passes as is. -#}
{% macro source_literal(value) -%}
  {%- if value is string -%}
    {%- set s = value | trim -%}
    {%- set head = s[:6] | lower -%}
    {%- if s.startswith('(') -%}{{ dbt_duckcluster.sql_literal(s) }}
    {%- elif head.startswith('select') or head.startswith('with') or head.startswith('from') -%}
      {{- dbt_duckcluster.sql_literal('(\n' ~ s ~ '\n)') -}}
    {%- else -%}{{ dbt_duckcluster.sql_literal(s) }}
    {%- endif -%}
  {%- else -%}
    {%- set r = value | string | trim -%}
    {%- if r.startswith("'") and r.endswith("'") and r | length > 1 -%}
      {{- dbt_duckcluster.sql_literal(r[1:-1] | replace("''", "'")) -}}
    {%- elif '(' in r -%}{{ dbt_duckcluster.sql_literal('(SELECT * FROM ' ~ r ~ ')') }}
    {%- else -%}{{ dbt_duckcluster.sql_literal(r) }}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}

{#- `key := literal, ...` for the keys of a mapping whose value is not none. -#}
{% macro named_args(options, json_keys=[]) -%}
  {%- set parts = [] -%}
  {%- for key, value in options.items() if value is not none -%}
    {%- if key in json_keys -%}
      {%- do parts.append(adapter.quote(key) ~ ' := ' ~ dbt_duckcluster.json_literal(value)) -%}
    {%- else -%}
      {%- do parts.append(adapter.quote(key) ~ ' := ' ~ dbt_duckcluster.sql_literal(value)) -%}
    {%- endif -%}
  {%- endfor -%}
  {{- parts | join(', ') -}}
{%- endmacro %}
