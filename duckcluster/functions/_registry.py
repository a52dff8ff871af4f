"""What every SQL-function area shares: per-connection state, the UDF registrar, error
wrapping and progress reporting (with counts, ETA and cancellation). Areas import this
module only; nothing here imports an area.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import numpy as np

from .._errors import SpecError
from ..catalog import runs as catalog
from ..core import progress as core_progress

_ASSIGN_CACHE_SECONDS = 1.0
_ACTIVE_PIDS = {os.getpid()}

# -- progress ---------------------------------------------------------------------------
#
# Long calls (cluster_execute, embedding_drift, cluster_label, cluster_assign_parquet...)
# report stage messages, ``_report("topics: preprocessing")``, and counted steps from the
# numeric cores, ``core.progress.step("UMAP layout epochs", 120, 200)``. Both go to one
# sink, ``sink(message, done, total)``: the CLI's and the shell's display, a notebook's,
# or, in a plain script, a stderr display while the call runs.

#: ``sink(message, done, total)``; done/total are None for a stage message.
Sink = Callable[[str, "int | None", "int | None"], None]
#: Environment variable: 1 shows progress on stderr in plain scripts even when stderr is
#: not a terminal, 0 never shows it; unset: shown when stderr is a terminal.
PROGRESS_ENV = "DUCKCLUSTER_PROGRESS"

_progress: Sink | None = None
_default_display: Callable[[], Any] | None = None
_cancel = threading.Event()
_scope = threading.local()


def set_progress(fn: Sink | Callable[[str], None] | None) -> None:
    """Route progress of long calls to ``fn(message, done, total)`` (the CLI's display).

    A one-argument ``fn(message)`` gets stage messages and counted steps as text.
    """
    global _progress
    _progress = fn if fn is None or _takes_counts(fn) else _as_text(fn)


def set_default_display(factory: Callable[[], Any] | None) -> None:
    """``factory()`` -> a context manager yielding a sink: the display plain scripts get
    while a long call runs, when no sink is set (see :data:`PROGRESS_ENV`)."""
    global _default_display
    _default_display = factory


def request_cancel() -> None:
    """Stop the running foreground call at its next progress report (the shell's Ctrl-C):
    it raises RunCancelledError, and a run is recorded 'cancelled'."""
    _cancel.set()


def clear_cancel() -> None:
    _cancel.clear()


def cancel_requested() -> bool:
    """True after :func:`request_cancel` (Ctrl-C) until :func:`clear_cancel`."""
    return _cancel.is_set()


def _report(msg: str, done: int | None = None, total: int | None = None) -> None:
    # Only before a run commits: its last message is '<name>: done', which must not undo it.
    if _cancel.is_set() and not msg.endswith(": done"):
        from .._errors import INTERRUPTED, RunCancelledError

        raise RunCancelledError(INTERRUPTED)
    sink = _progress or getattr(_scope, "sink", None)
    if sink is not None:
        sink(msg, done, total)


def _auto_display() -> bool:
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def long_call() -> Iterator[None]:
    """Around the body of every wrapped SQL function: the cores' counted steps reach the
    sink, and with no sink set (a plain script) a default display starts at the call's
    first report and ends with the call."""
    depth = getattr(_scope, "depth", 0)
    _scope.depth = depth + 1
    lazy = None
    if depth == 0 and _progress is None and _default_display is not None and _auto_display():
        lazy = _scope.sink = _LazyDisplay(_default_display)
    try:
        with core_progress.reporting(_report):
            yield
    finally:
        _scope.depth = depth
        if lazy is not None:
            _scope.sink = None
            lazy.close()


class _LazyDisplay:
    """A sink that opens the default display at its first message."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._cm: Any = None
        self._sink: Sink | None = None

    def __call__(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        if self._cm is None:
            self._cm = self._factory()
            self._sink = self._cm.__enter__()
        self._sink(msg, done, total)

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)


def _takes_counts(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind("m", None, None)
        return True
    except (TypeError, ValueError):
        return False


def _as_text(fn: Callable[[str], None]) -> Sink:
    def sink(msg: str, done: int | None = None, total: int | None = None) -> None:
        fn(msg if done is None else f"{msg} {done:,}" + (f"/{total:,}" if total else ""))
    return sink


_COUNT = re.compile(r"(\d[\d,]*) of (\d[\d,]*)")


class ProgressState:
    """What a display shows: the stage, the counted step under it, % done and ETA.

    Counts come from ``step`` calls, or from a stage message that says ``N of M``
    (``"topics: assigning: 300,000 of 1,000,000 rows"``). A new stage message clears a
    finished step and keeps one still under way (an outer count such as drift methods).
    The ETA is the step's own rate since its first report.

    >>> p = ProgressState(clock=iter([0.0, 0.0, 2.0, 4.0]).__next__)
    >>> p.update("topics: preprocessing")
    >>> p.update("UMAP layout epochs", 50, 200)
    >>> p.update("UMAP layout epochs", 100, 200)
    >>> p.text(), p.fraction, p.eta
    ('topics: preprocessing · UMAP layout epochs 100/200', 0.5, 4.0)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.t0 = clock()
        self.stage = ""
        self.what: str | None = None  # the counted step; None for a stage with its own count
        self.done: int | None = None
        self.total: int | None = None
        self.eta: float | None = None
        self._key: str | None = None
        self._key_t0 = self.t0
        self._key_done0 = 0

    def update(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        now = self._clock()
        if done is None:
            m = _COUNT.search(msg)
            if m is None:
                if self.done is None or not self.total or self.done >= self.total \
                        or self.what is None:
                    self._clear()
                self.stage = msg
                return
            self.stage, self.what = msg, None
            key = msg[: m.start()]
            done, total = int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
        else:
            key = self.what = msg
        if key != self._key or self.done is None or done < self.done:
            self._key, self._key_t0, self._key_done0 = key, now, done
        self.done, self.total = done, total
        counted, took = done - self._key_done0, now - self._key_t0
        self.eta = (took / counted * (total - done)) if total and counted > 0 and took > 0 \
            else None

    def _clear(self) -> None:
        self.what = self.done = self.total = self.eta = self._key = None

    @property
    def fraction(self) -> float | None:
        return None if not self.total or self.done is None else min(1.0, self.done / self.total)

    def elapsed(self) -> float:
        return self._clock() - self.t0

    def text(self) -> str:
        if self.what is None:
            return self.stage
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        return " · ".join(x for x in (self.stage, f"{self.what} {count}") if x)


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
        self.cache: dict[str, tuple] = {}  # name -> (generation, time, *reference)
        self.part_cache: dict[tuple[str, str, int], tuple[str | None, dict | None]] = {}
        self.generation = 0
        self.taxonomy_cache: dict[str, tuple[int, float, Any]] = {}
        self.taxonomy_generation = 0
        self.ops_runner: Any = None
        self.nearest_cache: dict[str, tuple[np.ndarray, Any, np.ndarray]] = {}

    def cursor(self) -> duckdb.DuckDBPyConnection:
        con = self.con_ref()
        if con is None:
            raise RuntimeError("the duckcluster connection was closed")
        return con.cursor()

    def centroids(self, name: str) -> tuple[str, np.ndarray, np.ndarray]:
        """(run_id, cluster_ids, C) of the latest successful full run, cached ~1 s."""
        return self.reference(name)[:3]

    def reference(self, name: str) -> tuple[str, np.ndarray, np.ndarray, float]:
        """(run_id, cluster_ids, C, threshold) of the latest successful full run, cached
        ~1 s; ``threshold``: the run's own assignment threshold (its ``assignment_threshold``,
        see :func:`duckcluster.catalog.runs.own_threshold`), 0.5 for
        runs stored before it was."""
        now = time.monotonic()
        hit = self.cache.get(name)
        gen = (self.generation, catalog.epoch())  # a definition deleted anywhere in the process
        if hit and hit[0] == gen and now - hit[1] < _ASSIGN_CACHE_SECONDS:
            return hit[2:]
        with self.cursor() as cur:
            run_id = catalog.latest_run(cur, name, mode="full")
            if hit and hit[2] == run_id:
                self.cache[name] = (gen, now, *hit[2:])
                return hit[2:]
            ref = catalog.centroid_matrix(cur, run_id)
            own = catalog.own_threshold(cur, run_id)
        ids_arr = ref.cluster_ids
        # a run that found no clusters: every row is noise
        C = ref.C if len(ids_arr) else np.zeros((0, 0), dtype=np.float32)
        self.cache[name] = (gen, now, run_id, ids_arr, C, own)
        return run_id, ids_arr, C, own

    def nearest(self, name: str, C: np.ndarray, ids: np.ndarray) -> tuple[Any, np.ndarray]:
        """(:class:`~duckcluster.core.assign.Nearest` of ``C``, ``ids`` as int32) for the
        assign UDF, made once per centroid matrix :meth:`reference` returns."""
        hit = self.nearest_cache.get(name)
        if hit is None or hit[0] is not C:
            from ..core.assign import Nearest

            hit = self.nearest_cache[name] = (C, Nearest(C), ids.astype(np.int32))
        return hit[1], hit[2]

    def partitioning(self, name: str, run_id: str) -> tuple[str | None, list | None]:
        """(partition_by, the partition of each centroid of :meth:`centroids`) of a run;
        (None, None) for a definition without partition_by. Cached per run."""
        key = (name, run_id, catalog.epoch())
        hit = self.part_cache.get(key)
        if hit is None:
            with self.cursor() as cur:
                by = catalog.get_definition(cur, name).partition_by
                parts = catalog.cluster_partitions(cur, run_id) if by is not None else None
            if len(self.part_cache) > 256:
                self.part_cache.clear()
            hit = self.part_cache[key] = (by, parts)
        by, parts = hit
        if by is None:
            return None, None
        ids = self.centroids(name)[1]
        return by, [parts.get(int(c)) for c in ids]

    def partition_centroids(self, name: str, value: str | None
                            ) -> tuple[str, np.ndarray, np.ndarray]:
        """(run_id, cluster_ids, C) of the latest full run's clusters of one partition
        (none for a partition the run does not have)."""
        run_id, ids_arr, C = self.centroids(name)
        by, parts = self.partitioning(name, run_id)
        if by is None:
            raise SpecError(f"assign_cluster: cluster {name!r} has no partition_by, so it takes "
                            "no partition; drop partition := from the call.")
        mine = np.array([p == value for p in parts], dtype=bool)
        if not mine.any():
            return run_id, ids_arr[:0], np.zeros((0, 0), dtype=np.float32)
        return run_id, ids_arr[mine], C[mine]


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

    A function made by :func:`_wrap` is registered as ``<name>__<token>_udf`` behind a
    TEMP macro ``<name>__<token>(...)`` that raises its duckcluster errors with SQL's
    ``error()``, so they read ``Invalid Input Error: SpecError: <message>`` in every
    client instead of DuckDB's "Python exception occurred while executing the UDF"
    wrapping (which DuckDB adds to anything a Python UDF raises, its own exception
    types included): the UDF returns NULL and leaves the message for
    ``_dc_error__<token>()``, which the macro calls only for NULL results.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.suffix = f"__{next(_TOKENS)}"
        self.names: list[str] = []
        self.udfs: list[str] = []  # registered Python UDF names (with suffix)
        self.macros: list[str] = []  # TEMP macros standing in for a wrapped UDF
        self.errors = _PendingErrors()
        self._macro_sql: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def create_function(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any):
        self.names.append(name)
        self._pattern = None
        params = list(args[0] if args else kwargs.get("parameters") or [])
        if not getattr(fn, "_dc_wrapped", False):
            self.udfs.append(name + self.suffix)
            return self.con.create_function(name + self.suffix, fn, *args, **kwargs)
        if not self.macros:
            self.udfs.append("_dc_error" + self.suffix)
            self.con.create_function("_dc_error" + self.suffix, self.errors.take, [], "VARCHAR",
                                     side_effects=True, null_handling="special")
        udf = name + self.suffix + "_udf"
        arrow = str(kwargs.get("type", "")).lower().endswith("arrow")
        skip_nulls = str(kwargs.get("null_handling", "default")).lower().endswith("default")
        kwargs["null_handling"] = "special"
        self.udfs.append(udf)
        self.con.create_function(udf, self.errors.catching(fn, arrow, skip_nulls,
                                                           _arrow_type(args, kwargs),
                                                           getattr(fn, "_dc_reports", True)),
                                 *args, **kwargs)
        names = ", ".join(f"a{i}" for i in range(len(params)))
        self.macros.append(name + self.suffix)
        self._macro_sql.append(f"CREATE OR REPLACE TEMP MACRO {name}{self.suffix}({names}) AS "
                               f"coalesce({udf}({names}), error(_dc_error{self.suffix}()));")
        return self.con

    def create_macros(self) -> None:
        """Create the macros in front of the wrapped UDFs registered so far (one statement)."""
        if self._macro_sql:
            self.con.execute("\n".join(self._macro_sql))
            self._macro_sql.clear()

    def rewrite(self, sql: str) -> str:
        """Point calls of the private UDFs in ``sql`` at this connection's copies."""
        if self._pattern is None:
            alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
            self._pattern = re.compile(rf"\b({alternatives})\b(?=\s*\()")
        return self._pattern.sub(lambda m: m.group(1) + self.suffix, sql)

    def remove(self) -> None:
        """Drop this connection's UDFs and their macros (the connection may be closed)."""
        for macro in self.macros:
            try:
                self.con.execute(f"DROP MACRO IF EXISTS temp.{macro}")
            except duckdb.Error:
                pass
        for udf in self.udfs:
            try:
                self.con.remove_function(udf)
            except duckdb.Error:  # already gone with its connection
                pass

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.con, attr)


def _arrow_type(args: tuple, kwargs: dict) -> Any:
    """The Arrow type of an arrow UDF's return type (for an all-NULL result on error)."""
    if not str(kwargs.get("type", "")).lower().endswith("arrow"):
        return None
    ret = args[1] if len(args) > 1 else kwargs.get("return_type")
    return _ARROW_TYPES.get(str(ret)) or _ARROW_TYPES.setdefault(
        str(ret), duckdb.sql(f"SELECT NULL::{ret} AS v").to_arrow_table().schema.field(0).type)


_ARROW_TYPES: dict[str, Any] = {}

#: Seconds a pending error waits for the ``error()`` call of its macro. That call comes
#: right after the failed vector (microseconds later); the limit only keeps the message
#: of a statement aborted in between from surfacing in a later one.
_PENDING_SECONDS = 30.0


class _PendingErrors:
    """The duckcluster error a wrapped UDF left for its macro's ``error()``, per thread.

    Once a call failed, later calls on the same thread return NULL at once until the
    message is taken, so a statement stops doing work at its first error, as when the
    UDF raised.
    """

    def __init__(self) -> None:
        self._by_thread: dict[int, tuple[float, str]] = {}

    def take(self) -> str | None:
        hit = self._by_thread.pop(threading.get_ident(), None)
        return hit[1] if hit else None

    def _pending(self) -> bool:
        hit = self._by_thread.get(threading.get_ident())
        if hit and time.monotonic() - hit[0] < _PENDING_SECONDS:
            return True
        if hit:
            self._by_thread.pop(threading.get_ident(), None)
        return False

    def catching(self, fn: Callable[..., Any], arrow: bool, skip_nulls: bool,
                 arrow_type: Any, reports: bool = True) -> Callable[..., Any]:
        """``fn`` returning NULL (and leaving its message) on a duckcluster error;
        ``reports``: run it inside :func:`long_call` (progress); False for per-vector UDFs
        that report nothing (assign_cluster: one call per 2,048 rows)."""
        from .._errors import DuckclusterError
        from .._secrets import scrub

        def null_result(a: tuple) -> Any:
            if not arrow:
                return None
            import pyarrow as pa

            return pa.nulls(len(a[0]) if a else 1, type=arrow_type)

        @functools.wraps(fn)
        def udf(*a):
            if self._pending():
                return null_result(a)
            if skip_nulls and not arrow and any(v is None for v in a):
                return None  # what DuckDB does for null_handling='default'
            try:
                if not reports:
                    return fn(*a)
                with long_call():
                    return fn(*a)
            except Exception as exc:
                text = str(exc)
                clean = scrub(text)  # no known secret in any message
                if isinstance(exc, duckdb.Error):
                    if clean == text:
                        raise
                    raise type(exc)(clean) from None
                if not isinstance(exc, DuckclusterError) and clean == text:
                    raise  # a bug: DuckDB reports it with its Python class
                self._by_thread[threading.get_ident()] = (time.monotonic(),
                                                          f"{type(exc).__name__}: {clean}")
                return null_result(a)
        return udf


def _wrap(fn: Callable[..., Any], reports: bool = True) -> Callable[..., Any]:
    """Mark ``fn`` as a UDF whose duckcluster errors reach SQL as clean one-line errors.

    The registrar (:class:`_Registrar`) puts it behind a macro that raises them with
    ``error('ClassName: message')``. Called outside a registrar, errors propagate
    unchanged. ``reports=False``: a per-vector UDF that reports no progress, called
    without :func:`long_call` around it (two context managers and an environment
    lookup per 2,048 rows).
    """
    @functools.wraps(fn)
    def inner(*a):
        return fn(*a)
    inner._dc_wrapped = True  # type: ignore[attr-defined]
    inner._dc_reports = reports  # type: ignore[attr-defined]
    return inner
