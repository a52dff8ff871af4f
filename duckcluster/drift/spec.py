"""DriftSpec: the one validated form of a drift comparison's arguments (SQL, the CLI
report, triggers and Python calls build one), with its options declared as data
(:data:`OPTIONS`; :data:`EXPLAIN_OPTIONS` for ``embedding_drift_explain``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import SpecError, closest
from .._params import Param, validate_params
from . import (
    DEFAULT_ALPHA,
    DEFAULT_METHOD,
    DRIFT_METHODS,
    get_method,
    validate_method_params,
)

OPTIONS: dict[str, Param] = {
    "alpha": Param(float, DEFAULT_ALPHA, low=0.0, high=1.0, low_open=True, high_open=True,
                   doc="significance level: drift_detected = p_value < alpha"),
    "seed": Param(int, 42, low=0, high=2**32 - 1, doc="seed of every sample and permutation"),
    "normalize": Param(bool, True, doc="L2-normalize rows first (compare directions, as "
                                       "cosine similarity does)"),
    "pooling": Param(str, "mean", choices=("mean", "max", "first"),
                     doc="how a multi-vector column becomes one vector"),
    "reference": Param(str, None, nullable=True,
                       doc="cluster definition whose latest full run's centroids the "
                           "'cluster' method assigns to"),
    "reference_run": Param(str, None, nullable=True, doc="a run id to take centroids from"),
    "group_by": Param(str, None, nullable=True,
                      doc="a column or expression whose rows move together (a session, a "
                          "user, a day): the permutations relabel whole groups"),
}


@dataclass(frozen=True)
class DriftSpec:
    """Validated arguments of one drift comparison (every SQL entry point builds one)."""

    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    embedding: tuple[str, ...] | None = ("embedding",)
    alpha: float = DEFAULT_ALPHA
    seed: int = 42
    normalize: bool = True
    pooling: str = "mean"
    reference: str | None = None
    reference_run: str | None = None
    group_by: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], owner: str = "embedding_drift") -> DriftSpec:
        """Validate the arguments of ``owner`` (the SQL function named in errors)."""
        d = {k: v for k, v in dict(d).items() if v is not None}
        known = {"method", "params", "embedding", *OPTIONS}
        for key in d:
            if key not in known:
                raise SpecError(f"Unknown drift option {key!r}.{closest(key, known)} "
                                f"Valid options: {', '.join(sorted(known))}.")
        methods = _methods(d.get("method"))
        params = _method_params(methods, _json_value("params", d.get("params")))
        opts = validate_params(owner, OPTIONS, {k: d[k] for k in OPTIONS if k in d})
        return cls(methods=methods, params=params, embedding=_embedding(d.get("embedding")),
                   **opts)

    def rows_wanted(self) -> tuple[int | None, int | None]:
        """(baseline, current) rows the methods can use at most (None: every row):
        the read sample sizes."""
        wants = [DRIFT_METHODS[m].rows_wanted(self.params[m]) for m in self.methods]

        def most(values):
            return None if any(v is None for v in values) else max(values)

        return most([w[0] for w in wants]), most([w[1] for w in wants])


def _json_value(name: str, value: Any) -> Any:
    """A STRUCT/LIST arrives decoded; a JSON string (possibly JSON-quoted) is decoded here."""
    for _ in range(2):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if name in ("method", "embedding"):
                return text
            raise SpecError(f"{name!r} must be a STRUCT literal like {{'k': 1}} or a JSON "
                            f"string. Could not parse {text!r}: {exc.msg}.") from None
    return value


def _methods(value: Any) -> tuple[str, ...]:
    value = _json_value("method", value)
    if value is None:
        return (DEFAULT_METHOD,)
    if value == "all":
        return tuple(DRIFT_METHODS)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise SpecError("'method' must be a method name, a list of names or 'all'. Valid "
                        f"methods: {', '.join(DRIFT_METHODS)}. Got {value!r}.")
    for n in names:
        get_method(n)  # unknown -> lists the valid ones
    if len(set(names)) != len(names):
        raise SpecError(f"'method' lists a method twice: {list(names)!r}.")
    return tuple(names)


def _method_params(methods: Sequence[str], given: Any) -> dict[str, dict[str, Any]]:
    """``params`` is one method's params, or a mapping of method name to params."""
    if given is None:
        given = {}
    if isinstance(given, list) and all(isinstance(x, Mapping) and set(x) == {"key", "value"}
                                       for x in given):
        given = {x["key"]: x["value"] for x in given}
    if not isinstance(given, Mapping):
        raise SpecError(f"'params' must be a STRUCT or a JSON object. Got {given!r}.")
    given = {k: v for k, v in given.items() if v is not None}
    keyed = bool(given) and all(k in DRIFT_METHODS for k in given)
    if keyed:
        extra = [k for k in given if k not in methods]
        if extra:
            raise SpecError(f"'params' has params for {', '.join(extra)}, which is not among the "
                            f"methods run ({', '.join(methods)}). Add it to 'method' or drop it.")
        return {m: validate_method_params(m, _json_value("params", given.get(m)))
                for m in methods}
    if given and len(methods) > 1:
        raise SpecError("With several methods, pass params per method: params := {'mmd': "
                        "{'n_permutations': 1000}, 'energy': {'n_components': 3}}.")
    return {m: validate_method_params(m, given) for m in methods}


def _embedding(value: Any) -> tuple[str, ...] | None:
    value = _json_value("embedding", value)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise SpecError("'embedding' must name an embedding column or a list of columns. "
                    f"Got {value!r}.")


EXPLAIN_OPTIONS: dict[str, Param] = {
    "text": Param(str, None, nullable=True,
                  doc="a column or SQL expression of each side's text, for keywords, labels "
                      "and example texts"),
    "id": Param(str, None, nullable=True,
                doc="the id column of the example rows (default: 'id' when the sides have "
                    "one, else the row's position)"),
    "n_regions": Param(int, None, low=2, high=1000, nullable=True,
                       doc="regions of the pooled rows (default: one per 30 rows, 4 to 64)"),
    "n_examples": Param(int, 3, low=0, high=50, doc="example rows per region"),
}
