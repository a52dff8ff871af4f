"""ClusterSpec: one frozen, validated definition.

SQL arguments, CLI flags, dbt config and Python calls all become a
:class:`ClusterSpec` through :meth:`ClusterSpec.from_dict`; downstream code
trusts it. Data-dependent facts (enough rows, dimensions) are checked later,
against the data, by :func:`check_rows`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _json
from .._errors import SpecError, closest
from .._params import Param, validate_params
from .algorithms import get_algorithm, validate_algorithm_params
from .backend import BACKENDS
from .lineage import validate_options as validate_lineage
from .preprocess import validate_steps

#: Top-level options of a definition, declared as data.
OPTIONS: dict[str, Param] = {
    "sample_size": Param(int, None, low=2, nullable=True,
                         doc="fit on a seeded sample of this many rows, then assign every row"),
    "hierarchical": Param(bool, False, doc="recursively sub-cluster big clusters"),
    "max_hierarchy_depth": Param(int, 3, low=1, high=10, doc="levels, including the top one"),
    "dimensions": Param(int, 2, low=2, high=3, doc="reduced coordinates per member (x, y[, z])"),
    "seed": Param(int, 42, low=0, high=2**32 - 1, doc="random seed of every seeded step"),
    "assignment_threshold": Param(float, None, low=0.0, high=1.0, nullable=True,
                                  doc="minimum cosine similarity in assign mode; below -> -1; "
                                      "None = the base full run's own threshold "
                                      "(assign_cluster's default)"),
    "pooling": Param(str, "mean", choices=("mean", "max", "first"),
                     doc="how a multi-vector column (a list of vectors per row) becomes one vector"),
    "noise": Param(str, None, choices=("keep", "assign"), nullable=True,
                   doc="rows a density algorithm leaves as noise (-1): 'keep' them, or "
                       "'assign' each to its nearest cluster when its cosine similarity to "
                       "that centroid is at least noise_threshold (members' noise_assigned "
                       "says which); default 'assign' for algorithm 'auto', else 'keep'"),
    "noise_threshold": Param(float, None, low=-1.0, high=1.0, nullable=True,
                             doc="cosine similarity a noise row needs to join its nearest "
                                 "cluster with noise 'assign'; default: the 10 % quantile "
                                 "of members' similarity to their own centroid"),
    "backend": Param(str, "local", choices=tuple(BACKENDS),
                     doc="where hierarchical sub-clustering runs: 'local' (this process) or "
                         "'ray' (one Ray task per cluster to split); results are identical"),
    "partition_by": Param(str, None, nullable=True,
                          doc="a column or SQL expression of the source: one clustering per "
                              "value (NULL rows are one partition of their own); cluster ids "
                              "are unique across the run"),
    "stable_ids": Param(bool, True,
                        doc="a full run reuses the ids of the clusters it continues from the "
                            "previous full run (false: number clusters afresh every run)"),
}

_KEYS = ("name", "source", "embedding", "id", "algorithm", "params", "preprocessing",
         "labeling", "lineage", *OPTIONS)

_NAME_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster definition: what `cluster_create` stores and every run reads."""

    name: str
    source: str
    embedding: tuple[str, ...]
    id: str | None = None
    algorithm: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)
    preprocessing: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    sample_size: int | None = None
    hierarchical: bool = False
    max_hierarchy_depth: int = 3
    dimensions: int = 2
    seed: int = 42
    assignment_threshold: float | None = None
    pooling: str = "mean"
    backend: str = "local"
    stable_ids: bool = True
    partition_by: str | None = None
    noise: str | None = None
    noise_threshold: float | None = None
    labeling: Mapping[str, Any] | None = None
    lineage: Mapping[str, Any] | None = None  # thresholds of core.lineage.OPTIONS given

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClusterSpec":
        """Validate a mapping of user arguments; None means 'not given'."""
        d = {k: v for k, v in dict(d).items() if v is not None}
        for key in d:
            if key not in _KEYS:
                raise SpecError(
                    f"Unknown cluster option {key!r}.{closest(key, _KEYS)} "
                    f"Valid options: {', '.join(_KEYS)}."
                )
        name = _required_str(d, "name")
        if not _NAME_RE.match(name):
            raise SpecError(
                f"A cluster name must be 1-128 characters without control characters. Got {name!r}."
            )
        source = _required_str(d, "source")
        embedding = _embedding_columns(d.get("embedding"))
        id_col = d.get("id")
        if id_col is not None and (not isinstance(id_col, str) or not id_col):
            raise SpecError(f"'id' must be the name of a column. Got {id_col!r}.")
        algorithm = d.get("algorithm", "auto")
        if not isinstance(algorithm, str):
            raise SpecError(f"'algorithm' must be a string. Got {algorithm!r}.")
        get_algorithm(algorithm)  # unknown name -> error listing valid ones
        params = validate_algorithm_params(algorithm, parse_json_arg("params", d.get("params")))
        steps = validate_steps(parse_json_arg("preprocessing", d.get("preprocessing"), list))
        opts = validate_params("the cluster definition", OPTIONS,
                               {k: d[k] for k in OPTIONS if k in d})
        if opts.get("partition_by") is not None:
            part = opts["partition_by"].strip()
            if not part or "\x00" in part:
                raise SpecError("'partition_by' must name a column of the source or be one SQL "
                                f"expression over its columns, like 'lang'. Got {opts['partition_by']!r}.")
            opts["partition_by"] = part
        labeling = parse_json_arg("labeling", d.get("labeling"))
        lineage = parse_json_arg("lineage", d.get("lineage"))
        if lineage:
            lineage = {k: v for k, v in lineage.items() if v is not None}
            validate_lineage(lineage)
        return cls(name=name, source=source, embedding=embedding, id=id_col,
                   algorithm=algorithm, params=params, preprocessing=steps,
                   labeling=labeling or None, lineage=lineage or None, **opts)

    @property
    def noise_policy(self) -> str:
        """'assign' or 'keep': the ``noise`` option, else 'assign' for 'auto' only."""
        if self.noise is not None:
            return self.noise
        return "assign" if self.algorithm == "auto" else "keep"

    def to_json(self) -> str:
        """Stable JSON (sorted keys) stored in the catalog."""
        d = asdict(self)
        d["embedding"] = list(self.embedding)
        d["preprocessing"] = [{"method": m, **p} for m, p in self.preprocessing]
        return _json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "ClusterSpec":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "ClusterSpec":
        d = json.loads(self.to_json())
        d.update(changes)
        return ClusterSpec.from_dict(d)


