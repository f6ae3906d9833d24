"""What the registry generators share (scripts/gen_serang.py, scripts/gen_national.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def share_out(total: int, weights: Sequence[float], minimum: int | Sequence[int] = 0) -> list[int]:
    """Integers proportional to weights that add up to total, each at least its `minimum` (one for all, or
    one each) when total allows (else no minimum); the largest remainder method for what is left."""
    floor = [minimum] * len(weights) if isinstance(minimum, int) else list(minimum)
    if total < sum(floor):
        floor = [0] * len(weights)
    rest = total - sum(floor)
    whole = sum(weights)
    exact = [rest * w / whole for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: rest - sum(counts)]:
        counts[i] += 1
    return [c + f for c, f in zip(counts, floor, strict=True)]
