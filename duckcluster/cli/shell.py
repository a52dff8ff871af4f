"""``duckcluster shell``: an interactive SQL shell over one connection.

    D SELECT cluster_id, count(*) FROM docs
    · CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 8)
    · GROUP BY ALL;

Input becomes :class:`Command` objects through :class:`InputSplitter`: SQL up to a
``;`` that ends the text (found with the same sqlglot tokenizer the CLUSTER BY
EMBEDDING rewrite uses, so a ``;`` inside a string or comment ends nothing), and dot
commands on a line of their own between statements. SQL goes to the CLI's
``run_script``, which rewrites the clause, runs each statement under the progress
display and prints result tables and errors; dot commands are the
:data:`DOT_COMMANDS` registry.

On a terminal the prompt is prompt_toolkit's, with history in
``~/.duckcluster_history`` (or ``$DUCKCLUSTER_HISTORY``): Enter runs the input once
it ends in ``;`` (or is a dot command) and otherwise starts a continuation line,
Alt-Enter runs it as it is, Ctrl-C drops the input or interrupts the running
statement, Ctrl-D exits. Piped stdin is read line by line without prompts; every
command runs, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import difflib
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from .._version import __version__

RunScript = Callable[..., bool]

HISTORY_ENV = "DUCKCLUSTER_HISTORY"
HISTORY_FILE = "~/.duckcluster_history"
PROMPT = "D "
CONTINUATION = "· "
CATALOG_SCHEMA = "duckcluster"

_DUCKDB = DuckDB()


# ---------------------------------------------------------------------------
# Splitting input into commands.


@dataclass(frozen=True)
class Command:
    """One unit of input: SQL text (ending in ``;`` unless cut off by EOF) or a dot-command line."""

    text: str
    dot: bool = False


def _tokens(text: str) -> list[Token] | None:
    """The tokens of ``text``; None while a string, quoted name or comment is still open."""
    try:
        return _DUCKDB.tokenize(text)
    except TokenError:
        return None


def is_blank(text: str) -> bool:
    """Whether ``text`` holds only whitespace and closed comments."""
    return not text.strip() or _tokens(text) == []


def is_complete(text: str) -> bool:
    """Whether SQL ``text`` ends with a statement-ending ``;`` (comments may follow it).

    >>> is_complete("SELECT 1; -- done"), is_complete("SELECT ';"), is_complete("SELECT 1")
    (True, False, False)
    """
    tokens = _tokens(text)
    return bool(tokens) and tokens[-1].token_type is TokenType.SEMICOLON


@dataclass
class InputSplitter:
    """Cut a stream of lines into commands, the way the DuckDB CLI reads its input.

    A line starting with ``.`` is a dot command when no statement is pending; other
    lines gather until the SQL ends with ``;``.

    >>> s = InputSplitter()
    >>> s.feed("SELECT 1 +\\n"), s.feed("1;\\n"), s.feed(".tables\\n")
    ([], [Command(text='SELECT 1 +\\n1;\\n', dot=False)], [Command(text='.tables', dot=True)])
    """

    _lines: list[str] = field(default_factory=list)
    # Only a line holding ';' can end a statement: skip tokenizing until one has come.
    _semicolon: bool = False

    @property
    def rest(self) -> str:
        """The pending, incomplete SQL."""
        return "".join(self._lines)

    def feed(self, line: str) -> list[Command]:
        """Take one line (with or without its newline); return the commands it completes."""
        if line.lstrip().startswith(".") and is_blank(self.rest):
            self.clear()
            return [Command(line.strip(), dot=True)]
        self._lines.append(line)
        self._semicolon = self._semicolon or ";" in line
        if self._semicolon and is_complete(self.rest):
            text = self.rest
            self.clear()
            return [Command(text)]
        return []

    def clear(self) -> None:
        self._lines.clear()
        self._semicolon = False


def split_input(text: str) -> tuple[list[Command], str]:
    """The complete commands of ``text`` and the incomplete SQL left after them.

    >>> split_input(".tables\\nSELECT 1;\\nSELECT")
    ([Command(text='.tables', dot=True), Command(text='SELECT 1;\\n', dot=False)], 'SELECT')
    """
    splitter = InputSplitter()
    commands = [c for line in text.splitlines(keepends=True) for c in splitter.feed(line)]
    return commands, splitter.rest


# ---------------------------------------------------------------------------
# Running commands.


@dataclass
class Shell:
    """One connection, the consoles, and what happened so far."""

    con: duckdb.DuckDBPyConnection
    run_script: RunScript
    out: Console
    err: Console
    progress: bool = True
    interruptible: bool = False
    failed: bool = False
    done: bool = False
    _reading: list[str] = field(default_factory=list)

    def error(self, message: str) -> bool:
        self.err.print(f"[red]Error:[/red] {escape(message)}")
        return False

    def run(self, command: Command) -> bool:
        """Run one command; False (and ``failed`` set) if it failed."""
        ok = run_dot(self, command.text) if command.dot else self._sql(command.text)
        self.failed = self.failed or not ok
        return ok

    def _sql(self, text: str) -> bool:
        if is_blank(text):
            return True
        with _interrupt_on_sigint(self.con, self.interruptible):
            return self.run_script(self.con, text, progress=self.progress)

    def run_lines(self, lines: Iterable[str], stop_on_error: bool) -> bool:
        """Run every command in ``lines``, SQL left without ``;`` at the end included."""
        splitter, ok = InputSplitter(), True
        for line in lines:
            for command in splitter.feed(line):
                ok = self.run(command) and ok
                if self.done or (stop_on_error and not ok):
                    return ok
        if not is_blank(splitter.rest):
            ok = self.run(Command(splitter.rest)) and ok
        return ok


@contextmanager
def _interrupt_on_sigint(con: duckdb.DuckDBPyConnection, enabled: bool) -> Iterator[None]:
    """Make Ctrl-C stop the running statement with ``con.interrupt()``.

    duckdb checks for SIGINT only now and then while a query runs (in tests a
    cross join ignored it for more than 30 s), so a thread woken through the signal
    module's wakeup fd interrupts the connection at once; Python's own handler stays.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    receiver, sender = socket.socketpair()
    sender.setblocking(False)

    def watch() -> None:
        while data := receiver.recv(64):
            if signal.SIGINT in data:
                con.interrupt()

    previous = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="duckcluster-sigint", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        sender.close()  # ends watch()
        watcher.join()
        receiver.close()


