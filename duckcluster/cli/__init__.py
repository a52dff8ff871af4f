"""The ``duckcluster`` command line: a thin adapter over :func:`duckcluster.connect`.

    duckcluster sql DB -c "SELECT ..."      run statements, print result tables
    duckcluster sql DB -f file.sql
    duckcluster shell [DB]                  interactive SQL shell
    duckcluster demo [--digits]             topics in real text, new rows, what drifted
    duckcluster scheduler DB                fire cron / interval / event triggers until stopped
    duckcluster exporter DB --port 9464     Prometheus metrics (quality, drift, runs)
    duckcluster runs DB [NAME]              readable run history
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from contextlib import contextmanager

import click
import duckdb
import pyarrow as pa
from rich.console import Console

from .. import connect
from .. import functions as _sql
from .._errors import DuckclusterError, user_message
from ..functions._registry import long_call
from . import hints as _hints
from .display import (MODE_NAMES, Result, Settings, choices_summary, is_interrupt,
                      print_result)

# Piped output gets a wide console so tables are never folded; a terminal gets its width.
console = Console() if sys.stdout.isatty() else Console(width=1000)
err_console = Console(stderr=True)


@contextmanager
def progress_display(enabled: bool = True):
    """Show the progress of long statements (cluster_execute...) on stderr while they run:
    stage, counted step, bar, % and ETA (:class:`~duckcluster.cli.progress.ProgressDisplay`)."""
    if not enabled:
        yield
        return
    from .progress import ProgressDisplay

    with ProgressDisplay(err_console) as report:
        _sql.set_progress(report)
        try:
            with long_call():  # counted steps of Python-side work (drift_report) too
                yield
        finally:
            _sql.set_progress(None)


def print_error(exc: BaseException, err: Console | None = None) -> None:
    """An error the way the DuckDB CLI prints one; duckcluster's as one line
    ``ClassName: message`` (:func:`~duckcluster._errors.user_message`)."""
    (err or err_console).print(user_message(exc), style="red", markup=False, highlight=False,
                               soft_wrap=True)


def run_script(con: duckdb.DuckDBPyConnection, text: str, progress: bool = True,
               settings: Settings | None = None, timer: bool = False,
               out: Console | None = None, err: Console | None = None) -> bool:
    """Run every statement of a script, printing results in ``settings.mode``; False after
    the first error (or Ctrl-C, printed "Interrupted")."""
    from .._syntax import rewrite, split_statements

    out, err = out or console, err or err_console
    try:
        statements = split_statements(rewrite(text))
    except DuckclusterError as exc:
        print_error(exc, err)
        return False
    for stmt in statements:
        if not stmt.strip().rstrip(";").strip():
            continue
        clock, cpu = time.perf_counter(), os.times()
        try:
            with progress_display(progress):
                rel = _hints.sql(con, stmt)  # a misspelled macro argument is named
                # relations run lazily: fetch under the display, once
                result = None if rel is None else Result.of(rel)
            if result is not None and not _is_status_only(con, stmt, result.columns):
                print_result(out, result, settings)
        except BaseException as exc:  # noqa: BLE001 - sorted below; anything else re-raised
            if is_interrupt(exc):
                err.print("Interrupted", style="yellow", markup=False, highlight=False)
                return False
            if isinstance(exc, (duckdb.Error, DuckclusterError)):
                print_error(exc, err)
                return False
            raise
        finally:
            if timer:
                now = os.times()
                out.file.write(f"Run Time (s): real {time.perf_counter() - clock:.3f} "
                               f"user {now.user - cpu.user:f} sys {now.system - cpu.system:f}\n")
                out.file.flush()
    return True


def _is_status_only(con: duckdb.DuckDBPyConnection, stmt: str, columns: list[str]) -> bool:
    """DDL/DML without RETURNING yields a lone Count/Success column the DuckDB CLI does not print."""
    if columns not in (["Count"], ["Success"]):
        return False
    try:
        kind = con.extract_statements(stmt)[0].type
    except duckdb.Error:
        return False
    return kind.name not in ("SELECT", "EXPLAIN", "PRAGMA", "CALL", "EXECUTE", "RELATION")


def _mode_flags(fn):
    """``--csv``, ``--json``... (also spelled ``-csv``, as the DuckDB CLI does) and ``--mode``."""
    for mode in reversed(MODE_NAMES):
        fn = click.option(f"--{mode}", f"-{mode}", "mode", flag_value=mode,
                          help=f"Output mode {mode}." if mode != "duckbox" else
                          "Output mode duckbox (the default).")(fn)
    return click.option("--mode", "mode", type=click.Choice(MODE_NAMES), default=None,
                        help="Output mode, as the DuckDB CLI's .mode.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="duckcluster")
def main() -> None:
    """GROUP BY over embedding space, from DuckDB SQL."""
    atexit.register(_fast_exit)


def _fast_exit() -> None:
    """The console script owns its process: let its exit skip the interpreter's full
    garbage collections. After the atexit handlers CPython clears every module and
    collects over every object still alive; with numba, llvmlite and scipy loaded (a
    command that ran a UMAP step) that took 1.5-1.9 s of a ``cluster_embeddings``
    process on the busy 2-core machine, 0.25-0.35 s with the objects frozen
    (bench/first_result.py). Frozen objects are still freed by reference counting as
    the modules are cleared; only their cycles are left to the operating system. Not
    done for ``import duckcluster``: a host program's own objects in cycles (a buffered
    file) must still be finalized at its exit."""
    import gc

    sys.stdout.flush()
    gc.freeze()


@main.command("sql")
@click.argument("database", required=False, default=None)
@click.option("-c", "--command", "commands", multiple=True, help="SQL to run (repeatable).")
@click.option("-f", "--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A .sql file to run (repeatable).")
@click.option("--artifacts-dir", default=None, help="Where run Parquet files go.")
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress display.")
@click.option("--timer", is_flag=True, help="Print each statement's run time (.timer on).")
@_mode_flags
def sql_cmd(database, commands, files, artifacts_dir, read_only, no_progress, timer,
            mode) -> None:
    """Run SQL (with every duckcluster function) against DATABASE and print the results.

    For pipes: --csv, --json, --jsonlines, --markdown, --line... print rows as the DuckDB
    CLI's modes do; errors go to stderr, and the progress line only to a terminal.
    """
    if not commands and not files:
        raise click.UsageError("give -c \"SQL\" or -f FILE")
    con = _open(database, artifacts_dir, read_only)
    settings = Settings(mode=mode or "duckbox")
    progress = not no_progress and err_console.is_terminal
    from .shell import cancel_background, interrupt_on_sigint

    try:
        scripts = list(commands) + [open(f, encoding="utf-8").read() for f in files]
        for text in scripts:
            with interrupt_on_sigint(con, True) as seen:  # Ctrl-C: 'Interrupted', exit 130
                ok = run_script(con, text, progress=progress, settings=settings, timer=timer)
            if seen:  # runs it started in the background are cancelled, not waited for
                cancel_background("duckcluster sql was interrupted (Ctrl-C)")
                sys.exit(130)
            if not ok:
                sys.exit(1)
    finally:
        con.close()


@main.command("shell")
@click.argument("database", required=False, default=None)
@click.option("--artifacts-dir", default=None, help="Where run Parquet files go.")
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
def shell_cmd(database, artifacts_dir, read_only) -> None:
    """Interactive SQL shell with duckcluster functions and CLUSTER BY EMBEDDING syntax."""
    from .shell import run_shell

    con = _open(database, artifacts_dir, read_only)
    try:
        status = run_shell(con, database or ":memory:", run_script)
    finally:
        con.close()
    sys.exit(status)  # piped input: 1 if a statement failed


@main.command("demo")
@click.option("--db", "db_path", default="duckcluster_demo.duckdb", show_default=True,
              help="Demo database file to (re)create.")
@click.option("--artifacts-dir", default=None, help="Where run Parquet files go.")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="HTML drift report to write (default: next to the database, "
                   "<db>_drift.html).")
@click.option("--digits", is_flag=True,
              help="The older demo: scikit-learn's handwritten digits, clustered two ways.")
def demo_cmd(db_path, artifacts_dir, report_path, digits) -> None:
    """Cluster real text (Python docstrings) into named topics, assign new rows, and run a
    drift check that says what is new; --digits: handwritten digits instead."""
    from .demo import run_demo

    for option, path in (("--db", db_path), ("--report", report_path)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise click.BadParameter(f"the folder {folder} does not exist; create it or give "
                                     "a path in an existing folder", param_hint=option)
    try:
        run_demo(db_path, artifacts_dir, console, progress_display, digits=digits,
                 report_path=report_path)
    except (duckdb.Error, DuckclusterError, OSError) as exc:
        print_error(exc)
        sys.exit(1)


# -- report: HTML reports (drift) ---------------------------------------------------

@main.group("report")
def report_group() -> None:
    """Write self-contained HTML reports."""


@report_group.command("drift")
@click.argument("database")
@click.option("--baseline", required=True,
              help="Table, view, Parquet path, '(SELECT ...)' or 'run:<run_id>'.")
@click.option("--current", required=True, help="Same kinds as --baseline.")
@click.option("--embedding", "embedding", multiple=True, default=("embedding",),
              show_default=True, help="Embedding column (repeat for several).")
@click.option("--method", "methods", multiple=True,
              help="Drift method (repeatable); default every method.")
@click.option("--reference", default=None,
              help="Cluster definition whose centroids the 'cluster' method uses.")
@click.option("--text", default=None,
              help="Column or SQL expression whose keywords name the regions that moved.")
@click.option("--id", "id_col", default=None, help="Id column of the example rows.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--alpha", default=0.05, show_default=True, type=float)
@click.option("--out", default="drift.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
def report_drift_cmd(database, baseline, current, embedding, methods, reference, text, id_col,
                     seed, alpha, out) -> None:
    """Compare two sets of embeddings in DATABASE and write an HTML drift report."""
    from ..drift.report import drift_report

    _require_file(database, "duckcluster report drift")
    con = _open(database, None, True)
    try:
        with progress_display(True):
            drift_report(con, baseline, current, out, embedding=list(embedding),
                         methods=list(methods) or "all", reference=reference, seed=seed,
                         alpha=alpha, text=text, id=id_col)
    except (duckdb.Error, DuckclusterError) as exc:
        print_error(exc)
        sys.exit(1)
    finally:
        con.close()
    console.print(f"wrote {out}")


# -- operations: scheduler, exporter, run history -----------------------------------

@main.command("scheduler")
@click.argument("database")
@click.option("--poll", default=30.0, show_default=True, type=float,
              help="Seconds between evaluations of the triggers (due cron and interval "
                   "triggers wake it earlier).")
@click.option("--grace", default=60.0, show_default=True, type=float,
              help="On SIGTERM/SIGINT, seconds to let running runs finish before cancelling.")
@click.option("--once", is_flag=True,
              help="Evaluate the triggers once, run what fired, deliver webhooks, exit.")
@click.option("--metrics-port", type=int, default=None,
              help="Also serve Prometheus metrics on this port (a snapshot per tick).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option("--artifacts-dir", default=None, help="Where run Parquet files go.")
def scheduler_cmd(database, poll, grace, once, metrics_port, metrics_host,
                  artifacts_dir) -> None:
    """Run the triggers of DATABASE until stopped (SIGTERM/SIGINT).

    The file is opened only while a tick works, so other writers can use it in
    between; see `SELECT * FROM cluster_trigger_history()` for what fired.
    """
    from ..ops.scheduler import Scheduler

    _require_file(database, "duckcluster scheduler")
    shared = None
    if metrics_port is not None:
        from ..ops.exporter import SharedSource, serve

        shared = SharedSource()
        serve(shared, metrics_port, metrics_host)
    sched = Scheduler(database, connect, poll=poll, grace=grace, artifacts_dir=artifacts_dir,
                      on_snapshot=shared.put if shared is not None else None)
    if once:
        report = sched.tick()
        sys.exit(2 if report.busy else 0)
    sys.exit(sched.run_forever())


@main.command("exporter")
@click.argument("database")
@click.option("--port", default=9464, show_default=True, type=int)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--min-interval", default=5.0, show_default=True, type=float,
              help="Seconds a snapshot is reused before the file is read again.")
@click.option("--once", is_flag=True, help="Print one scrape to stdout and exit.")
def exporter_cmd(database, port, host, min_interval, once) -> None:
    """Serve Prometheus metrics of DATABASE (read-only, one short open per refresh)."""
    import signal
    import threading

    from ..ops.exporter import ReadOnlySource, render, serve

    _require_file(database, "duckcluster exporter")
    source = ReadOnlySource(database, min_interval)
    if once:
        click.echo(render(source), nl=False)
        sys.exit(0 if source.ok else 1)
    server = serve(source, port, host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print(f"duckcluster exporter: http://{host}:{port}/metrics for {database}")
    stop.wait()
    server.shutdown()


@main.command("runs")
@click.argument("database")
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True, type=int, help="Latest runs shown.")
def runs_cmd(database, name, limit) -> None:
    """Readable run history of DATABASE (one definition, or all), newest last."""
    _require_file(database, "duckcluster runs")
    con = _open(database, None, True)
    try:
        where = "WHERE r.name = ?" if name else ""
        # a read-only file written before runs had a choices column
        chose = "r.choices" if con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'duckcluster' AND table_name = 'runs' "
            "AND column_name = 'choices'").fetchall()[0][0] else "NULL::JSON"
        rel = con.sql(f"""
            SELECT * FROM (
                SELECT r.run_seq, r.run_id, r.name, r.mode, r.status,
                       strftime(coalesce(r.submitted_at, r.started_at), '%Y-%m-%d %H:%M:%S')
                           AS submitted,
                       round(r.duration_s, 2) AS seconds, r.n_members AS members,
                       r.n_clusters AS clusters, round(r.noise_ratio, 3) AS noise,
                       round(r.silhouette_score, 3) AS silhouette, {chose} AS chose,
                       coalesce(f.kind || ' trigger', 'manual') AS started_by,
                       CASE WHEN r.status IN ('failed', 'cancelled', 'abandoned')
                            THEN split_part(r.error, chr(10), 1)
                            WHEN r.status IN ('queued', 'running') THEN r.progress
                            ELSE '' END AS note
                FROM duckcluster.runs r
                LEFT JOIN duckcluster.trigger_firings f ON f.run_id = r.run_id
                {where} ORDER BY r.run_seq DESC LIMIT {int(limit)})
            ORDER BY run_seq""", params=[name] if name else None)
        cols, types = rel.columns, [str(t) for t in rel.types]
        tbl = rel.to_arrow_table()
        if tbl.num_rows == 0:
            console.print(f"no runs{' of ' + repr(name) if name else ''} yet")
            return
        at = cols.index("chose")  # what 'auto' chose, in one line
        tbl = tbl.set_column(at, "chose", pa.array(
            [choices_summary(v) for v in tbl.column("chose").to_pylist()], pa.string()))
        types[at] = "VARCHAR"
        print_result(console, Result(cols[1:], types[1:], tbl.drop_columns(["run_seq"])))
    except (duckdb.Error, DuckclusterError) as exc:
        print_error(exc)
        sys.exit(1)
    finally:
        con.close()


@main.command("dbt-package")
@click.option("--into", "project", default=None, type=click.Path(file_okay=False),
              help="Copy the package into this dbt project (as PROJECT/dbt_duckcluster, "
                   "replacing an older copy) and print the line for its packages.yml.")
def dbt_package_cmd(project: str | None) -> None:
    """Print the folder of the dbt package shipped with duckcluster (dbt_duckcluster).

    A project that keeps a copy of it works wherever it is copied, with no environment
    variable (the example project does this):

    \b
      duckcluster dbt-package --into my_project
      # my_project/packages.yml:
      packages:
        - local: dbt_duckcluster
    """
    import shutil
    from importlib import resources

    source = resources.files("duckcluster").joinpath("dbt_duckcluster")
    if project is None:
        click.echo(str(source))
        return
    if not os.path.isfile(os.path.join(project, "dbt_project.yml")):
        raise click.UsageError(f"--into {project}: no dbt_project.yml there; give the folder "
                               "of a dbt project.")
    target = os.path.join(project, "dbt_duckcluster")
    with resources.as_file(source) as folder:
        if os.path.isdir(target):
            shutil.rmtree(target)
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
    click.echo(f"copied to {target}; in {os.path.join(project, 'packages.yml')}:\n"
               "packages:\n  - local: dbt_duckcluster")


@main.command("sql-path")
@click.option("--catalog", is_flag=True,
              help="The catalog DDL (sql/catalog.sql) instead: for a file duckcluster never wrote.")
def sql_path_cmd(catalog: bool) -> None:
    """Print the path of the installed read-side SQL file (sql/duckcluster.sql), for the
    stock DuckDB CLI or a BI tool's initial SQL, with no checkout:

    \b
      duckdb -readonly analytics.duckdb -c ".read $(duckcluster sql-path)" \\
             -c "SELECT * FROM cluster_quality('topics')"

    Files duckcluster wrote need no .read: they hold the same functions as
    duckcluster.cluster_quality(...) and the views duckcluster.latest_*.
    """
    from importlib import resources

    click.echo(str(resources.files("duckcluster").joinpath(
        "sql", "catalog.sql" if catalog else "duckcluster.sql")))


def _require_file(database, command: str) -> None:
    """scheduler, exporter, report and runs work on an existing file; DuckDB would create
    an empty one for a typo (sql and shell create it, like DuckDB's own CLI)."""
    from ..ops.scheduler import require_database_file

    try:
        require_database_file(database, command)
    except DuckclusterError as exc:
        raise click.ClickException(str(exc)) from None


def _open(database, artifacts_dir, read_only) -> duckdb.DuckDBPyConnection:
    try:
        return connect(database, artifacts_dir=artifacts_dir, read_only=read_only)
    except (DuckclusterError, duckdb.Error) as exc:
        raise click.ClickException(user_message(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
