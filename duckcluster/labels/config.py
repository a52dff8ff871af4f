"""Label options declared as data: :data:`LABEL_OPTIONS` and :class:`LabelConfig` (the
arguments of ``cluster_label`` and a definition's ``labeling := {...}``), and
:data:`EMBED_OPTIONS` (``embed_text``'s)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._errors import SpecError
from .._params import Param, validate_params
from .llm import RetryPolicy, provider_name
from .prompt import InputMapping, default_shape, parse_mappings, validate_shape

#: Label options, declared as data (cluster_label arguments and the definition's labeling).
LABEL_OPTIONS: dict[str, Param] = {
    "provider": Param(str, "offline", doc="'offline' (default), 'openai' or 'gemini'"),
    "model": Param(str, None, nullable=True, doc="chat model; provider default if not set"),
    "base_url": Param(str, None, nullable=True, doc="API root, e.g. http://localhost:11434/v1"),
    "api_key_env": Param(str, None, nullable=True, doc="environment variable holding the key"),
    "secret": Param(str, None, nullable=True, doc="DuckDB http secret holding the key"),
    "text": Param(str, None, nullable=True, doc="SQL expression over the source: the text"),
    "custom_prompt": Param(str, None, nullable=True, doc="replaces the default instructions"),
    "max_samples_per_cluster": Param(int, 5, low=1, high=100),
    "sample_text_max_length": Param(int, 2000, low=1, doc="characters per document text"),
    "include_summary": Param(bool, True),
    "include_keywords": Param(bool, True),
    "n_keywords": Param(int, 10, low=1, high=50, doc="offline keywords per cluster"),
    "use_embedding_dedup": Param(bool, False),
    "embedding_similarity_threshold": Param(float, 0.8, low=0.0, high=1.0),
    "embedding_provider": Param(str, None, nullable=True),
    "embedding_model": Param(str, None, nullable=True),
    "embedding_base_url": Param(str, None, nullable=True),
    "cache_ttl_seconds": Param(int, 604800, low=0, doc="0 disables the label cache"),
    "timeout": Param(float, 60.0, low=0.0, low_open=True, doc="seconds per HTTP attempt"),
    "max_retries": Param(int, 3, low=0, high=10, doc="retries of timeouts, 429 and 5xx"),
    "retry_backoff": Param(float, 0.5, low=0.0, doc="first backoff in seconds, doubling"),
    "concurrency": Param(int, 4, low=1, high=32, doc="LLM requests in flight"),
    "json_mode": Param(bool, True, doc="ask the provider for JSON output"),
    "temperature": Param(float, 0.0, low=0.0, high=2.0),
}
_STRUCTURED = ("input_mappings", "response_shape")
_ALIASES = {"model_name": "model", "labeling_inputs": "input_mappings", "prompt": "custom_prompt"}
_OFFLINE = ("offline", "none")


@dataclass(frozen=True)
class LabelConfig:
    """Validated label options (see :data:`LABEL_OPTIONS`)."""

    provider: str = "offline"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    secret: str | None = None
    text: str | None = None
    custom_prompt: str | None = None
    max_samples_per_cluster: int = 5
    sample_text_max_length: int = 2000
    include_summary: bool = True
    include_keywords: bool = True
    n_keywords: int = 10
    use_embedding_dedup: bool = False
    embedding_similarity_threshold: float = 0.8
    embedding_provider: str | None = None
    embedding_model: str | None = None
    embedding_base_url: str | None = None
    cache_ttl_seconds: int = 604800
    timeout: float = 60.0
    max_retries: int = 3
    retry_backoff: float = 0.5
    concurrency: int = 4
    json_mode: bool = True
    temperature: float = 0.0
    input_mappings: tuple[InputMapping, ...] = ()
    response_shape: Mapping[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelConfig:
        """Validate options; None counts as not given. Accepts the seed's names
        (model_name, labeling_inputs, enabled)."""
        d = {_ALIASES.get(k, k): v for k, v in dict(d or {}).items() if v is not None}
        enabled = d.pop("enabled", None)
        structured = {k: d.pop(k) for k in _STRUCTURED if k in d}
        opts = validate_params("cluster_label", {**LABEL_OPTIONS,
                                                 **{k: Param(str) for k in _STRUCTURED}}, d)
        for key in ("base_url", "embedding_base_url"):
            check_base_url("cluster_label", key, opts[key])
        for k in _STRUCTURED:
            opts.pop(k, None)
        prov = str(opts["provider"]).lower()
        if enabled is False:
            prov = "offline"
        opts["provider"] = prov if prov in _OFFLINE else provider_name(prov)
        if opts["provider"] == "sentence-transformers":
            raise SpecError("provider 'sentence-transformers' only embeds; label with 'offline', "
                            "'openai' or 'gemini' and pass it as embedding_provider.")
        if opts["provider"] == "none":
            opts["provider"] = "offline"
        if opts["embedding_provider"]:
            opts["embedding_provider"] = provider_name(opts["embedding_provider"])
        shape = structured.get("response_shape")
        return cls(**opts, input_mappings=parse_mappings(structured.get("input_mappings")),
                   response_shape=validate_shape(shape) if shape is not None else None)

    @property
    def offline(self) -> bool:
        return self.provider == "offline"

    @property
    def shape(self) -> dict[str, Any]:
        return dict(self.response_shape) if self.response_shape else default_shape(
            self.include_summary, self.include_keywords)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff=self.retry_backoff,
                           timeout=self.timeout)

    def public(self) -> dict[str, Any]:
        """Options as plain JSON (no keys are ever part of the config)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["input_mappings"] = [m.__dict__ for m in self.input_mappings]
        return out


def check_base_url(owner: str, key: str, value: str | None) -> str | None:
    """``value`` if it is None or an http(s) URL with a host; else a SpecError naming
    ``key`` of ``owner`` (a typo here would otherwise surface as a connection error, or
    not at all while the provider is offline)."""
    if value is None:
        return None
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or any(ord(c) <= 0x20 for c in value)):
        raise SpecError(f"The {key!r} parameter of {owner} must be an http:// or https:// URL "
                        f"of the API root, e.g. 'http://localhost:11434/v1'. Got {value!r} "
                        "instead.")
    return value


#: Options of embed_text, declared as data.
EMBED_OPTIONS: dict[str, Param] = {
    "provider": Param(str, "openai"),
    "model": Param(str, None, nullable=True),
    "base_url": Param(str, None, nullable=True),
    "dimensions": Param(int, None, low=1, nullable=True),
    "api_key_env": Param(str, None, nullable=True),
    "secret": Param(str, None, nullable=True),
    "timeout": Param(float, 60.0, low=0.0, low_open=True),
    "max_retries": Param(int, 3, low=0, high=10),
    "retry_backoff": Param(float, 0.5, low=0.0),
}