# ---------------------------------------------------------------------------
# Dot commands: a registry; each handler gets the shell and its arguments.


@dataclass(frozen=True)
class DotCommand:
    usage: str
    help: str
    run: Callable[[Shell, list[str]], bool]
    max_args: int = 0
    min_args: int = 0


def _quit(shell: Shell, args: list[str]) -> bool:
    shell.done = True
    return True


def _help(shell: Shell, args: list[str]) -> bool:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    for cmd in sorted(set(DOT_COMMANDS.values()), key=lambda c: c.usage):
        table.add_row(escape(cmd.usage), cmd.help)
    shell.out.print(table)
    shell.out.print(
        "SQL statements end with ';' and may span lines; they can use every duckcluster "
        "function and CLUSTER BY EMBEDDING(col) USING algorithm(...).\n"
        "Alt-Enter runs unfinished input as it is, Ctrl-C drops the input (or stops a "
        "running statement), Ctrl-D exits.", highlight=False)
    return True


_TABLES_SQL = """
SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
WHERE NOT internal AND table_name LIKE $pattern
UNION ALL
SELECT database_name, schema_name, view_name FROM duckdb_views()
WHERE NOT internal AND view_name LIKE $pattern
ORDER BY ALL
"""


def _tables(shell: Shell, args: list[str]) -> bool:
    pattern = args[0] if args else "%"
    try:
        [(current,)] = shell.con.sql("SELECT current_database()").fetchall()
        rows = shell.con.sql(_TABLES_SQL, params={"pattern": pattern}).fetchall()
    except duckdb.Error as exc:
        return shell.error(str(exc))
    user, catalog = [], []
    for database, schema, name in rows:
        local = database in (current, "temp")
        if local and schema == CATALOG_SCHEMA:
            catalog.append(name)
        elif local and schema == "main":
            user.append(name)
        elif local:
            user.append(f"{schema}.{name}")
        else:
            user.append(f"{database}.{schema}.{name}")
    if not user:
        shell.out.print("[dim](no tables)[/dim]")
    elif shell.out.is_terminal:
        shell.out.print(Columns([escape(n) for n in user], padding=(0, 3)))
    else:  # one per line for scripts
        for name in user:
            shell.out.print(name, markup=False, highlight=False)
    if catalog:
        names = ", ".join(f"{CATALOG_SCHEMA}.{n}" for n in catalog)
        shell.out.print(f"[dim]duckcluster catalog: {names} (.clusters lists the definitions)"
                        "[/dim]", highlight=False)
    return True


def _read(shell: Shell, args: list[str]) -> bool:
    path = os.path.expanduser(args[0])
    real = os.path.realpath(path)
    if real in shell._reading:
        return shell.error(f".read {args[0]}: the file is already being read (it reads itself)")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        return shell.error(f".read {args[0]}: {exc}")
    shell._reading.append(real)
    try:
        return shell.run_lines(text.splitlines(keepends=True), stop_on_error=True)
    finally:
        shell._reading.pop()


def _clusters(shell: Shell, args: list[str]) -> bool:
    return shell._sql("SELECT * FROM cluster_list();")


