"""siaga.memory: freed heap pages go back to the system, now and then."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from siaga.memory import SQLITE_MEMORY, TRIMS, malloc_trim, trim_loop


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_gives_back_the_holes_a_worker_thread_left() -> None:
    """A worker thread's many 2 KB strings, freed but for every 64th: glibc keeps the holes
    (resident) until malloc_trim releases their pages."""
    trim = malloc_trim()
    if trim is None:
        pytest.skip("not glibc")  # CI runs on Debian (glibc): tests/unit/test_ci_skips.py fails a skip there
    kept: list[bytes] = []

    def fill() -> None:
        blocks = [bytes(2048) + i.to_bytes(4, "little") for i in range(100_000)]  # ~200 MB, malloc'd
        kept.extend(blocks[::64])
        blocks.clear()

    trim()
    before = rss_mb()
    t = threading.Thread(target=fill)
    t.start()
    t.join()
    held = rss_mb()
    assert held - before > 100, "the freed blocks' pages should still be resident before the trim"
    trim()
    after = rss_mb()
    assert held - after > 100, f"malloc_trim gave back only {held - after:.0f} MB of {held - before:.0f} MB"
    assert len(kept) == 1563


async def test_the_loop_trims_at_its_interval_and_never_at_zero() -> None:
    start = TRIMS._value.get()
    await asyncio.wait_for(trim_loop(0), 1)  # returns at once: trimming is off
    assert TRIMS._value.get() == start
    task = asyncio.create_task(trim_loop(0.01))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if TRIMS._value.get() >= start + 3:
            break
    task.cancel()
    assert TRIMS._value.get() >= start + 3


def test_sqlite_memory_is_what_sqlite_holds() -> None:
    """The gauge reads the library the sqlite3 module uses: a connection's rows raise it."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(str(i) * 50,) for i in range(50_000)])
    held = SQLITE_MEMORY.collect()[0].samples[0].value
    conn.close()
    freed = SQLITE_MEMORY.collect()[0].samples[0].value
    assert held > 5 * 2**20, held
    assert held - freed > 5 * 2**20, (held, freed)


# Threads that each allocate, then report how many glibc thread heaps (anonymous maps starting on
# a 64 MiB boundary, /proc/self/maps) the process has. argv[1]: the arena limit (0: none).
_ARENAS = """
import sys, threading
from siaga.memory import limit_arenas
limit = int(sys.argv[1])
assert limit_arenas(limit) == (limit > 0)
held = []
together = threading.Barrier(6)  # all six alive at once, so none inherits a finished thread's arena
def work():
    together.wait()
    held.append([bytes(1024) + bytes([i % 256]) for i in range(2000)])  # above pymalloc's 512 bytes: malloc
    together.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
heaps = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(x, 16) for x in fields[0].split("-"))
    if len(fields) < 6 and start % (64 << 20) == 0:
        heaps += 1
print(heaps)
"""


def test_the_arena_limit_keeps_threads_to_few_heaps() -> None:
    """Six threads that allocate get heaps of their own; with the limit at 1 they share the main one."""
    if malloc_trim() is None:
        pytest.skip("not glibc")  # CI runs on Debian (glibc): tests/unit/test_ci_skips.py fails a skip there

    def heaps(limit: int) -> int:
        out = subprocess.run([sys.executable, "-c", _ARENAS, str(limit)], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert heaps(0) >= 3  # glibc's default: an arena for each thread that allocates while the others live
    assert heaps(1) == 0  # every thread allocates from the main heap (brk)
