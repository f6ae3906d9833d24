"""Give freed heap memory back to the system: glibc's `malloc_trim(0)`, now and then.

A service's worker threads (dispatch's write-back, the database reads) allocate from glibc's
per-thread heaps. When a batch's big lists and strings are freed, glibc keeps the pages for reuse
and hands back only the free space at the very top of a heap. A later, slightly differently
shaped batch may not fit the holes and takes new pages. `malloc_trim(0)` walks every heap and
releases the pages of its free chunks (`MADV_DONTNEED`); the addresses stay reserved and come back
on demand. docs/reliability.md has the soak runs that measured it.

No-op off glibc (musl, macOS) and when the interval is 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

log = logging.getLogger("siaga")

TRIMS = Counter("siaga_malloc_trims", "Times the process gave freed heap pages back to the system (malloc_trim)")
TRIM_SECONDS = Counter("siaga_malloc_trim_seconds", "Time spent in malloc_trim")
SQLITE_MEMORY = Gauge(
    "siaga_sqlite_memory_bytes", "Memory SQLite holds now (page caches, statements): sqlite3_memory_used"
)


def _c_function(library: str, name: str, argtypes: list[Any], restype: Any) -> Any | None:
    """A function of a shared C library already on the system, or None where it has none."""
    path = ctypes.util.find_library(library)
    if path is None:
        return None
    try:
        fn = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, restype
    return fn


def malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0) as a callable, or None where the C library has none."""
    fn = _c_function("c", "malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    return None if fn is None else lambda: fn(0)


M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_arenas(n: int) -> bool:
    """Let glibc make at most `n` malloc arenas (0: leave its default); True when the limit is set.

    Without a limit glibc gives each thread that allocates while the others hold their arenas an
    arena of its own, up to eight a core. Dispatch's batches run on whichever thread of the default
    executor is free, so their allocations spread over several arenas, each keeping its own free
    pages. Set it before the threads start: arenas already made stay.
    """
    if n <= 0:
        return False
    fn = _c_function("c", "mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return fn is not None and fn(M_ARENA_MAX, n) == 1


def sqlite_memory_used() -> Callable[[], float] | None:
    """SQLite's own count of the heap memory it holds, from the library the sqlite3 module uses."""
    fn = _c_function("sqlite3", "sqlite3_memory_used", [], ctypes.c_int64)
    return None if fn is None else lambda: float(fn())


_used = sqlite_memory_used()
if _used is not None:
    SQLITE_MEMORY.set_function(_used)


async def trim_loop(interval_s: float) -> None:
    """Trim every `interval_s` seconds, in a worker thread (it takes each heap's lock in turn)."""
    trim = malloc_trim()
    if trim is None or interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        began = time.perf_counter()
        try:
            await asyncio.to_thread(trim)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed trim must not stop the service
            log.exception("malloc_trim failed")
            continue
        TRIMS.inc()
        TRIM_SECONDS.inc(time.perf_counter() - began)
