"""What every SQL-function area shares: per-connection state, the UDF registrar, error
wrapping and progress reporting. Areas import this module only; nothing here imports an area.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
import weakref
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np

from ..catalog import runs as catalog

_ASSIGN_CACHE_SECONDS = 1.0
_ACTIVE_PIDS = {os.getpid()}
_progress: Callable[[str], None] | None = None


def set_progress(fn: Callable[[str], None] | None) -> None:
    """Route stage messages of long calls (cluster_execute...) to ``fn`` (the CLI's display)."""
    global _progress
    _progress = fn


def _report(msg: str) -> None:
    if _progress is not None:
        _progress(msg)


class _State:
    """What the UDFs of one connection share: settings, caches and the background runner.

    ``cache``: definition name -> (generation, loaded at, run_id, cluster_ids, C) of its
    latest full run; ``taxonomy_cache``: taxonomy name -> (taxonomy_generation, loaded at,
    Taxonomy); a generation bump (a run committed, a taxonomy changed) invalidates them.
    ``ops_runner``: the background runner, created on first use by ``functions.ops``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: catalog.Settings):
        self.con_ref = weakref.ref(con)
        self.settings = settings
        self.cache: dict[str, tuple[int, float, str, np.ndarray, np.ndarray]] = {}
        self.generation = 0
        self.taxonomy_cache: dict[str, tuple[int, float, Any]] = {}
        self.taxonomy_generation = 0
        self.ops_runner: Any = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        con = self.con_ref()
        if con is None:
            raise RuntimeError("the duckcluster connection was closed")
        return con.cursor()

    def centroids(self, name: str) -> tuple[str, np.ndarray, np.ndarray]:
        """(run_id, cluster_ids, C) of the latest successful full run, cached ~1 s."""
        now = time.monotonic()
        hit = self.cache.get(name)
        gen = (self.generation, catalog.epoch())  # a definition deleted anywhere in the process
        if hit and hit[0] == gen and now - hit[1] < _ASSIGN_CACHE_SECONDS:
            return hit[2], hit[3], hit[4]
        with self.cursor() as cur:
            run_id = catalog.latest_run(cur, name, mode="full")
            if hit and hit[2] == run_id:
                self.cache[name] = (gen, now, *hit[2:])
                return hit[2], hit[3], hit[4]
            ref = catalog.centroid_matrix(cur, run_id)
        ids_arr = ref.cluster_ids
        # a run that found no clusters: every row is noise
        C = ref.C if len(ids_arr) else np.zeros((0, 0), dtype=np.float32)
        self.cache[name] = (gen, now, run_id, ids_arr, C)
        return run_id, ids_arr, C


def _has_udfs(con: duckdb.DuckDBPyConnection) -> bool:
    """True when some connection already installed duckcluster on this database instance."""
    return con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE "
                       "'\\_dc\\_execute\\_\\_%' ESCAPE '\\'").fetchall()[0][0] > 0


_TOKENS = itertools.count(1)
_REGISTERED: "weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, _Registrar]" = \
    weakref.WeakKeyDictionary()


class _Registrar:
    """Creates one connection's private UDFs under names of its own.

    DuckDB 2.0 crashes (segfault) when a Python UDF is called after the connection
    that registered it was closed, and UDF names are shared by every connection of
    a database instance. So each connection or cursor registers its own copies,
    named ``<name>__<token>``, and its TEMP macros (per connection too) are
    rewritten to call them: closing one connection can never break another.
    Everything else is passed through to the connection.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.suffix = f"__{next(_TOKENS)}"
        self.names: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def create_function(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any):
        self.names.append(name)
        self._pattern = None
        return self.con.create_function(name + self.suffix, fn, *args, **kwargs)

    def rewrite(self, sql: str) -> str:
        """Point calls of the private UDFs in ``sql`` at this connection's copies."""
        if self._pattern is None:
            alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
            self._pattern = re.compile(rf"\b({alternatives})\b(?=\s*\()")
        return self._pattern.sub(lambda m: m.group(1) + self.suffix, sql)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.con, attr)


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn duckcluster errors into ValueError('ClassName: message') for clean SQL errors."""
    @functools.wraps(fn)
    def inner(*a):
        try:
            return fn(*a)
        except Exception as exc:
            from .._errors import DuckclusterError
            from .._secrets import scrub
            text = str(exc)
            clean = scrub(text)  # no known secret in any message
            if isinstance(exc, duckdb.Error):
                if clean == text:
                    raise
                raise type(exc)(clean) from None
            if isinstance(exc, DuckclusterError) or clean != text:
                raise ValueError(f"{type(exc).__name__}: {clean}") from None
            raise
    return inner
