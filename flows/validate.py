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
from .typed import to_gsm7


@dataclass(frozen=True)
class Valid:
    value: str


@dataclass(frozen=True)
class Invalid:
    reason: str
    values: dict[str, Any] = field(default_factory=dict)


Outcome = Valid | Invalid
Validator = Callable[[str, dt.date, Mapping[str, str]], Outcome]

MESSAGES = (
    N_("invalid.digits"), N_("invalid.digits_between"), N_("invalid.date"), N_("invalid.date_future"),
    N_("invalid.date_young"), N_("invalid.date_nik"), N_("invalid.nik_region"), N_("invalid.nik_birth"),
    N_("invalid.nik_serial"), N_("invalid.text_empty"), N_("invalid.text_short"), N_("invalid.text_long"),
    N_("invalid.code"),
)
"""Every reason a validator may give (the catalog ids of its re-asks)."""

PROVINCES = frozenset(str(code) for code in (*range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66),
                                             *range(71, 77), 81, 82, *range(91, 97)))
"""Province codes, the first two digits of a NIK: Kemendagri's 38 provinces (2022-2024).

91-96 are Papua's six provinces since 2022; NIKs issued before keep their old
codes, which were 91 (Papua Barat) and 94 (Papua), both still in the list.
"""

_SPACES = re.compile(r" +")
_SEPARATORS = str.maketrans("", "", " -/.")


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


def date(past: bool = False, earliest: int = 1900, min_age: int | None = None,
         agrees_with: str | None = None) -> Validator:
    """A real calendar date typed as DDMMYYYY; with `past`, not after today.

    `min_age`: the date is a birth date and the person must be at least this
    many whole years old on the day of the turn (born on 29 February, one
    comes of age on 1 March in common years). `agrees_with`: the answer
    holding the caller's NIK, whose birth-date part must match the date; the
    check is skipped when that answer was not given.
    """
    if min_age is not None and (type(min_age) is not int or not 0 <= min_age <= 150):
        raise ValueError("min_age must be a whole number of years, 0-150")
    if agrees_with is not None and not isinstance(agrees_with, str):
        raise ValueError("agrees_with must name an answer")

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = raw.translate(_SEPARATORS)
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
        if agrees_with in answers and nik_birth(answers[agrees_with]) != (when.day, when.month, when.year % 100):
            return Invalid(N_("invalid.date_nik"))
        if min_age is not None and age(when, today) < min_age:
            return Invalid(N_("invalid.date_young"), {"age": min_age})
        return Valid(when.isoformat())

    return check


def age(born: dt.date, on: dt.date) -> int:
    """Whole years from `born` to `on`."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def nik() -> Validator:
    """An Indonesian NIK: 16 digits (spaces, dots and dashes ignored) whose parts are plausible.

    Digits 1-6 are where it was issued: a real province code, then a regency
    and a district that are not 00; 7-12 the birth date DDMMYY, with 40 added
    to a woman's day; 13-16 a serial from 0001. Without the population
    register at hand this cannot tell a real NIK from a plausible one; it
    catches the slips of a thumb on a keypad, each with its own reason.
    """

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = raw.translate(_SEPARATORS)
        if len(value) != 16 or not value.isascii() or not value.isdigit():
            return Invalid(N_("invalid.digits"), {"length": 16})
        if value[:2] not in PROVINCES or "00" in (value[2:4], value[4:6]):
            return Invalid(N_("invalid.nik_region"))
        if nik_birth(value) is None:
            return Invalid(N_("invalid.nik_birth"))
        if value[12:] == "0000":
            return Invalid(N_("invalid.nik_serial"))
        return Valid(value)

    return check


def nik_birth(value: str) -> tuple[int, int, int] | None:
    """The birth date in a NIK as (day, month, two-digit year), a woman's +40 undone; None if it is none.

    The century is not in a NIK: a day is accepted when it exists in 20YY,
    a leap year whenever 19YY is.
    """
    if len(value) != 16 or not value.isascii() or not value.isdigit():
        return None
    day, month, year = int(value[6:8]), int(value[8:10]), int(value[10:12])
    day = day - 40 if day > 40 else day
    try:
        dt.date(2000 + year, month, day)
    except ValueError:
        return None
    return day, month, year


def text(max: int, min: int = 1) -> Validator:
    """Free text of `min` to `max` characters on one line, in GSM-7 (what every handset renders).

    What a phone keyboard adds (curly quotes, dashes, accents GSM-7 lacks) is
    replaced by its look-alike and what has none (emoji) is dropped, never a
    refusal of the whole answer; the limits count the text as it is kept.
    """
    if min < 1 or min > max:
        raise ValueError("need 1 <= min <= max")

    def check(raw: str, today: dt.date, answers: Mapping[str, str]) -> Outcome:
        value = _SPACES.sub(" ", to_gsm7(raw)).strip()
        if not value:
            return Invalid(N_("invalid.text_empty"))
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
    "nik": nik,
    "text": text,
    "code": code,
}
"""Validator types a menu may name in `validate: {type: ...}`."""

MAX_LENGTH = {"digits": lambda o: o.get("length") or o.get("max") or 32, "date": lambda o: 10,
              "nik": lambda o: 16, "text": lambda o: o["max"], "code": lambda o: o.get("max", 8)}
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
