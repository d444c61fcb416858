"""Screen arithmetic: GSM-7 accounting and paging to the USSD limit.

A USSD string is 160 octets: 182 GSM 7-bit characters, or 80 in UCS-2 once a
single character falls outside GSM-7. Extension-table characters (`{}[]~\\|^€`)
take two septets. We count with the `gsm0338` codec rather than a hand-made
table.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

USSD_LIMIT = 182
"""Septets on one USSD screen, prefix (`CON `/`END `) included."""

PREFIX_LENGTH = 4
"""`CON ` and `END ` both take four septets."""

_UCS2_LIMIT = 80

# The ASCII characters that take one septet, asked of the codec once: most
# screens are plain ASCII, and the codec encodes character by character in
# Python, so they skip it.
_ONE_SEPTET = frozenset(c for c in map(chr, range(128)) if len(c.encode("gsm03.38", "ignore")) == 1)


def is_gsm7(text: str) -> bool:
    """True when every character of `text` exists in GSM-7 (with its extension table)."""
    if text.isascii() and _ONE_SEPTET.issuperset(text):
        return True
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        return False
    return True


def ussd_cost(text: str) -> int:
    """The cost of `text` in septets of a 182-septet screen.

    GSM-7 text costs its septets; text that needs UCS-2 costs its share of
    the 80-character UCS-2 screen, scaled to septets, so that one budget
    serves both.
    """
    if text.isascii() and _ONE_SEPTET.issuperset(text):
        return len(text)
    try:
        return len(text.encode("gsm03.38"))
    except UnicodeEncodeError:
        return math.ceil(len(text) * USSD_LIMIT / _UCS2_LIMIT)


class Page(NamedTuple):
    """One screen's worth of a paged body.

    `lines` are the indexes of the body lines that begin on this page, so a
    caller can tell whether a key (a numbered choice) is shown here. `more`
    (the next-page line) is on every page but the last; `hint` (the keys that
    go back and home) where it belongs.
    """

    body: str
    lines: range
    more: str | None = None
    hint: str | None = None

    def render(self, budget: int, head: str | None = None) -> str:
        """The page as shown, `head` (a reason, a notice) on top, within `budget` septets.

        A paged layout keeps room for a head (see `paginate`'s `reserve`);
        one that still does not fit first takes the hint's place, then is cut
        at a word: the page itself is never cut.
        """
        tail = [line for line in (self.more, self.hint) if line]
        shown = "\n".join([*([head] if head else []), self.body, *tail])
        if not head or ussd_cost(shown) <= budget:
            return shown
        rest = "\n".join([self.body, *([self.more] if self.more else [])])
        room = budget - ussd_cost(rest) - 1
        if room < len("..."):
            return rest
        return f"{fit_sms(head, room)}\n{rest}"


def paginate(lines: list[str], budget: int, more: str, hint: str, *, reserve: int = 0,
             paged_reserve: int | None = None, hint_first: bool = True, hint_last: bool = True) -> list[Page]:
    """Split body `lines` into pages that each fit `budget` septets with `reserve` septets to spare.

    The reserve is room for a head line a page may get on top (the reason of
    a re-ask), so that the layout, and what page N holds, is the same whether
    or not a head is shown; `paged_reserve`, when given, is the room kept on
    each page of a body that takes several (a longer reason may come only
    there, like a choice shown on another page).

    Every page but the last ends with `more`; every page ends with `hint`,
    except the first when `hint_first` is false (a root screen: nothing to go
    back to) and the last when `hint_last` is false (a closing screen: no key
    can be pressed any more). A body that does not fit one page with its hint
    is paged rather than shown without it: lines are kept whole where they
    fit, and a line longer than a page is broken at spaces (and, failing
    that, anywhere).
    """
    body = "\n".join(lines)
    single = hint if hint_first and hint_last else None
    if ussd_cost(body) + (ussd_cost("\n" + single) if single else 0) <= budget - reserve:
        return [Page(body, range(len(lines)), hint=single)]
    budget -= reserve if paged_reserve is None else paged_reserve
    room = budget - ussd_cost("\n" + more) - ussd_cost("\n" + hint)
    if room < 10:
        raise ValueError(f"navigation lines leave no room on a {budget}-septet page")

    pages: list[list[tuple[int, bool, str]]] = [[]]
    used = 0
    for number, line in enumerate(lines):
        for chunk, piece in enumerate(_break_line(line, room)):
            cost = ussd_cost(piece) + (1 if pages[-1] else 0)
            if pages[-1] and used + cost > room:
                pages.append([])
                cost = ussd_cost(piece)
                used = 0
            pages[-1].append((number, chunk == 0, piece))
            used += cost

    out = []
    last = len(pages) - 1
    for page, pieces in enumerate(pages):
        begun = [number for number, first, _ in pieces if first]
        shows_hint = (page > 0 or hint_first) and (page < last or hint_last)
        out.append(Page("\n".join(piece for _, _, piece in pieces),
                        range(begun[0], begun[-1] + 1) if begun else range(0),
                        more if page < last else None, hint if shows_hint else None))
    return out


def _break_line(line: str, room: int) -> list[str]:
    if ussd_cost(line) <= room:
        return [line]
    chunks: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if ussd_cost(candidate) <= room:
            current = candidate
            continue
        if current:
            chunks.append(current)
        while ussd_cost(word) > room:
            cut = room
            while ussd_cost(word[:cut]) > room:
                cut -= 1
            chunks.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        chunks.append(current)
    return chunks


def shorten(values: dict[str, str], fits: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """`values` with the longest cut (at a word, with `...`) to one common limit, as high as `fits` allows.

    `fits(values)` tells whether a rendering with those values fits; values
    shorter than the limit are kept whole, so a long answer gives way before
    a short one. When even `...` for every value does not fit, they are all
    kept whole: the rendering will take pages anyway, and then it may as
    well show everything.
    """
    if not values or fits(values) or not fits(_capped(values, 0)):
        return values
    low, high = 0, max(ussd_cost(value) for value in values.values())
    while low < high:
        limit = (low + high + 1) // 2
        if fits(_capped(values, limit)):
            low = limit
        else:
            high = limit - 1
    return _capped(values, low)


def _capped(values: dict[str, str], limit: int) -> dict[str, str]:
    return {name: fit_sms(value, limit) if ussd_cost(value) > limit else value for name, value in values.items()}


SMS_SEGMENT_GSM7 = 160
SMS_SEGMENT_UCS2 = 70
_CONCAT_GSM7 = 153
_CONCAT_UCS2 = 67


def sms_segments(text: str) -> tuple[str, int]:
    """The cheapest encoding of `text` and how many SMS segments it takes.

    GSM-7 (extension characters count twice) while every character allows
    it; otherwise UCS-2, counted in UTF-16 units. One segment holds 160
    GSM-7 or 70 UCS-2 units; a concatenated part 153 or 67.
    """
    if is_gsm7(text):
        units, single, part, encoding = ussd_cost(text), SMS_SEGMENT_GSM7, _CONCAT_GSM7, "GSM-7"
    else:
        units, single, part, encoding = len(text.encode("utf-16-le")) // 2, SMS_SEGMENT_UCS2, _CONCAT_UCS2, "UCS-2"
    return encoding, 1 if units <= single else math.ceil(units / part)


def fit_sms(text: str, limit: int = SMS_SEGMENT_GSM7) -> str:
    """`text` cut at a word so that it fits `limit` GSM-7 septets, with `...` when cut."""
    if ussd_cost(text) <= limit:
        return text
    cut = text
    while cut and ussd_cost(cut + "...") > limit:
        cut = cut[: cut.rstrip().rfind(" ")] if " " in cut.rstrip() else cut[:-1]
    return cut.rstrip() + "..."

