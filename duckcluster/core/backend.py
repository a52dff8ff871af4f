"""Where parallel work runs: in this process (``'local'``) or on Ray (``'ray'``).

Work that parallelises (hierarchical sub-clustering, parameter sweeps, drift over
many windows) is written once as a pure function of numpy arrays and plain
values, and handed to an :class:`Executor`, which calls it on every item and
returns the results in item order. The local executor is a plain loop; the Ray
executor runs one Ray task per item. Results are identical: the function, its
inputs and its seeds are the same, only the process differs.

Ray is imported only when ``backend='ray'`` is used (``import ray`` takes
seconds). The runtime is found the way ``ray.init()`` finds it: an address
given as ``ray_address``, else the ``RAY_ADDRESS`` environment variable, else a
runtime this process started already, else a new local one on this machine. A
runtime that is already initialised in this process (``ray.init(...)`` called by
the user, with any ``runtime_env``) is used as it is.

>>> get_executor("local").map(pow, [2, 3], shared=(2,))
[4, 9]
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._errors import SpecError, unknown_name
from .._params import optional_import


class Executor(Protocol):
    """Runs ``fn(item, *shared)`` for every item; results in item order."""

    name: str

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: tuple[Any, ...] = ()) -> list[Any]: ...


class LocalExecutor:
    """A plain loop in this process (the default)."""

    name = "local"

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: tuple[Any, ...] = ()) -> list[Any]:
        return [fn(item, *shared) for item in items]


class RayExecutor:
    """One Ray task (1 CPU) per item; ``shared`` values go to the object store once."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.ray = ensure_ray(address)
        self._remote: dict[Callable[..., Any], Any] = {}

    def remote(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=1)(fn)
        return self._remote[fn]

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: tuple[Any, ...] = ()) -> list[Any]:
        if not items:
            return []
        task = self.remote(fn)
        refs = [self.ray.put(s) for s in shared]
        return self.get([task.remote(item, *refs) for item in items])

    def get(self, refs: Any) -> Any:
        """``ray.get`` that raises a task's own exception (a SpecError stays a SpecError)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise


#: backend name -> factory(ray_address)
BACKENDS: dict[str, Callable[[str | None], Executor]] = {
    "local": lambda address: LocalExecutor(),
    "ray": RayExecutor,
}


def check_backend(name: Any) -> str:
    """Return ``name`` if it is a backend, else raise an error listing the valid ones."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    return name


def check_address(address: Any) -> str | None:
    if address is None:
        return None
    if (not isinstance(address, str) or not _ADDRESS.match(address.strip())):
        raise SpecError("ray_address must be a Ray address such as 'ray://head:10001' or "
                        "'auto' (or host:port), or NULL to use RAY_ADDRESS / a local runtime. "
                        f"Got {address!r}.")
    return address.strip()


#: 'auto' / 'local', a scheme URL (ray://, http(s)://), or host:port; no spaces.
_ADDRESS = re.compile(r"^(auto|local|(ray|https?)://[^\s/]+(/\S*)?|[^\s:/]+:\d{1,5})$")


def get_executor(backend: str = "local", ray_address: str | None = None) -> Executor:
    """The executor of ``backend`` ('local' or 'ray'); ``ray_address`` only for Ray."""
    return BACKENDS[check_backend(backend)](check_address(ray_address))


def import_ray() -> Any:
    """``import ray``, or a MissingDependencyError saying how to install it."""
    return optional_import("ray", "ray", "backend := 'ray'", what="Ray",
                           alternative=" (or use backend := 'local')")


_init_lock = threading.Lock()


def ensure_ray(address: str | None = None) -> Any:
    """The ``ray`` module with a runtime connected (see the module docstring)."""
    ray = import_ray()
    with _init_lock:
        if not ray.is_initialized():
            # address=None: ray.init reads RAY_ADDRESS, else starts a local runtime
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        _quiet_ray_data()
    return ray


def _quiet_ray_data() -> None:
    """Ray Data logs progress to stdout, which is where query results go."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
