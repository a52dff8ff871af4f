"""dbt-duckdb plugin: every duckcluster function on dbt's connections.

Add it to a dbt-duckdb profile (``profiles.yml``)::

    my_project:
      target: dev
      outputs:
        dev:
          type: duckdb
          path: analytics.duckdb
          plugins:
            - module: duckcluster.dbt
              # config: {artifacts_dir: cluster_artifacts}   # optional

duckcluster's SQL functions are TEMP macros, which DuckDB keeps per connection,
and dbt runs every model on its own ``cursor()`` of the parent connection: so
the plugin installs on both. Models that call a Python-backed function
(``cluster_embeddings``, ``assign_cluster``, ``cluster_execute``...) must be
materialized as tables; views over them fail in every other client. The dbt
package in ``dbt_duckcluster/`` adds materializations, macros and the
``no_embedding_drift`` test on top of this plugin.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from . import DEFAULT_STORAGE_VERSION, install

__all__ = ["Plugin"]


class Plugin(BasePlugin):
    """Installs duckcluster on dbt-duckdb's connection and on each of its cursors."""

    artifacts_dir: str | None = None

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # Without a `config:` block dbt-duckdb passes the profile's `settings:` here,
        # so keys other than ours are DuckDB settings, not typos.
        self.artifacts_dir = (plugin_config or {}).get("artifacts_dir")

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        # Same default as duckcluster.connect: the file opens in DuckDB 1.4 and later.
        # A `config_options: storage_compatibility_version:` in the profile wins.
        config.setdefault("storage_compatibility_version", DEFAULT_STORAGE_VERSION)

    def configure_connection(self, conn: Any) -> None:
        install(conn, artifacts_dir=self.artifacts_dir)

    def configure_cursor(self, cursor: Any) -> None:
        install(cursor, artifacts_dir=self.artifacts_dir)
