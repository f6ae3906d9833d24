"""Short incident codes (SPEC section 11): what a field officer types in `SELESAI K7Q2 ...`.

A code is five characters of an alphabet with no look-alikes (no 0/O, 1/I/L), so one read aloud
over a bad line or copied from a small screen is typed right. The space of 31**5 codes is cut
into `MAX_PARTITIONS` disjoint blocks, one per partition of `siaga.field-events`: each partition
owner draws only from its own block, so two owners never hand out the same code, with no
coordination between them. Inside its block an owner starts at a point derived from the incident
id (so a replayed event gets the same code) and steps on past codes its open incidents hold: a
code is unique among open incidents and free again once its incident is resolved.

A code has at least one digit and one letter, so a word of the message (`SELESAI SUDAH aman`)
or a TPS number is never read as a code; three codes in four qualify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 5
SPACE: int = len(ALPHABET) ** LENGTH  # 28,629,151
MAX_PARTITIONS = 64  # topics may have up to this many partitions; each block holds 447,330 codes
BLOCK = SPACE // MAX_PARTITIONS
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def encode(n: int) -> str:
    """The code of a number in [0, SPACE)."""
    if not 0 <= n < SPACE:
        raise ValueError(f"code number {n} is outside [0, {SPACE})")
    chars = []
    for _ in range(LENGTH):
        n, r = divmod(n, len(ALPHABET))
        chars.append(ALPHABET[r])
    return "".join(reversed(chars))


def decode(code: str) -> int:
    """The number of a code (case-insensitive); ValueError if it is not one."""
    code = code.strip().upper()
    if len(code) != LENGTH or any(c not in _INDEX for c in code):
        raise ValueError(f"not a short code: {code!r}")
    n = 0
    for c in code:
        n = n * len(ALPHABET) + _INDEX[c]
    return n


def is_code(text: str) -> bool:
    """Whether the text is a well-formed short code: of the alphabet, with a digit and a letter."""
    try:
        decode(text)
    except ValueError:
        return False
    return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def partition_of_code(code: str) -> int:
    """Which partition's block a code lies in."""
    return decode(code) // BLOCK


def new_code(partition: int, seed: str, taken: Callable[[str], bool]) -> str:
    """A code from `partition`'s block that `taken` says no open incident holds.

    `seed` (the incident id) picks where in the block to start, so the same incident gets the
    same code when its events are applied again.
    """
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} is outside the {MAX_PARTITIONS} that codes have blocks for")
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % BLOCK
    for step in range(BLOCK):
        code = encode(partition * BLOCK + (start + step) % BLOCK)
        if is_code(code) and not taken(code):
            return code
    raise RuntimeError(f"every code of partition {partition}'s block is held by an open incident")
