"""SMS keyword commands and the texts the gateway sends by SMS; pure.

Keywords are words in the catalogs (`sms.keyword.status` is CEK in
Indonesian, STATUS in English, HALI in Swahili) and every language's word
works for every caller: a villager may text STATUS to an Indonesian
gateway. Case, spacing and a trailing `:` or `.` do not matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import N_, Catalog
from .errors import CatalogError
from .text import SMS_SEGMENT_GSM7, fit_sms, to_gsm7, ussd_cost

COMMANDS = {
    "status": N_("sms.keyword.status"),
    "help": N_("sms.keyword.help"),
    "report": N_("sms.keyword.report"),
    "language": N_("sms.keyword.language"),
    "stop": N_("sms.keyword.stop"),
    "start": N_("sms.keyword.start"),
}
"""Command name -> catalog id of its keyword."""

CATEGORIES = {
    "road": N_("sms.category.road"),
    "streetlight": N_("sms.category.streetlight"),
    "garbage": N_("sms.category.garbage"),
    "water": N_("sms.category.water"),
    "other": N_("sms.category.other"),
}
"""Problem category (a value of the report menu's `category` screen) -> catalog id of its SMS word."""

SMS_MESSAGES = (
    N_("sms.help"), N_("sms.confirmation"), N_("sms.notice"), N_("sms.report.usage"),
    N_("sms.language.usage"), N_("sms.stop.done"), N_("sms.start.done"),
)

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Command:
    """A parsed SMS: the command (`unknown` when none), the language of its keyword, the rest."""

    name: str
    lang: str | None
    argument: str


class Keywords:
    """Every language's keywords, built once from the catalogs."""

    def __init__(self, catalog: Catalog):
        self.commands = self._table(catalog, COMMANDS)
        self.categories = self._table(catalog, CATEGORIES)

    @staticmethod
    def _table(catalog: Catalog, ids: dict[str, str]) -> dict[str, tuple[str, str]]:
        table: dict[str, tuple[str, str]] = {}
        for name, msgid in ids.items():
            for lang in catalog.languages:
                word = catalog.text(lang, msgid).strip().upper()
                if not word or " " in word:
                    raise CatalogError(f"catalog {lang!r}: {msgid} must be one word, not {word!r}")
                known = table.get(word)
                if known and known[0] != name:
                    raise CatalogError(f"catalog {lang!r}: {word} means both {known[0]} and {name}")
                table.setdefault(word, (name, lang))
        return table

    def parse(self, text: str) -> Command:
        """What an incoming SMS asks for."""
        text = _SPACES.sub(" ", text).strip()
        head, _, rest = text.partition(" ")
        found = self.commands.get(head.rstrip(":.,!").upper())
        if found is None:
            return Command("unknown", None, text)
        return Command(found[0], found[1], rest.strip())

    def category(self, word: str) -> str | None:
        """The problem category an SMS word names, in any language."""
        found = self.categories.get(word.rstrip(":.,").upper())
        return found[0] if found else None


def notice_text(catalog: Catalog, lang: str, *, ref: str, service: str, status: str, note: str) -> str:
    """A status-change notice that fits one GSM-7 segment, the staff note cut to fit."""
    bare = catalog.text(lang, "sms.notice", ref=ref, service=service, status=status, note="").rstrip()
    note = to_gsm7(note)
    room = SMS_SEGMENT_GSM7 - ussd_cost(bare) - 1
    if not note or room < 8:
        return fit_sms(bare)
    return fit_sms(catalog.text(lang, "sms.notice", ref=ref, service=service, status=status,
                                note=fit_sms(note, room)))
