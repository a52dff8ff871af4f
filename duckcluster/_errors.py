"""The one exception tree of duckcluster.

::

    DuckclusterError                      base of everything raised on purpose
    ├── SpecError (ValueError)            a definition, param or argument is invalid
    │   └── UnknownNameError (KeyError)   an algorithm / method / definition name is unknown
    ├── DataError (ValueError)            the data breaks a rule (NaN, mixed dims, too few rows)
    ├── RunNotFoundError (LookupError)    a run id or a successful run does not exist
    ├── RunFailedError                    a run failed; it is recorded as failed in the catalog
    ├── RunInProgressError                a run of the definition is in progress (second full run, delete)
    ├── ResourceError (MemoryError)       a run would not fit in memory; says what would
    ├── DatabaseBusyError (OSError)       another process holds the database file for writing
    ├── LLMError                          a labeling provider call failed after retries (llm/_http.py)
    └── MissingDependencyError (ImportError)  an optional dependency is not installed

Messages say what was wrong, what was given, what is allowed and the fix.
Inside DuckDB they surface as ``InvalidInputException: ... <ClassName>: <message>``.
"""

from __future__ import annotations

import difflib
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
