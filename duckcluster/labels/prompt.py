"""What an LLM sees and what it must send back: input mappings, prompt, response shape.

Pure functions over plain values (payload dicts, strings); no connection, no HTTP.

Input mappings (as in the seed) pick values out of a document's payload, the
source row without its embedding columns:

- ``{'input_key': 'text', 'source_type': 'payload', 'path': 'metadata.headline'}``:
  dot path into nested STRUCTs, MAPs, LISTs (``items.0.name``) and JSON strings.
- ``{'input_key': 'image_url', 'source_type': 'blob', 'path': 'document_blobs.0.url'}``:
  a URL from a blob column; ``0.url`` looks in ``document_blobs``, then ``source_blobs``.
- ``{'input_key': 'text', 'source_type': 'literal', 'override': 'Category: ads'}``:
  a fixed value, sent once per prompt as context.

Several ``text`` mappings are concatenated. Without mappings the whole payload
is sent as JSON.

>>> resolve_path({'metadata': '{"headline": "Hi"}'}, 'metadata.headline')
'Hi'
>>> check_shape({'label': 'x', 'mood': 'Happy '}, {'label': 'string', 'mood': 'happy | sad'})
{'label': 'x', 'mood': 'happy'}
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import SpecError, closest

INPUT_KEYS = ("text", "image_url", "video_url", "audio_url")
SOURCE_TYPES = ("payload", "blob", "literal")
_MAPPING_KEYS = ("input_key", "source_type", "path", "override")
_BLOB_ARRAYS = ("document_blobs", "source_blobs")

_SCALARS = {"string": str, "str": str, "text": str, "number": float, "float": float,
            "integer": int, "int": int, "boolean": bool, "bool": bool}


class ShapeError(ValueError):
    """An LLM answer does not match the response shape."""


@dataclass(frozen=True)
class InputMapping:
    """One validated input mapping."""

    input_key: str
    source_type: str = "payload"
    path: str | None = None
    override: Any = None


def parse_mappings(value: Any) -> tuple[InputMapping, ...]:
    """Validate a list of mapping STRUCTs/dicts (NULL fields count as not given)."""
    if value is None:
        return ()
    if isinstance(value, Mapping) and "input_mappings" in value:  # the seed's labeling_inputs
        value = value["input_mappings"]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise SpecError("input_mappings must be a LIST of STRUCTs like [{'input_key': 'text', "
                        f"'source_type': 'payload', 'path': 'headline'}}]. Got {value!r}.")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise SpecError(f"input_mappings[{i}] must be a STRUCT. Got {m!r}.")
        m = {k: v for k, v in m.items() if v is not None}
        for k in m:
            if k not in _MAPPING_KEYS:
                raise SpecError(f"Unknown key {k!r} in input_mappings[{i}].{closest(k, _MAPPING_KEYS)}"
                                f" Valid keys: {', '.join(_MAPPING_KEYS)}.")
        key = m.get("input_key", "text")
        if key not in INPUT_KEYS:
            raise SpecError(f"input_mappings[{i}].input_key must be one of "
                            f"{', '.join(repr(k) for k in INPUT_KEYS)}. Got {key!r}."
                            f"{closest(str(key), INPUT_KEYS)}")
        st = m.get("source_type", "payload")
        if st not in SOURCE_TYPES:
            raise SpecError(f"input_mappings[{i}].source_type must be one of "
                            f"{', '.join(repr(s) for s in SOURCE_TYPES)}. Got {st!r}."
                            f"{closest(str(st), SOURCE_TYPES)}")
        if st == "literal":
            if "override" not in m:
                raise SpecError(f"input_mappings[{i}] is a literal and needs override := "
                                "'<the fixed value>'.")
        elif not isinstance(m.get("path"), str) or not m["path"]:
            raise SpecError(f"input_mappings[{i}] ({st}) needs a dot-notation path, e.g. "
                            "'metadata.description' or 'document_blobs.0.url'.")
        out.append(InputMapping(key, st, m.get("path"), m.get("override")))
    return tuple(out)


def payload_columns(mappings: Sequence[InputMapping]) -> set[str]:
    """Top-level columns the mappings read (blob shortcuts read both blob arrays)."""
    cols: set[str] = set()
    for m in mappings:
        if m.source_type == "literal" or not m.path:
            continue
        head = m.path.split(".", 1)[0]
        if m.source_type == "blob" and head.lstrip("-").isdigit():
            cols.update(_BLOB_ARRAYS)
        else:
            cols.add(head)
    return cols


def _maybe_json(obj: Any) -> Any:
    if isinstance(obj, str) and obj[:1] in ("{", "["):
        try:
            return json.loads(obj)
        except ValueError:
            return obj
    return obj


def resolve_path(obj: Any, path: str) -> Any:
    """Follow a dot path through dicts, MAPs (lists of key/value pairs), lists and JSON text."""
    for seg in path.split("."):
        obj = _maybe_json(obj)
        if isinstance(obj, list) and obj and all(
                isinstance(x, tuple) and len(x) == 2 for x in obj):  # a DuckDB MAP
            obj = dict(obj)
        if isinstance(obj, Mapping):
            obj = obj.get(seg)
        elif isinstance(obj, list) and re.fullmatch(r"-?\d+", seg):
            i = int(seg)
            obj = obj[i] if -len(obj) <= i < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


def resolve_mapping(payload: Mapping[str, Any], m: InputMapping) -> Any:
    if m.source_type == "literal":
        return m.override
    assert m.path is not None  # validated by parse_mappings
    if m.source_type == "blob" and m.path.split(".", 1)[0].lstrip("-").isdigit():
        for arr in _BLOB_ARRAYS:
            v = resolve_path(payload.get(arr), m.path)
            if v is not None:
                return v
        return None
    return resolve_path(payload, m.path)


def jsonable(v: Any) -> Any:
    """Arrow/DuckDB values as JSON-ready Python values."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
        return {str(k): jsonable(x) for k, x in v}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, float) and v != v:
        return None
    return v


