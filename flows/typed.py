"""Text villagers actually type, made GSM-7: look-alikes for what phone keyboards add.

Smartphone keyboards and copy-paste bring curly quotes (`Pak Ma’ruf`),
dashes, ellipses, non-breaking spaces, fullwidth forms and accented letters
that GSM-7 lacks. One such character turns a USSD screen or an SMS into UCS-2,
which holds less than half as much, so it was refused and the villager had to
guess which character was wrong. Now each is replaced by the GSM-7 character it
looks like; what has no look-alike (emoji, other scripts) is dropped and the
rest kept.

The result is one line: a line break, a tab or any other Unicode space becomes
a space (an answer is shown inside a screen, one line per answer), and the
remaining control and format characters, which show nothing, go.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .text import is_gsm7

LOOK_ALIKES = {
    # quotes and primes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u2035": "'",
    "\u02bc": "'", "\u02bb": "'", "\u02b9": "'", "\u00b4": "'", "`": "'", "\u2039": "'", "\u203a": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u2036": '"',
    "\u02ba": '"', "\u00ab": '"', "\u00bb": '"',
    # hyphens, dashes and the minus sign
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2043": "-", "\ufe58": "-",
    # a slash inside compatibility forms (1⁄2 from ½)
    "\u2044": "/", "\u2215": "/",
    # letters without a decomposition to a GSM-7 letter
    "\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d", "\u0131": "i", "\u0127": "h",
    "\u0126": "H",
}
"""Characters that do not decompose to GSM-7, and the one GSM-7 character each looks like."""

_NOT_PLAIN = re.compile(r"[^\S ]|[\x00-\x1f\x7f]")


def to_gsm7(text: str) -> str:
    """`text` in GSM-7, on one line: look-alikes for what GSM-7 lacks, the rest kept as typed.

    Text that is already GSM-7 on one line comes back unchanged, so the
    result never costs more septets than the text needs.
    """
    text = unicodedata.normalize("NFC", text)  # an accent typed as a separate mark joins its letter (é)
    if is_gsm7(text) and not _NOT_PLAIN.search(text):
        return text
    return "".join(map(_look_alike, text))


@lru_cache(maxsize=4096)
def _look_alike(char: str) -> str:
    """One character as GSM-7: itself, its look-alike, its letters without accents, or nothing."""
    if char.isspace():
        return " "
    if unicodedata.category(char) in ("Cc", "Cf"):
        return ""
    if is_gsm7(char):
        return char
    if char in LOOK_ALIKES:
        return LOOK_ALIKES[char]
    plain = "".join(LOOK_ALIKES.get(part, part) for part in unicodedata.normalize("NFKD", char)
                    if not unicodedata.combining(part))
    if not plain.strip() or _NOT_PLAIN.search(plain) or not is_gsm7(plain):
        return ""  # a lone accent (¨), or a character with no GSM-7 look-alike (an emoji)
    return plain