_QUIT = DotCommand(".quit", "exit the shell (also .exit, Ctrl-D)", _quit)

DOT_COMMANDS: dict[str, DotCommand] = {
    ".clusters": DotCommand(".clusters", "list cluster definitions with their latest run",
                            _clusters),
    ".exit": _QUIT,
    ".help": DotCommand(".help", "show this help", _help),
    ".quit": _QUIT,
    ".read": DotCommand(".read FILE",
                        "run the SQL and dot commands in FILE; stops at its first error",
                        _read, min_args=1, max_args=1),
    ".tables": DotCommand(".tables [PATTERN]",
                          "list tables and views (LIKE pattern), catalog apart",
                          _tables, max_args=1),
}


def run_dot(shell: Shell, line: str) -> bool:
    """Run a dot-command line such as ``.read 'my file.sql'``."""
    try:
        words = shlex.split(line.rstrip(";"))
    except ValueError as exc:
        return shell.error(f"{line}: {exc}")
    name, args = words[0].lower(), words[1:]
    cmd = DOT_COMMANDS.get(name)
    if cmd is None:
        close = difflib.get_close_matches(name, DOT_COMMANDS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return shell.error(f"Unknown command {name!r}.{hint} Commands: "
                           f"{', '.join(sorted(DOT_COMMANDS))} (.help describes them).")
    if not cmd.min_args <= len(args) <= cmd.max_args:
        return shell.error(f"Usage: {cmd.usage} (got {len(args)} argument(s)).")
    return cmd.run(shell, args)


# ---------------------------------------------------------------------------
# The two front ends.


def history_path() -> str:
    return os.path.expanduser(os.environ.get(HISTORY_ENV) or HISTORY_FILE)


def _history(err: Console):
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = history_path()
    try:
        open(path, "ab").close()
    except OSError as exc:
        err.print(f"[yellow]History is not saved: cannot write {escape(path)} "
                  f"({escape(str(exc))}). Set {HISTORY_ENV} to a writable file.[/yellow]")
        return InMemoryHistory()
    return FileHistory(path)


def _session(err: Console):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    keys = KeyBindings()

    @keys.add("enter")
    def _enter(event) -> None:
        buf = event.current_buffer
        if is_blank(split_input(buf.text)[1]):
            buf.validate_and_handle()
        else:
            buf.insert_text("\n")

    @keys.add("escape", "enter")
    def _force(event) -> None:
        event.current_buffer.validate_and_handle()

    return PromptSession(
        PROMPT, multiline=True, key_bindings=keys, history=_history(err),
        prompt_continuation=lambda width, line, soft: CONTINUATION.rjust(width),
        lexer=PygmentsLexer(SqlLexer), enable_history_search=False,
    )


def _interactive(shell: Shell, db_label: str) -> int:
    session = _session(shell.err)
    shell.out.print(f"duckcluster {__version__} shell on [bold]{escape(db_label)}[/bold]. "
                    "End statements with ';'. Enter .help for commands, Ctrl-D to exit.",
                    highlight=False)
    while not shell.done:
        try:
            text = session.prompt()
        except KeyboardInterrupt:  # Ctrl-C: drop the input line
            continue
        except EOFError:  # Ctrl-D
            break
        try:
            shell.run_lines(text.splitlines(keepends=True), stop_on_error=False)
        # A bug must not end the session and lose its state: report it, go on.
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001
            if _interrupted(exc):
                shell.err.print("[yellow]Interrupted.[/yellow]")
            else:
                shell.err.print_exception(max_frames=4)
                shell.err.print("[red]Internal error[/red] (above); the shell keeps running.")
    return 0


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C: KeyboardInterrupt, or duckdb 2's RuntimeError("Query interrupted") from a query."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, RuntimeError) and str(exc) == "Query interrupted")


def _piped(shell: Shell, stream: Iterable[str]) -> int:
    try:
        shell.run_lines(stream, stop_on_error=False)
    except (KeyboardInterrupt, RuntimeError) as exc:
        if not _interrupted(exc):
            raise
        shell.err.print("[yellow]Interrupted.[/yellow]")
        return 130
    return 1 if shell.failed else 0


def run_shell(con: duckdb.DuckDBPyConnection, db_label: str, run_script: RunScript) -> int:
    """Run the shell on ``con`` until .quit or end of input; return the exit status.

    ``run_script(con, text, progress=True) -> bool`` runs SQL and prints results.
    """
    interactive = sys.stdin.isatty()
    out = Console() if sys.stdout.isatty() else Console(width=1000)
    err = Console(stderr=True)
    shell = Shell(con, run_script, out, err, progress=interactive or sys.stderr.isatty(),
                  interruptible=interactive)
    return _interactive(shell, db_label) if interactive else _piped(shell, sys.stdin)
