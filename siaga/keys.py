"""Bus keys: which messages must stay in order, and so share a partition (SPEC section 3).

Field events (and commands) are keyed by kecamatan, the unit of spread detection: one partition
owner then decides every TPS, incident and area incident of a kecamatan, in order (per-TPS order
follows, since a TPS lies in one kecamatan). A kecamatan is named by (provinsi, kabupaten,
kecamatan), since names repeat across the country; a registry that does not record the first two
yet (TPS rows without them) keys by the kecamatan name alone, which is the same triple with the
first two empty, written as the name.
"""

from __future__ import annotations

SEP = "/"


def kecamatan_key(kecamatan: str, *, kabupaten: str = "", provinsi: str = "") -> str:
    """The bus key of a kecamatan: "provinsi/kabupaten/kecamatan", or the name when the region is unknown."""
    if not provinsi and not kabupaten:
        return kecamatan
    return SEP.join((provinsi, kabupaten, kecamatan))
