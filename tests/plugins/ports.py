"""Ports for the servers the tests start: each pytest-xdist worker draws from its own range.

A port taken from the kernel with `bind(0)` and released at once can be handed to the other worker
before our child process binds it. The child then fails to bind, but the other worker's server
answers our readiness check, and the test talks to the wrong system (CI once saw a 404 from
`/v1/admin/tps/import` this way). Here each worker owns a disjoint block below the kernel's
ephemeral range (so no client's source port lands in it either), and a process never hands out
the same port twice.
"""

from __future__ import annotations

import itertools
import os
import socket

BASE = 20_000
BLOCK = 1_500  # per worker: 8 workers fit below 32768, where the ephemeral range starts


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; unset without xdist
    return int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0


_start = BASE + (_worker_index() % 8) * BLOCK
_candidates = itertools.cycle(range(_start, _start + BLOCK))
_given: set[int] = set()


def free_port() -> int:
    """A loopback port no other worker will be given, free now, not given before in this process."""
    for _ in range(BLOCK):
        port = next(_candidates)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port left in {_start}-{_start + BLOCK - 1}")
