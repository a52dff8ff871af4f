"""Counted progress of long numeric work: ``step(what, done, total)``.

No DuckDB and no display here. The edge that starts long work (a SQL function, a
script) hands in a callback for its thread with :func:`reporting`; loops whose work
is countable (epochs, batches, rows) call :func:`step`, which does nothing when no
callback was handed in. The callback may raise to stop the work (the shell's Ctrl-C
does, with ``RunCancelledError``), so call it where stopping leaves nothing
half-done.

>>> seen = []
>>> with reporting(lambda what, done, total: seen.append((what, done, total))):
...     for epoch in range(3):
...         step("layout epochs", epoch + 1, 3)
>>> seen[-1]
('layout epochs', 3, 3)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: ``callback(what, done, total)``; ``done``/``total`` are None for a stage without counts.
Callback = Callable[[str, "int | None", "int | None"], None]

_local = threading.local()


@contextmanager
def reporting(callback: Callback | None) -> Iterator[None]:
    """Send the :func:`step` calls made on this thread inside the block to ``callback``."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def current() -> Callback | None:
    """This thread's callback, to hand to worker threads (``reporting(current())``)."""
    return getattr(_local, "callback", None)


def step(what: str, done: int | None = None, total: int | None = None) -> None:
    """Report that ``done`` of ``total`` units of ``what`` are finished."""
    callback = getattr(_local, "callback", None)
    if callback is not None:
        callback(what, done, total)
