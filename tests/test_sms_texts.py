"""Every SMS text fits the cheapest encoding: confirmations and notices in one GSM-7 segment."""

import datetime as dt

import pytest

from flows import CatalogError, Engine
from flows.catalog import Catalog
from flows.engine import STATUS_LABELS
from flows.sms import COMMANDS, EXPIRED, PLACE_INVALID, PLACE_PROMPT, REFUSED, SUBMIT, Keywords, Unplaced, notice_text
from flows.text import fit_sms, is_gsm7, sms_segments, ussd_cost
from gateway.config import data_root

LANGUAGES = ["id", "en", "sw"]
ROOT = data_root()


@pytest.fixture(scope="module")
def engine():
    return Engine.load(ROOT / "menus", ROOT / "locale", LANGUAGES, "id")


def longest(engine, lang, ids):
    return max((engine.catalog.text(lang, i) for i in ids), key=ussd_cost)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_sms_confirmation_fits_one_segment(engine, lang):
    title = longest(engine, lang, [f.title for f in engine.flows.values() if f.submits])
    text = engine.catalog.text(lang, "sms.confirmation", service=title, ref="KKKKKKKK")
    assert sms_segments(text) == ("GSM-7", 1), f"{lang}: {ussd_cost(text)} septets: {text}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_sms_notice_fits_one_segment_with_any_note(engine, lang):
    title = longest(engine, lang, [f.title for f in engine.flows.values() if f.submits])
    status = longest(engine, lang, STATUS_LABELS.values())
    for note in ("", "Sudah diperbaiki.", "Petugas datang besok pagi jam 8, mohon siapkan KTP " * 5,
                 "Réparé ✓ — “terima kasih”", "x" * 400):
        text = notice_text(engine.catalog, lang, ref="KKKKKKKK", service=title, status=status, note=note)
        assert sms_segments(text) == ("GSM-7", 1), f"{lang}: {text}"
        assert "KKKKKKKK" in text and status in text


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("msgid", ["sms.help", "sms.report.usage", "sms.language.usage", "sms.stop.done",
                                   "sms.start.done", "status.none", "status.not_found"])  # report's usage: menus/report.yaml
def test_sms_replies_fit_one_segment(engine, lang, msgid):
    assert sms_segments(engine.catalog.text(lang, msgid)) == ("GSM-7", 1)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("msgid", [PLACE_PROMPT, PLACE_INVALID, EXPIRED, REFUSED])
def test_sms_report_place_and_refusal_texts_fit_one_segment(engine, lang, msgid):
    reasons = [engine.catalog.text(lang, r, min=40, max=160) for r in
               ("invalid.text_long", "invalid.text_short", "invalid.text_empty")]
    text = engine.catalog.text(lang, msgid, minutes=24 * 60, reason=max(reasons, key=ussd_cost))
    assert sms_segments(text) == ("GSM-7", 1), f"{lang}: {ussd_cost(text)} septets: {text}"
    assert text.startswith("Kentongan: ")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_sms_status_answer_fits_one_segment(engine, lang):
    title = max((f.name for f in engine.flows.values()), key=lambda n: len(engine.catalog.text(lang, engine.flows[n].title)))
    status = max(STATUS_LABELS, key=lambda s: len(engine.catalog.text(lang, STATUS_LABELS[s])))
    line = engine.status_line({"ref": "KKKKKKKK", "service": title, "status": status,
                               "created": dt.date(2026, 9, 30)}, lang)
    assert sms_segments(line) == ("GSM-7", 1)


def test_sms_segment_counting():
    assert sms_segments("a" * 160) == ("GSM-7", 1)
    assert sms_segments("a" * 161) == ("GSM-7", 2)
    assert sms_segments("{" * 80) == ("GSM-7", 1)   # extension characters take two septets
    assert sms_segments("{" * 81) == ("GSM-7", 2)
    assert sms_segments("é" * 160) == ("GSM-7", 1)  # é is in GSM-7
    assert sms_segments("a" * 69 + "✓") == ("UCS-2", 1)
    assert sms_segments("a" * 70 + "✓") == ("UCS-2", 2)
    assert sms_segments("😀" * 35) == ("UCS-2", 1)  # two UTF-16 units each
    assert sms_segments("a" * 306) == ("GSM-7", 2) and sms_segments("a" * 307) == ("GSM-7", 3)


def test_sms_fit_cuts_at_a_word():
    assert fit_sms("short") == "short"
    cut = fit_sms("word " * 100)
    assert ussd_cost(cut) <= 160 and cut.endswith("word...")


def test_sms_keywords_every_language_and_category(engine):
    keywords = Keywords(engine)
    report = engine.flows["report"]
    for lang in LANGUAGES:
        for name, msgid in COMMANDS.items():
            word = engine.catalog.text(lang, msgid)
            assert keywords.parse(f" {word.lower()}:  rest  of it ").name == name
            assert is_gsm7(word) and word.isupper()
        keyword = engine.catalog.text(lang, report.sms.keyword)
        for choice in report.saved_by(report.sms.choose).choices:
            word = engine.catalog.text(lang, choice.sms_word)
            command = keywords.parse(f"{keyword.lower()} {word.lower()}  Sukamaju RT 2 :lubang besar")
            assert (command.name, command.flow) == (SUBMIT, "report")
            made = keywords.submission(command, lang, dt.date(2026, 11, 29))
            assert made["answers"] == {"category": choice.value, "location": "Sukamaju RT 2",
                                       "description": "lubang besar"}


@pytest.mark.parametrize("text, place, description", [
    ("LAPOR LAMPU Sukamaju: mati sejak jam 19:00", "Sukamaju", "mati sejak jam 19:00"),
    ("LAPOR LAMPU mati sejak jam 19:00", None, "mati sejak jam 19:00"),    # a time is no place
    ("LAPOR: LAMPU: mati: sejak kemarin", "mati", "sejak kemarin"),
    ("LAPOR LAMPU : mati sejak kemarin", None, "mati sejak kemarin"),      # nothing before the colon
    ("LAPOR LAMPU Jl. Mawar 3: mati: kabel putus", "Jl. Mawar 3", "mati: kabel putus"),
])
def test_sms_report_place_is_what_comes_before_the_first_colon(engine, text, place, description):
    made = Keywords(engine).submission(Keywords(engine).parse(text), "id", dt.date(2026, 11, 29))
    if place is None:
        assert isinstance(made, Unplaced) and made.reason is None
        made = made.submission
    assert made["answers"].get("location") == place and made["answers"]["description"] == description


def test_sms_keyword_meaning_two_things_is_refused(engine):
    class Clash(Catalog):
        def text(self, lang, msgid, **values):
            if lang == "sw" and msgid == "sms.keyword.help":
                return "STOP"
            return super().text(lang, msgid, **values)

    clash = Engine(engine.flows, Clash(engine.catalog._translations), "id")
    with pytest.raises(CatalogError, match="STOP means both"):
        Keywords(clash)
