"""BLAS and OpenMP thread counts chosen from the machine, with one cached controller.

OpenBLAS and OpenMP split every product across their threads and then wait for the
slowest one. When other processes hold the cores, a descheduled thread stalls the
whole product, and small products (k-means steps, cluster sums, quality passes) pay
it thousands of times. Measured on the shared 2-core machine at load 9-10:
``cluster_execute`` k-means on 100k x 384 rows, median of 3, 11.5 s with the default
two threads and 7.5 s with one. On an idle machine the default is kept.

:func:`for_machine` counts the runnable threads of OTHER processes right now
(``/proc/loadavg`` minus this process's own runnable threads, median of a few
samples) and leaves one thread per core they do not hold. :func:`limited` applies a
count through one ``ThreadpoolController`` made once per process (making one costs
40+ ms on a busy machine: it scans every loaded library; ``threadpool_limits(n)``
makes a new one at every call).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_lock = threading.Lock()
_controller: Any = None
_saw_sklearn = False

F = TypeVar("F", bound=Callable[..., Any])


def cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _own_runnable() -> int:
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:][:1] == b"R":
                n += 1
    except OSError:
        return 1
    return max(n, 1)


def busy_elsewhere(samples: int = 5, gap: float = 0.002) -> float:
    """Runnable threads of other processes now (median of ``samples`` readings of
    ``/proc/loadavg``), or the 1-minute load average less one where that file is
    missing."""
    try:
        counts = []
        for i in range(samples):
            with open("/proc/loadavg", "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
            counts.append(max(0, running - _own_runnable()))
            if i + 1 < samples:
                time.sleep(gap)
        return float(statistics.median(counts))
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            return 0.0


def for_machine() -> int:
    """Threads for numeric work: one per core that other processes do not hold, at
    least one."""
    n = cores()
    return max(1, min(n, n - int(busy_elsewhere() + 0.5)))


def controller() -> Any:
    """The process's ThreadpoolController (made at the first call, and once more after
    scikit-learn is first imported, so it sees scikit-learn's OpenMP runtime; importing
    scikit-learn just for that cost 1-1.2 s of every fresh process, 4-7 s on the busy
    machine, and the default pipeline needs nothing else of it)."""
    global _controller, _saw_sklearn
    with _lock:
        sklearn_now = "sklearn" in sys.modules
        if _controller is None or (sklearn_now and not _saw_sklearn):
            from threadpoolctl import ThreadpoolController

            if sklearn_now:  # its OpenMP runtime is loaded with its compiled modules
                try:
                    import sklearn.utils._openmp_helpers  # noqa: F401
                except ImportError:
                    pass
            _controller, _saw_sklearn = ThreadpoolController(), sklearn_now
        return _controller


def set_threads(lc: Any, n: int) -> None:
    """Set one library controller's pool to ``n`` threads, from any thread.

    threadpoolctl 3.8 lets only one Python thread ever set OpenBLAS (pthreads) pools: the
    first one that does becomes the "controlling thread", and a set from any other thread
    is silently dropped while that one lives. A DuckDB worker thread running a UDF is a
    dummy Python thread that never dies, and the main thread never dies, so once either
    set the pools every later set from the other did nothing: runs kept two BLAS threads
    inside ``limited(1)`` (the "3x slower on a DuckDB worker thread" of issue 19). The
    pool is process-wide, so the set itself is the same from any thread: this calls it
    directly."""
    real = getattr(lc, "_real_set_num_threads", None)
    (real if callable(real) else lc.set_num_threads)(int(n))


@contextlib.contextmanager
def limited(n: int, user_api: str | None = None) -> Iterator[None]:
    """BLAS and OpenMP pools (or only ``user_api``: 'blas' / 'openmp') at ``n``
    threads inside the block; the previous counts come back after it. Never raises a
    pool above its current count."""
    ctl = controller()
    pools = [lc for lc in ctl.lib_controllers if user_api is None or lc.user_api == user_api]
    before = [(lc, lc.get_num_threads()) for lc in pools]
    lowered = [(lc, b) for lc, b in before if b is not None and b > n]
    for lc, _ in lowered:
        set_threads(lc, n)
    try:
        yield
    finally:
        for lc, b in lowered:
            set_threads(lc, b)


def machine_sized(fn: F) -> F:
    """Run ``fn`` with the thread count of :func:`for_machine` (decided at the call)."""
    import functools

    @functools.wraps(fn)
    def inner(*a: Any, **kw: Any) -> Any:
        with limited(for_machine()):
            return fn(*a, **kw)
    return inner  # type: ignore[return-value]