def as_text(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(jsonable(v), ensure_ascii=False,
                                                   sort_keys=True)


def truncate(text: str, max_len: int | None) -> str:
    if max_len is None or len(text) <= max_len:
        return text
    return text[:max_len].rstrip() + "…"


def document_text(payload: Mapping[str, Any], mappings: Sequence[InputMapping]) -> str:
    """A document's text: its text mappings (literals excluded) joined, else its JSON."""
    if not mappings:
        return as_text(dict(payload))
    vals = [as_text(resolve_mapping(payload, m)) for m in mappings
            if m.input_key == "text" and m.source_type != "literal"]
    return "\n".join(v for v in vals if v)


def document_parts(payload: Mapping[str, Any], mappings: Sequence[InputMapping],
                   max_len: int | None) -> list[dict[str, str]]:
    """The parts one representative document contributes: its text, then its media URLs."""
    parts = [{"type": "text", "text": truncate(document_text(payload, mappings), max_len)}]
    for m in mappings:
        if m.input_key != "text" and m.source_type != "literal":
            url = resolve_mapping(payload, m)
            if isinstance(url, str) and url:
                parts.append({"type": m.input_key, "url": url})
    return parts


def literal_parts(mappings: Sequence[InputMapping]) -> list[dict[str, str]]:
    """Literal mappings: context sent once per prompt (not truncated: the user wrote it)."""
    out = []
    for m in mappings:
        if m.source_type != "literal":
            continue
        if m.input_key == "text":
            out.append({"type": "text", "text": as_text(m.override)})
        elif isinstance(m.override, str) and m.override:
            out.append({"type": m.input_key, "url": m.override})
    return out


# -- response shape ---------------------------------------------------------------------

def default_shape(include_summary: bool, include_keywords: bool) -> dict[str, Any]:
    shape: dict[str, Any] = {"label": "string"}
    if include_summary:
        shape["summary"] = "string"
    if include_keywords:
        shape["keywords"] = ["string"]
    return shape


def validate_shape(shape: Any) -> dict[str, Any]:
    """Check a user response_shape: an object with a string 'label' and known value types."""
    if isinstance(shape, str):
        try:
            shape = json.loads(shape)
        except ValueError as exc:
            raise SpecError(f"response_shape must be a STRUCT or a JSON object. Could not parse "
                            f"{shape!r}: {exc}.") from None
    if not isinstance(shape, Mapping) or not shape:
        raise SpecError("response_shape must be a STRUCT like {'label': 'string', 'keywords': "
                        f"['string'], 'sentiment': 'positive | negative | neutral'}}. Got {shape!r}.")
    shape = {k: v for k, v in shape.items() if v is not None}
    if "label" not in shape or _scalar(shape["label"]) is not str:
        raise SpecError("response_shape needs a 'label' of type 'string' (the cluster's name). "
                        f"Got {shape!r}.")
    _check_shape_spec(shape, "response_shape")
    return dict(shape)


def _scalar(spec: Any) -> type | tuple[str, ...] | None:
    if not isinstance(spec, str):
        return None
    if "|" in spec:
        return tuple(s.strip() for s in spec.split("|") if s.strip())
    return _SCALARS.get(spec.strip().lower(), str)  # a description means free text


def _check_shape_spec(spec: Any, where: str) -> None:
    if isinstance(spec, str):
        return
    if isinstance(spec, list):
        if len(spec) > 1:
            raise SpecError(f"{where}: a list shape has one element type, like ['string']. "
                            f"Got {spec!r}.")
        for s in spec:
            _check_shape_spec(s, where + "[]")
        return
    if isinstance(spec, Mapping):
        for k, v in spec.items():
            if v is None:
                continue
            _check_shape_spec(v, f"{where}.{k}")
        return
    raise SpecError(f"{where}: shapes are 'string', 'number', 'integer', 'boolean', "
                    f"'a | b | c', ['<shape>'] or {{key: <shape>}}. Got {spec!r}.")


def check_shape(value: Any, shape: Any, where: str = "answer") -> Any:
    """Return ``value`` conformed to ``shape`` (extra keys dropped, enums canonical) or
    raise ShapeError naming the first mismatch."""
    if isinstance(shape, Mapping):
        if not isinstance(value, Mapping):
            raise ShapeError(f"{where} should be an object, got {type(value).__name__}")
        out = {}
        for k, s in shape.items():
            if s is None:
                continue
            if k not in value or value[k] is None:
                raise ShapeError(f"{where} lacks the key {k!r}")
            out[k] = check_shape(value[k], s, f"{where}.{k}")
        return out
    if isinstance(shape, list):
        if not isinstance(value, list):
            raise ShapeError(f"{where} should be a list, got {type(value).__name__}")
        return [check_shape(v, shape[0], f"{where}[{i}]") for i, v in enumerate(value)] \
            if shape else value
    kind = _scalar(shape)
    if isinstance(kind, tuple):
        norm = {o.lower(): o for o in kind}
        if not isinstance(value, str) or value.strip().lower() not in norm:
            raise ShapeError(f"{where} should be one of {' | '.join(kind)}, got {value!r}")
        return norm[value.strip().lower()]
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            raise ShapeError(f"{where} should be a non-empty string, got {value!r}")
        return value.strip()
    if kind is bool:
        if not isinstance(value, bool):
            raise ShapeError(f"{where} should be a boolean, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ShapeError(f"{where} should be a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise ShapeError(f"{where} should be an integer, got {value!r}")
    return int(value) if kind is int else float(value)


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_answer(text: str, node_id: str) -> Any:
    """JSON out of an LLM answer: Markdown fences stripped; a list yields this node's item."""
    m = _FENCE.match(text)
    body = m.group(1) if m else text.strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos}): "
                         f"{body[:120]!r}") from None
    if isinstance(value, list):  # the seed's custom prompts ask for a JSON array
        for item in value:
            if isinstance(item, Mapping) and str(item.get("cluster_id")) == node_id:
                return item
        if len(value) == 1:
            return value[0]
    return value


