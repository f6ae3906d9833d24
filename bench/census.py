"""A census of a running process's Python objects, for finding what grows in a soak.

`bench.soak --census 10,29` starts dispatch with a `sitecustomize` that calls `start()`: at each
of the given minutes a thread counts what the cyclic collector tracks (`gc.get_objects()`) by type,
with the shallow size of each (`sys.getsizeof`), and the untracked objects those containers hold
directly (strings, bytes, numbers, datetimes: the collector does not track them), each counted
once. It also lists the largest containers. One JSON line per census goes to SIAGA_CENSUS_OUT.

A census holds the GIL for a few seconds and allocates a set of every object's id, so a run with
it is a diagnostic run: its RSS figures are not the soak's result. `tracemalloc` would say where
each block was allocated, but it slowed dispatch to a sixth of its rate.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

LARGEST = 25


def take() -> dict[str, Any]:
    """Counts and shallow bytes by type of the tracked containers and the untracked objects they hold."""
    started = time.monotonic()
    objects = gc.get_objects()
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    held_count: Counter[str] = Counter()
    held_size: Counter[str] = Counter()
    seen: set[int] = set()
    largest: list[tuple[int, str, int]] = []
    for o in objects:
        name = type(o).__name__
        n = sys.getsizeof(o)
        count[name] += 1
        size[name] += n
        if n > 4096:
            largest.append((n, name, len(o) if hasattr(o, "__len__") else -1))
        for r in gc.get_referents(o):
            if gc.is_tracked(r) or id(r) in seen:
                continue
            seen.add(id(r))
            held = type(r).__name__
            held_count[held] += 1
            held_size[held] += sys.getsizeof(r)
    del objects
    largest.sort(reverse=True)
    return {
        "took_s": round(time.monotonic() - started, 2),
        "tracked": {k: [count[k], size[k]] for k, _ in size.most_common(30)},
        "untracked": {k: [held_count[k], held_size[k]] for k, _ in held_size.most_common(15)},
        "largest": [[n, name, length] for n, name, length in largest[:LARGEST]],
    }


def start() -> None:
    """Take a census at each of SIAGA_CENSUS_AT's minutes after start, appending to SIAGA_CENSUS_OUT."""
    at = [float(m) * 60 for m in os.environ.get("SIAGA_CENSUS_AT", "").split(",") if m.strip()]
    out = os.environ.get("SIAGA_CENSUS_OUT")
    if not at or not out:
        return
    began = time.monotonic()

    def run() -> None:
        for when in sorted(at):
            time.sleep(max(0.0, began + when - time.monotonic()))
            result = {"minute": round(when / 60, 1), **take()}
            with open(out, "a") as f:
                f.write(json.dumps(result) + "\n")

    threading.Thread(target=run, name="census", daemon=True).start()
