"""Screen arithmetic: GSM-7 accounting and paging to the USSD limit.

A USSD string is 160 octets: 182 GSM 7-bit characters, or 80 in UCS-2 once a
single character falls outside GSM-7. Extension-table characters (`{}[]~\\|^€`)
take two septets. We count with the `gsm0338` codec rather than a hand-made
table.
"""

from __future__ import annotations

import math
import unicodedata

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


def paginate(body: str, budget: int, more: str, back: str, back_on_last: bool = True) -> list[str]:
    """Split `body` into pages that each fit `budget` septets.

    Lines are kept whole where they fit; a line longer than a page is broken
    at spaces (and, failing that, anywhere). Every page but the last ends with
    the `more` line; every page but the first ends with the `back` line,
    except the last when `back_on_last` is false (a closing screen, where no
    key can be pressed any more).
    """
    if ussd_cost(body) <= budget:
        return [body]
    tail_first = ussd_cost("\n" + more)
    tail_other = tail_first + ussd_cost("\n" + back)
    room = budget - tail_other
    if room < 10:
        raise ValueError(f"navigation lines leave no room on a {budget}-septet page")

    pieces: list[str] = []
    for line in body.split("\n"):
        pieces.extend(_break_line(line, room))

    pages: list[list[str]] = [[]]
    used = 0
    for piece in pieces:
        cost = ussd_cost(piece) + (1 if pages[-1] else 0)
        limit = budget - (tail_first if len(pages) == 1 else tail_other)
        if pages[-1] and used + cost > limit:
            pages.append([])
            cost = ussd_cost(piece)
            used = 0
        pages[-1].append(piece)
        used += cost

    out = []
    last = len(pages) - 1
    for number, lines in enumerate(pages):
        text = "\n".join(lines)
        if number < last:
            text += "\n" + more
        if number > 0 and (number < last or back_on_last):
            text += "\n" + back
        out.append(text)
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


def to_gsm7(text: str) -> str:
    """`text` with accents dropped where GSM-7 lacks the letter and other non-GSM characters removed.

    For text the gateway passes on (a staff note) rather than a caller's
    answer: one stray character would switch a whole SMS to UCS-2 and more
    than double its cost.
    """
    if is_gsm7(text):
        return text
    kept = []
    for char in text:
        if is_gsm7(char):
            kept.append(char)
            continue
        plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        kept.append(plain if plain and is_gsm7(plain) else "")
    return "".join(kept)
