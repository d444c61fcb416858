"""What every provider callback shares: checked form fields and E.164 numbers."""

from __future__ import annotations

import functools

import phonenumbers

from .errors import BadCallback


def require(form, *names: str) -> None:
    """Raise `BadCallback` naming every field of `names` the form lacks."""
    missing = [name for name in names if name not in form]
    if missing:
        raise BadCallback(f"missing form field(s): {', '.join(missing)}")


@functools.lru_cache(maxsize=4096)
def e164(raw: str, field: str = "phoneNumber") -> str:
    """A phone number in E.164 (`+6281234567890`), or `BadCallback`.

    Cached: every hop of a session repeats the number, and parsing it is a
    good share of a hop's work.
    """
    raw = raw.strip()
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise BadCallback(f"{field} must be in E.164 form, like +6281234567890") from None
    if not phonenumbers.is_possible_number(number):
        raise BadCallback(f"{field} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
