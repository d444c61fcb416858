"""Every screen of every flow, in every language, pages included, fits one USSD screen.

Answers are the worst case each validator allows (the longest labels, the
longest dates, free text of two-septet characters), so a translation that
pushes any screen past 182 characters fails here.
"""

import datetime as dt

import pytest
from babel.dates import format_date

from flows import Context, Engine
from flows.engine import RECENT_LIMIT, STATUS_LABELS
from flows.text import USSD_LIMIT, ussd_cost
from gateway.config import data_root

LANGUAGES = ["id", "en", "sw"]
REASONS = ["invalid.digits", "invalid.digits_between", "invalid.date", "invalid.date_future",
           "invalid.text_chars", "invalid.text_empty", "invalid.text_short", "invalid.text_long",
           "invalid.code", "invalid.choice", "invalid.page"]


@pytest.fixture(scope="module")
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", LANGUAGES, "id")


class WorstLookup:
    def __init__(self, engine, lang):
        longest_title = max((f.name for f in engine.flows.values()),
                            key=lambda name: len(engine.catalog.text(lang, engine.flows[name].title)))
        longest_status = max(STATUS_LABELS, key=lambda s: len(engine.catalog.text(lang, STATUS_LABELS[s])))
        self.item = {"ref": "KKKKKKKK", "service": longest_title, "status": longest_status,
                     "created": dt.date(2026, 9, 30)}

    def taken(self, service, answer, value):
        return False

    def recent(self, limit):
        return [self.item] * limit

    def find(self, ref):
        return self.item


def worst_answers(engine, flow, lang):
    answers = {}
    for screen in flow.screens.values():
        if not screen.save:
            continue
        if screen.choices:
            answers[screen.save] = max((c.value for c in screen.choices),
                                       key=lambda v: len(next(engine.catalog.text(lang, c.label)
                                                              for c in screen.choices if c.value == v)))
        elif screen.choices_from:
            answers[screen.save] = max(engine.languages, key=lambda l: len(engine.catalog.language_name(l)))
        elif screen.check == "date":
            answers[screen.save] = max((dt.date(2000, m, 28) for m in range(1, 13)),
                                       key=lambda d: len(format_date(d, "medium", locale=lang))).isoformat()
        elif screen.check == "digits":
            answers[screen.save] = "9" * screen.longest
        else:
            answers[screen.save] = "€" * screen.longest  # an extension character: two septets each
    return answers


def all_sessions(engine, lang):
    for flow in engine.flows.values():
        answers = worst_answers(engine, flow, lang)
        for screen in flow.screens.values():
            yield f"{flow.name}/{screen.name}", {"flow": flow.name, "screen": screen.name, "page": 0,
                                                "answers": answers, "lang": lang, "ref": "KKKKKKKK"}
        if flow.submits:
            saved = {"flow": flow.name, "screen": flow.start, "page": 0, "answers": answers, "lang": lang}
            yield f"resume offer of {flow.name}", {"flow": "@resume", "screen": "offer", "page": 0,
                                                  "answers": {}, "lang": lang, "saved": saved}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_every_page_fits_182(engine, lang):
    ctx = Context(dt.date(2026, 11, 28), WorstLookup(engine, lang), lambda: "KKKKKKKK")
    longest_reason = max((engine.catalog.text(lang, r, length=16, min=10, max=100) for r in REASONS), key=len)
    checked = 0
    for name, session in all_sessions(engine, lang):
        for reason in (None, longest_reason):
            pages = engine.pages(session, ctx, reason=reason)
            for number, page in enumerate(pages, 1):
                body = "CON " + page
                assert ussd_cost(body) <= USSD_LIMIT, f"{lang} {name} page {number}: {ussd_cost(body)} septets"
                assert page.strip(), f"{lang} {name} page {number} is empty"
                checked += 1
    assert checked > 60


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_recent_list_shows_every_item(engine, lang):
    ctx = Context(dt.date(2026, 11, 28), WorstLookup(engine, lang), lambda: "KKKKKKKK")
    session = {"flow": "status", "screen": "recent", "page": 0, "answers": {}, "lang": lang}
    pages = engine.pages(session, ctx)
    assert len(pages) > 1
    assert "\n".join(pages).count("KKKKKKKK") == RECENT_LIMIT


def test_screens_cost_counts_extension_characters_twice():
    assert ussd_cost("abc") == 3
    assert ussd_cost("€{}") == 6
    assert ussd_cost("é") == 1
    assert ussd_cost("✓" * 80) == USSD_LIMIT  # UCS-2: 80 characters fill a screen
