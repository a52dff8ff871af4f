"""One JSON encoder for everything duckcluster stores or returns as JSON text.

numpy scalars and arrays, tuples, sets, datetimes, Decimals and Arrow scalars become
their plain JSON forms; anything else unknown becomes its ``str()``, so a stored
details column never fails to encode.

>>> import numpy as np
>>> dumps({"p": np.float32(0.5), "k": np.int64(3), "ids": (1, 2)})
'{"ids": [1, 2], "k": 3, "p": 0.5}'
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
from typing import Any

import numpy as np


def default(o: Any) -> Any:
    """``json.dumps(..., default=default)`` hook."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    if isinstance(o, (_dt.datetime, _dt.date, _dt.time)):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return float(o)
    as_py = getattr(o, "as_py", None)  # pyarrow scalars
    if callable(as_py):
        return as_py()
    return str(o)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with :func:`default` and sorted keys."""
    kwargs.setdefault("sort_keys", True)
    return json.dumps(obj, default=default, **kwargs)
