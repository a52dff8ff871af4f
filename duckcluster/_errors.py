"""The one exception tree of duckcluster.

::

    DuckclusterError                      base of everything raised on purpose
    ├── SpecError (ValueError)            a definition, param or argument is invalid
    │   └── UnknownNameError (KeyError)   an algorithm / method / definition name is unknown
    ├── DataError (ValueError)            the data breaks a rule (NaN, mixed dims, too few rows)
    ├── RunNotFoundError (LookupError)    a run id or a successful run does not exist
    ├── RunFailedError                    a run failed; it is recorded as failed in the catalog
    ├── RunInProgressError                a run of the definition is in progress (second full run, delete)
    ├── RunCancelledError                 a run was stopped on request (Ctrl-C); recorded 'cancelled'
    ├── ResourceError (MemoryError)       a run would not fit in memory; says what would
    ├── DatabaseBusyError (OSError)       another process holds the database file for writing
    ├── LLMError                          a labeling provider call failed after retries (llm/_http.py)
    └── MissingDependencyError (ImportError)  an optional dependency is not installed

Messages say what was wrong, what was given, what is allowed and the fix.
Inside DuckDB they surface as ``duckdb.InvalidInputException`` with the text
``Invalid Input Error: <ClassName>: <message>`` (raised through SQL's ``error()``;
see ``functions/_registry.py``). :func:`user_message` is the one line the shell,
the CLI, notebooks and Harlequin print for any error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class DuckclusterError(Exception):
    """Base class of every error duckcluster raises on purpose."""


class SpecError(DuckclusterError, ValueError):
    """An invalid definition, parameter or argument."""


class UnknownNameError(SpecError, KeyError):
    """An unknown algorithm, method, definition or option name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(DuckclusterError, ValueError):
    """The input data violates a rule (NaN/Inf, mixed dimensions, too few rows...)."""


class RunNotFoundError(DuckclusterError, LookupError):
    """A run id, or a successful run of a definition, does not exist."""


class RunFailedError(DuckclusterError):
    """A run failed; it is recorded with status 'failed' and its error."""


class RunInProgressError(DuckclusterError):
    """A run of the definition is in progress: a second full run, or a delete, must wait."""


class ResourceError(DuckclusterError, MemoryError):
    """A run would need more memory than is available; the message says how much."""


class DatabaseBusyError(DuckclusterError, OSError):
    """Another process holds the database file for writing (DuckDB allows one writer)."""


class MissingDependencyError(DuckclusterError, ImportError):
    """An optional dependency is not installed."""


def closest(name: str, options: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest option, or ''."""
    match = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown_name(kind: str, name: object, options: Iterable[str]) -> UnknownNameError:
    """Build the standard error for an unknown name, listing the valid ones."""
    opts = sorted(options)
    return UnknownNameError(
        f"Unknown {kind} {name!r}.{closest(str(name), opts)} "
        f"Valid values: {', '.join(repr(o) for o in opts)}."
    )


class RunCancelledError(DuckclusterError):
    """A run was stopped on request (Ctrl-C); it is recorded with status 'cancelled'."""


#: What a run stopped by Ctrl-C says (raised at its next progress report, or recorded
#: for a KeyboardInterrupt that reached it first).
INTERRUPTED = "cancelled: interrupted (Ctrl-C) before it finished; nothing was written"


_UDF_PREFIX = "Python exception occurred while executing the UDF: "
_OWN = re.compile(r"(?:Invalid Input Error: )?(?:ValueError: )?"
                  r"((?:[A-Z][A-Za-z]*Error|RunCancelledError): )")


def user_message(exc: BaseException) -> str:
    """The text a client shows for ``exc``: duckcluster errors as one line
    ``ClassName: message`` (no DuckDB or Python wrapping), DuckDB's own as DuckDB words them.

    >>> user_message(ValueError("Invalid Input Error: SpecError: mode must be 'full'"))
    "SpecError: mode must be 'full'"
    >>> user_message(SpecError("mode must be 'full'"))
    "SpecError: mode must be 'full'"
    """
    if isinstance(exc, DuckclusterError):
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    text = str(exc).replace(_UDF_PREFIX, "")
    match = _OWN.match(text)
    if match and match.group(1)[:-2] in _class_names():
        return text[match.start(1):].splitlines()[0]
    return text.rstrip()


def _class_names() -> set[str]:
    names, todo = set(), [DuckclusterError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names | {"LLMError", "RunInProgressError"}  # defined in modules maybe not imported


def stored_message(exc: BaseException) -> str:
    """What the catalog keeps for a failure (runs.error and the like): one line,
    ``ClassName: message``, never a traceback.

    >>> stored_message(ZeroDivisionError("float division by zero"))
    'ZeroDivisionError: float division by zero'
    """
    text = user_message(exc) if str(exc) else type(exc).__name__
    if not isinstance(exc, DuckclusterError) and not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())  # one line, whatever the message held