def _required_str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{key!r} is required and must be a non-empty string. Got {value!r}.")
    return value


def _embedding_columns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        if len(set(value)) != len(value):
            raise SpecError(f"'embedding' lists a column twice: {list(value)!r}.")
        return tuple(value)
    raise SpecError(
        "'embedding' must name an embedding column, or a list of columns "
        f"(each L2-normalized, then concatenated). Got {value!r}."
    )


def parse_json_arg(name: str, value: Any, kind: type = dict) -> Any:
    """Accept a STRUCT/MAP/LIST value or a JSON string for ``name``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{name!r} must be a STRUCT literal like {{'k': 1}} or a JSON string. "
                f"Could not parse {text!r}: {exc.msg} at character {exc.pos}."
            ) from None
    if kind is dict and isinstance(value, list) and all(
        isinstance(x, Mapping) and set(x) == {"key", "value"} for x in value
    ):  # a DuckDB MAP arrives as a list of {key, value}
        value = {x["key"]: x["value"] for x in value}
    if not isinstance(value, kind):
        want = "a STRUCT or JSON object" if kind is dict else "a LIST or JSON array"
        raise SpecError(f"{name!r} must be {want}. Got {value!r}.")
    return value


def check_rows(spec: ClusterSpec, n_rows: int) -> None:
    """Data-dependent check: enough rows for the algorithm and its params."""
    need = get_algorithm(spec.algorithm).min_rows(dict(spec.params))
    n_fit = min(n_rows, spec.sample_size) if spec.sample_size else n_rows
    if n_fit < need:
        from .._errors import DataError

        what = f"a sample of {n_fit}" if spec.sample_size and n_fit < n_rows else f"{n_rows}"
        raise DataError(
            f"{spec.algorithm} with these params needs at least {need} rows with an "
            f"embedding; the source has {what}. Add rows, or lower the cluster count "
            f"(e.g. n_clusters / min_cluster_size)."
        )
