"""Validators: turn one raw USSD input into a clean value, or a reason to re-ask.

Each validator is built once from its menu declaration (`validate:` in a
screen) and called with the raw input, the date of the turn and the answers
given so far in the session (read-only: a check that depends on an earlier
answer, like a birth date that must agree with the NIK). It returns a
`Valid` with the value to save, or an `Invalid` with the catalog message id of
the reason and the values that message quotes.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .catalog import N_
from .errors import MenuError
from .text import is_gsm7


@dataclass(frozen=True)
class Valid:
    value: str


@dataclass(frozen=True)
class Invalid:
    reason: str
    values: dict[str, Any] = field(default_factory=dict)


Outcome = Valid | Invalid
Validator = Callable[[str, dt.date, Mapping[str, str]], Outcome]

_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def digits(length: int | None = None, min: int | None = None, max: int | None = None) -> Validator:
    """Only digits (spaces ignored): exactly `length`, or between `min` and `max`."""
    low = length if length is not None else (min or 1)
    high = length if length is not None else (max or 32)
    if low > high:
        raise ValueError("min is greater than max")

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = raw.replace(" ", "")
        if not value.isascii() or not value.isdigit() or not low <= len(value) <= high:
            if low == high:
                return Invalid(N_("invalid.digits"), {"length": low})
            return Invalid(N_("invalid.digits_between"), {"min": low, "max": high})
        return Valid(value)

    return check


def date(past: bool = False, earliest: int = 1900) -> Validator:
    """A real calendar date typed as DDMMYYYY; with `past`, not after today."""

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = raw.replace(" ", "").replace("-", "").replace("/", "").replace(".", "")
        if len(value) != 8 or not value.isascii() or not value.isdigit():
            return Invalid(N_("invalid.date"))
        try:
            when = dt.date(int(value[4:]), int(value[2:4]), int(value[:2]))
        except ValueError:
            return Invalid(N_("invalid.date"))
        if when.year < earliest:
            return Invalid(N_("invalid.date"))
        if past and when > today:
            return Invalid(N_("invalid.date_future"))
        return Valid(when.isoformat())

    return check


def text(max: int, min: int = 1) -> Validator:
    """Free text of `min` to `max` characters, one line, GSM-7 only (what a handset renders)."""
    if min < 1 or min > max:
        raise ValueError("need 1 <= min <= max")

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        if _CONTROL.search(raw):
            return Invalid(N_("invalid.text_chars"))
        value = _SPACES.sub(" ", raw).strip()
        if not value:
            return Invalid(N_("invalid.text_empty"))
        if not is_gsm7(value):
            return Invalid(N_("invalid.text_chars"))
        if len(value) < min:
            return Invalid(N_("invalid.text_short"), {"min": min})
        if len(value) > max:
            return Invalid(N_("invalid.text_long"), {"max": max})
        return Valid(value)

    return check


def code(min: int = 6, max: int = 8) -> Validator:
    """A reference code: letters and digits, case-insensitive, spaces and dashes ignored."""

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = raw.replace(" ", "").replace("-", "").upper()
        if not (min <= len(value) <= max) or not value.isascii() or not value.isalnum():
            return Invalid(N_("invalid.code"), {"min": min, "max": max})
        return Valid(value)

    return check


KINDS: dict[str, Callable[..., Validator]] = {
    "digits": digits,
    "date": date,
    "text": text,
    "code": code,
}
"""Validator types a menu may name in `validate: {type: ...}`."""

MAX_LENGTH = {"digits": lambda o: o.get("length") or o.get("max") or 32, "date": lambda o: 10,
              "text": lambda o: o["max"], "code": lambda o: o.get("max", 8)}
"""The longest value each validator can save: the worst case for screen lengths."""


def build(spec: Any, where: str) -> tuple[Validator, int]:
    """Compile a `validate:` declaration into a validator and its longest value."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise MenuError(f"{where}: 'validate' must be a mapping with a 'type'")
    options = dict(spec)
    kind = options.pop("type")
    if kind not in KINDS:
        raise MenuError(f"{where}: unknown validator type {kind!r} (known: {', '.join(KINDS)})")
    try:
        validator = KINDS[kind](**options)
    except (TypeError, ValueError) as error:
        raise MenuError(f"{where}: bad options for validator {kind!r}: {error}") from None
    return validator, int(MAX_LENGTH[kind](spec))
