"""Every screen of every flow, in every language, pages included, fits one USSD screen with its hint.

Answers are the worst case each validator allows (the longest labels, the
longest dates, free text of two-septet characters), statuses carry the
longest staff note the central backend takes, and every page is measured
with the longest reason it can get on top; so a translation that pushes
any screen past 182 characters fails here.
"""

import datetime as dt

import pytest
from babel.dates import format_date

from flows import Context, Engine
from flows.engine import PAGED_REASONS, REASONS, RECENT_LIMIT, STATUS_LABELS
from flows.text import USSD_LIMIT, ussd_cost
from gateway.config import data_root

LANGUAGES = ["id", "en", "sw"]
WORST_NOTE = "€€€€€€€€ " * 55 + "€€€€€"  # 500 characters, the most staff may write; two septets each
VALUES = {"length": 16, "min": 10, "max": 100, "age": 17}


@pytest.fixture(scope="module")
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", LANGUAGES, "id")


class WorstLookup:
    def __init__(self, engine, lang, note=WORST_NOTE):
        longest_title = max((f.name for f in engine.flows.values()),
                            key=lambda name: len(engine.catalog.text(lang, engine.flows[name].title)))
        longest_status = max(STATUS_LABELS, key=lambda s: len(engine.catalog.text(lang, STATUS_LABELS[s])))
        self.item = {"ref": "KKKKKKKK", "service": longest_title, "status": longest_status, "note": note,
                     "created": dt.date(2026, 9, 30), "changed": dt.date(2026, 9, 30)}

    def taken(self, service, answer, value):
        return False

    def recent(self, limit):
        return [self.item] * limit

    def find(self, ref):
        return self.item


def context(engine, lang, **lookup):
    return Context(dt.date(2026, 11, 28), WorstLookup(engine, lang, **lookup), lambda: "KKKKKKKK")


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
        elif screen.check in ("digits", "nik"):
            answers[screen.save] = "9" * screen.longest
        else:
            answers[screen.save] = "€" * screen.longest  # an extension character: two septets each
    return answers


def all_sessions(engine, lang):
    """(name, session, kind) for every screen a session can rest on, and every resume offer."""
    for flow in engine.flows.values():
        answers = worst_answers(engine, flow, lang)
        for screen in flow.screens.values():
            if screen.kind == "notice":  # shown only on top of the screen it leads to: see below
                continue
            yield f"{flow.name}/{screen.name}", {"flow": flow.name, "screen": screen.name, "page": 0,
                                                "answers": answers, "lang": lang, "ref": "KKKKKKKK"}, screen.kind
        if flow.submits:
            saved = {"flow": flow.name, "screen": flow.start, "page": 0, "answers": answers, "lang": lang}
            yield f"resume offer of {flow.name}", {"flow": "@resume", "screen": "offer", "page": 0,
                                                  "answers": {}, "lang": lang, "saved": saved}, "menu"


def longest_reason(engine, lang, kind, paged=False):
    reasons = REASONS[kind] + (PAGED_REASONS.get(kind, ()) if paged else ())
    return max((engine.catalog.text(lang, r, **VALUES) for r in reasons), key=ussd_cost, default=None)


def hint(engine, lang):
    return engine.catalog.text(lang, "nav.hint", back="0", home="00")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_every_page_fits_182_with_its_hint(engine, lang):
    ctx = context(engine, lang)
    checked = 0
    for name, session, kind in all_sessions(engine, lang):
        root = name == "main/menu" or name.startswith("resume offer")
        paged = len(engine.pages(session, ctx)) > 1
        for reason in (None, longest_reason(engine, lang, kind, paged)):
            pages = engine.pages(session, ctx, reason=reason)
            for number, page in enumerate(pages, 1):
                body = "CON " + page
                assert ussd_cost(body) <= USSD_LIMIT, f"{lang} {name} page {number}: {ussd_cost(body)} septets"
                assert page.strip(), f"{lang} {name} page {number} is empty"
                closing = kind == "end" and number == len(pages)
                if not (root and number == 1) and not closing:
                    assert page.endswith("\n" + hint(engine, lang)), f"{lang} {name} page {number}: no hint"
                if reason:
                    assert page.startswith(reason + "\n"), f"{lang} {name} page {number}: reason cut"
                checked += 1
    assert checked > 70


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_root_and_closing_screens_have_no_hint(engine, lang):
    ctx = context(engine, lang)
    sessions = {name: session for name, session, _ in all_sessions(engine, lang)}
    for name in ("main/menu", "resume offer of report", "report/done", "voter/already"):
        assert hint(engine, lang) not in engine.pages(sessions[name], ctx)[-1], name


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_confirm_is_one_page_at_maximum_lengths(engine, lang):
    ctx = context(engine, lang)
    confirms = [(name, session) for name, session, kind in all_sessions(engine, lang) if kind == "confirm"]
    assert len(confirms) == 3
    for name, session in confirms:
        for reason in (None, longest_reason(engine, lang, "confirm")):
            pages = engine.pages(session, ctx, reason=reason)
            assert len(pages) == 1, f"{lang} {name}: {pages}"
            lines = pages[0].splitlines()
            assert lines[-3:] == [f"1. {engine.catalog.text(lang, 'confirm.yes')}",
                                  f"2. {engine.catalog.text(lang, 'confirm.no')}", hint(engine, lang)]
            assert any(line.endswith("...") for line in lines), f"{lang} {name}: nothing was shortened"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_recent_list_shows_every_item_within_three_pages(engine, lang):
    session = {"flow": "status", "screen": "recent", "page": 0, "answers": {}, "lang": lang}
    for note in (WORST_NOTE, None):
        pages = engine.pages(session, context(engine, lang, note=note))
        assert 1 < len(pages) <= 3, f"{lang}: {len(pages)} pages"
        assert "\n".join(pages).count("KKKKKKKK") == RECENT_LIMIT


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_one_submission_shows_the_whole_note_over_its_pages(engine, lang):
    ctx = context(engine, lang, note="Petugas datang Kamis pagi, mohon siapkan KTP dan KK asli. " * 8)
    session = {"flow": "status", "screen": "one", "page": 0, "answers": {"ref": "KKKKKKKK"}, "lang": lang}
    pages = engine.pages(session, ctx)
    assert len(pages) > 1
    assert "\n".join(pages).count(" asli.") == 8 and "..." not in "".join(pages)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_screens_saved_language_notice_fits_over_the_main_menu(engine, lang):
    ctx = context(engine, lang)
    longest = max(engine.languages, key=lambda code: ussd_cost(engine.catalog.language_name(code)))
    shown = engine.resume(engine.start(lang, ctx).session, "5", ctx)
    turn = engine.resume(shown.session, str(engine.languages.index(longest) + 1), ctx)
    saved = engine.catalog.text(longest, "language.saved", language=engine.catalog.language_name(longest))
    assert turn.text.startswith(saved + "\n" + engine.catalog.text(longest, "main.prompt"))
    assert ussd_cost("CON " + turn.text) <= USSD_LIMIT


def test_screens_cost_counts_extension_characters_twice():
    assert ussd_cost("abc") == 3
    assert ussd_cost("€{}") == 6
    assert ussd_cost("é") == 1
    assert ussd_cost("✓" * 80) == USSD_LIMIT  # UCS-2: 80 characters fill a screen
