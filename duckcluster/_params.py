"""Parameter constraints declared as data, and the one validator that checks them.

Every algorithm, preprocessing step and spec option declares its parameters as a
``dict[str, Param]``; :func:`validate_params` checks a user mapping against it,
rejects unknown keys (suggesting the closest), fills defaults and returns a plain
dict that downstream code trusts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import MissingDependencyError, SpecError, closest

_TYPE_NAMES = {int: "an int", float: "a float", str: "a str", bool: "a bool"}


@dataclass(frozen=True)
class Param:
    """One parameter: its type, allowed range or choices, and default.

    ``low``/``high`` bound numbers (inclusive unless ``low_open``/``high_open``);
    ``choices`` lists allowed strings; ``nullable`` admits None (as "not set");
    ``auto`` admits the string ``'auto'`` for a number chosen from the data.
    """

    kind: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    doc: str = ""
    auto: bool = False

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        text = _TYPE_NAMES[self.kind]
        if self.kind is float and self.low is None and self.high is None:
            text = "a finite float"
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else _fmt(self.low)
            hi = "inf" if self.high is None else _fmt(self.high)
            lb = "(" if self.low_open or self.low is None else "["
            rb = ")" if self.high_open or self.high is None else "]"
            text += f" in the range {lb}{lo}, {hi}{rb}"
        if self.auto:
            text += " or 'auto'"
        if self.nullable:
            text += " or None"
        return text

    def check(self, owner: str, name: str, value: Any) -> Any:
        """Return the value coerced to ``kind`` or raise SpecError."""
        if value is None:
            if self.nullable:
                return None
            raise self._error(owner, name, value)
        v = value
        if self.auto and v == "auto":
            return v
        if self.kind is bool:
            if not isinstance(v, bool):
                raise self._error(owner, name, value)
        elif self.kind is int:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self._error(owner, name, value)
            if isinstance(v, float):
                if not v.is_integer():
                    raise self._error(owner, name, value)
                v = int(v)
        elif self.kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self._error(owner, name, value)
            v = float(v)
            if not math.isfinite(v):  # NaN passes no range check; inf is never meant
                raise self._error(owner, name, value)
        elif self.kind is str:
            if not isinstance(v, str):
                raise self._error(owner, name, value)
            if self.choices and v not in self.choices:
                raise self._error(owner, name, value, hint=closest(v, self.choices))
            return v
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            raise self._error(owner, name, value)
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            raise self._error(owner, name, value)
        return v

    def _error(self, owner: str, name: str, value: Any, hint: str = "") -> SpecError:
        return SpecError(
            f"The {name!r} parameter of {owner} must be {self.describe()}. "
            f"Got {value!r} instead.{hint}"
        )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def validate_params(
    owner: str, spec: Mapping[str, Param], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check ``given`` against ``spec``; return a full dict with defaults filled.

    A None value counts as "not given" (DuckDB fills missing STRUCT keys with NULL).
    """
    given = {k: v for k, v in dict(given or {}).items() if v is not None}
    out: dict[str, Any] = {}
    for key in given:
        if key not in spec:
            valid = ", ".join(repr(k) for k in sorted(spec)) or "none"
            raise SpecError(
                f"Unknown parameter {key!r} for {owner}.{closest(key, spec)} "
                f"Valid parameters: {valid}."
            )
    for key, param in spec.items():
        value = given.get(key)
        if value is None:
            out[key] = param.default
        else:
            out[key] = param.check(owner, key, value)
    return out


def parse_field_list(fields: Any, valid: Mapping[str, Any], default: tuple[str, ...],
                     function: str, example: str) -> tuple[str, ...]:
    """A ``fields := [...]`` argument: names from ``valid``, duplicates dropped, in
    order; None gives ``default``. ``function`` and ``example`` go into the errors."""
    from collections.abc import Sequence

    if fields is None:
        return default
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, Sequence) or not fields:
        raise SpecError(f"fields must be a non-empty list like {example}. Got {fields!r}.")
    out: list[str] = []
    for f in fields:
        if f not in valid:
            raise SpecError(f"Unknown field {f!r} for {function}.{closest(str(f), valid)} "
                            f"Valid fields: {', '.join(valid)}.")
        if f not in out:
            out.append(f)
    return tuple(out)


def optional_import(module: str, extra: str, purpose: str, *, what: str | None = None,
                    alternative: str = "") -> Any:
    """Import an optional dependency, or raise MissingDependencyError saying how to get it.

    ``extra``: the duckcluster extra that installs it; ``purpose``: what needs it, as the
    message's subject (``"The exporter"``); ``what``: the package's name for people
    (default ``module``); ``alternative``: an option that needs no install, appended.

    >>> optional_import("math", "none", "This example").sqrt(4.0)
    2.0
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs {what or module}, which is not installed. Install it with "
            f"pip install 'duckcluster[{extra}]'{alternative}.") from None

