"""Phone numbers as the roster and the SMS/WhatsApp gateways compare them: E.164 (SPEC section 11).

People write Indonesian numbers as `0812-3456-7890`, `+62 812 3456 7890`, `62812...` or
`(0812) ...`; gateways send `+62...` or WhatsApp's `62...`. All of them become `+62812...`.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"\+[1-9]\d{7,14}")


def normalise_phone(raw: str) -> str | None:
    """The E.164 form of a number (`+62812...`), or None when it is not a phone number."""
    s = _SEPARATORS.sub("", raw or "")
    if s.startswith("00"):
        s = "+" + s[2:]
    elif s.startswith("0"):
        s = "+62" + s[1:]  # a national number: Indonesia's trunk prefix
    elif s.startswith("62"):
        s = "+" + s
    elif s.startswith("8") and 9 <= len(s) <= 12:
        s = "+62" + s  # a mobile number without its trunk 0
    if s.startswith("+620"):
        s = "+62" + s[4:]  # "+62 0812...": the trunk 0 kept after the country code
    return s if _E164.fullmatch(s) else None
