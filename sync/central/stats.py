"""Service performance: how many requests came in, how many are still open, how fast and how well they were resolved.

Computed from plain rows (the store's `performance_rows`: one dict per
request received in the period, no answer and no phone), so that the
figures can be checked on their own. The office (`/office/stats`) groups
them by service, category, village and agency; the public page (`/public`)
by service, category and agency only (a typed place is personal).

The period is a range of whole UTC days, both ends included, by the day a
request was received (`created_at`). Every figure is about the requests
received in it, as they stand now:

    received        how many
    open            of those, how many are not final now (not resolved, not rejected)
    target          how many have a target (`due_at`) that is decided: they were resolved, or the
                    target has passed; a request whose deadline is still ahead is not counted yet
    within_target   of `target`, how many were first resolved at or before `due_at`
    resolved        how many were resolved at least once (`first_resolved_at`)
    median_hours    time to resolution, from received to the first resolution, in hours: the
    p90_hours       50th and 90th percentile by nearest rank (of n times in order, the one at
                    position ceil(p/100 * n), counting from 1; the median of an even count is the
                    lower middle one); always a time some request really took
    reopened        of `resolved`, how many a villager reopened ("not fixed") at least once
    ratings         how many villagers gave a rating (1-5); `rating_mean` their mean
    answered        how many answered "is it fixed?"; `fixed` how many of them said it is

Shares are percentages of their own count (`within_target` of `target`,
`reopened` of `resolved`, `fixed` of `answered`). Every derived number is
rounded once, half up, from exact integers (milliseconds, counts): hours and
percentages to one decimal, the mean rating to two. The page, the JSON and
the CSV show these same rounded numbers; a figure with nothing to compute
it from is None (null in JSON, empty in CSV).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Mapping

from ..database import stamp
from ..pages import N_

FINAL = ("resolved", "rejected")
GROUPS = ("service", "category", "village", "agency")
PUBLIC_GROUPS = ("service", "category", "agency")
FIGURES = ("received", "open", "target", "within_target", "within_target_pct", "resolved", "median_hours",
           "p90_hours", "reopened", "reopened_pct", "ratings", "rating_mean", "answered", "fixed", "fixed_pct")
"""Every figure of a group, in the order the CSV and the tables show them."""
DEFAULT_DAYS = 30
MAX_DAYS = 366
"""The longest period one request may ask for: the rows of a year at most."""
BAD_DATE = N_("web.stats.bad_date")
BAD_RANGE = N_("web.stats.bad_range")
TOO_LONG = N_("web.stats.too_long")
MS_PER_HOUR = 3_600_000
TENTH = Decimal("0.1")
HUNDREDTH = Decimal("0.01")


class PeriodError(ValueError):
    """The period asked for cannot be shown; `args[0]` is the message id that says why."""


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `first` to `last`, both included."""

    first: dt.date
    last: dt.date

    @property
    def since(self) -> str:
        """The first moment in the period, as the store writes times."""
        return stamp(dt.datetime.combine(self.first, dt.time(), dt.timezone.utc))

    @property
    def until(self) -> str:
        """The first moment after the period."""
        return stamp(dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), dt.timezone.utc))


def period(typed_from: str, typed_to: str, today: dt.date) -> Period:
    """The period of two typed dates (`YYYY-MM-DD`, empty for the default: the last 30 days to `today`).

    Raises `PeriodError` with the message id of the reason: a date that is no
    date, a start after the end, or more than `MAX_DAYS` days.
    """
    last = _date(typed_to) if typed_to else today
    first = _date(typed_from) if typed_from else last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise PeriodError(BAD_RANGE)
    if (last - first).days + 1 > MAX_DAYS:
        raise PeriodError(TOO_LONG)
    return Period(first, last)


def _date(text: str) -> dt.date:
    text = text.strip()
    if len(text) != 10 or not text.isascii():
        raise PeriodError(BAD_DATE)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PeriodError(BAD_DATE) from None


def nearest_rank(values: list[int], percent: int) -> int | None:
    """The `percent`-th percentile of `values` by nearest rank: the ceil(percent/100 * n)-th smallest."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _ms(start: str, end: str) -> int:
    return (_when(end) - _when(start)) // dt.timedelta(milliseconds=1)


def _round(numerator: int, denominator: int, step: Decimal) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(step, rounding=ROUND_HALF_UP)


def _pct(part: int, whole: int) -> Decimal | None:
    return _round(part * 100, whole, TENTH)


def figures(rows: Iterable[Mapping], now: str) -> dict:
    """Every figure (`FIGURES`) of `rows`; `now` (a store stamp) decides which targets have passed."""
    rows = list(rows)
    resolved = [row for row in rows if row["first_resolved_at"]]
    decided = [row for row in rows if row["due_at"] and (row["first_resolved_at"] or row["due_at"] < now)]
    within = [row for row in decided if row["first_resolved_at"] and row["first_resolved_at"] <= row["due_at"]]
    times = [_ms(row["created_at"], row["first_resolved_at"]) for row in resolved]
    reopened = sum(1 for row in resolved if row["reopened"])
    ratings = [row["rating"] for row in rows if row["rating"] is not None]
    answered = [row["fixed"] for row in rows if row["fixed"] is not None]
    median, p90 = nearest_rank(times, 50), nearest_rank(times, 90)
    return {
        "received": len(rows), "open": sum(1 for row in rows if row["status"] not in FINAL),
        "target": len(decided), "within_target": len(within), "within_target_pct": _pct(len(within), len(decided)),
        "resolved": len(resolved),
        "median_hours": None if median is None else _round(median, MS_PER_HOUR, TENTH),
        "p90_hours": None if p90 is None else _round(p90, MS_PER_HOUR, TENTH),
        "reopened": reopened, "reopened_pct": _pct(reopened, len(resolved)),
        "ratings": len(ratings), "rating_mean": _round(sum(ratings), len(ratings), HUNDREDTH),
        "answered": len(answered), "fixed": sum(answered), "fixed_pct": _pct(sum(answered), len(answered)),
    }


def performance(rows: Iterable[Mapping], now: str, groups: tuple[str, ...] = GROUPS) -> dict:
    """`{"total": figures, "groups": {group: [{"key": value, **figures}, ...]}}` for each of `groups`.

    A group's rows are those with the same value of that key (None: not
    known), most received first, then by key. A category is one service's
    (`service/value`: two services may both have an `other`); requests of a
    service without categories are in no category.
    """
    rows = list(rows)
    grouped = {}
    for group in groups:
        by_key: dict = {}
        for row in rows:
            if group != "category" or row["category"] is not None:
                by_key.setdefault(key_of(row, group), []).append(row)
        grouped[group] = sorted(({"key": key, **figures(members, now)} for key, members in by_key.items()),
                                key=lambda entry: (-entry["received"], entry["key"] is None, entry["key"] or ""))
    return {"total": figures(rows, now), "groups": grouped}


def key_of(row: Mapping, group: str) -> str | None:
    """The key `row` is grouped by in `group`."""
    return f"{row['service']}/{row['category']}" if group == "category" else row[group]


def plain(value):
    """A figure as JSON carries it: a count as is, a rounded Decimal as a number with its decimals."""
    return float(value) if isinstance(value, Decimal) else value