# -- prompt --------------------------------------------------------------------------------

SYSTEM = ("You name clusters of similar documents found by a clustering algorithm. "
          "Answer with one JSON object and nothing else.")

_GUIDE = {
    "label": "a short name (2 to 5 words) for what the documents have in common",
    "summary": "one or two sentences describing the cluster",
    "keywords": "3 to 8 short lowercase keyword tags",
}

_PLACEHOLDERS = ("{cluster_id}", "{size}", "{keywords}", "{documents}", "{shape}")


def build_prompt(node_id: str, size: int, keywords: Sequence[str], docs: Sequence[list],
                 shape: Mapping[str, Any], custom_prompt: str | None,
                 context: Sequence[dict] = ()) -> list[dict[str, str]]:
    """The user message as parts. A custom prompt replaces the instructions; with
    ``{cluster_id}``, ``{size}``, ``{keywords}``, ``{documents}`` or ``{shape}``
    placeholders it is the whole text, filled in."""
    shape_json = json.dumps(shape)
    kw = ", ".join(keywords) if keywords else "(none)"
    guide = "\n".join(f'- "{k}": {_GUIDE[k]}' for k in shape if k in _GUIDE)
    rules = (f"Return a JSON object of exactly this shape: {shape_json}\n{guide}\n"
             "A value 'a | b | c' means exactly one of those words; ['string'] means a list "
             "of strings.").rstrip()
    head = (f"Cluster {node_id} has {size} documents. Keywords (class-based TF-IDF, most "
            f"distinctive first): {kw}\nThe {len(docs)} documents closest to the cluster "
            "centre follow.")
    doc_parts: list[dict[str, str]] = []
    for i, parts in enumerate(docs, 1):
        first, *media = parts
        doc_parts.append({"type": "text", "text": f"Document {i}:\n{first['text']}"})
        doc_parts.extend(media)
    if custom_prompt and any(p in custom_prompt for p in _PLACEHOLDERS):
        documents = "\n\n".join(p["text"] for p in doc_parts if p["type"] == "text")
        text = custom_prompt
        for key, val in (("{cluster_id}", node_id), ("{size}", str(size)), ("{keywords}", kw),
                         ("{documents}", documents), ("{shape}", shape_json)):
            text = text.replace(key, val)
        media = [p for p in doc_parts if p["type"] != "text"]
        return [*context, {"type": "text", "text": text}, *media]
    intro = custom_prompt.strip() if custom_prompt else \
        "Name the cluster below from its keywords and representative documents."
    return [{"type": "text", "text": f"{intro}\n\n{head}"}, *context, *doc_parts,
            {"type": "text", "text": rules}]
