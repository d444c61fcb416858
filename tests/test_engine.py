"""The engine, pure: sessions as dicts in, turns out."""

import datetime as dt

import pytest

from flows import Context, Engine, FlowError
from gateway.config import data_root

TODAY = dt.date(2026, 11, 28)
NIK = "3201235708900002"     # a woman born 17 August 1990: her day is 17 + 40
OTHER_NIK = "3201231708900001"
HINT = {"id": "0 Kembali, 00 Menu", "en": "0 Back, 00 Menu", "sw": "0 Rudi, 00 Menyu"}


class FakeLookup:
    def __init__(self, taken=(), recent=(), found=None):
        self._taken = set(taken)
        self._recent = list(recent)
        self._found = found or {}

    def taken(self, service, answer, value):
        return (service, answer, value) in self._taken

    def recent(self, limit):
        return self._recent[:limit]

    def find(self, ref):
        return self._found.get(ref.upper())


@pytest.fixture(scope="module")
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def context(lookup=None, refs=("K7ABCDE",)):
    refs = iter(refs)
    return Context(today=TODAY, lookup=lookup or FakeLookup(), new_reference=lambda: next(refs))


def run(engine, lang, *inputs, ctx=None):
    ctx = ctx or context()
    turn = engine.start(lang, ctx)
    turns = [turn]
    for typed in inputs:
        turn = engine.resume(turn.session, typed, ctx)
        turns.append(turn)
    return turns


def test_engine_main_menu_lists_five_services_in_order(engine):
    text = run(engine, "en")[0].text
    assert text.splitlines()[1:] == ["1. Report a problem", "2. Register to vote", "3. Business permit",
                                     "4. Check status", "5. Language/Bahasa"]


def test_engine_report_walk_ends_with_submission(engine):
    turns = run(engine, "en", "1", "3", "Dusun Kidul", "Rubbish not collected for two weeks", "1")
    confirm, done = turns[-2], turns[-1]
    assert "Uncollected garbage" in confirm.text and "Dusun Kidul" in confirm.text
    assert done.done and "K7ABCDE" in done.text
    assert done.submission == {
        "service": "report", "ref": "K7ABCDE", "language": "en", "unique": {},
        "answers": {"category": "garbage", "location": "Dusun Kidul",
                    "description": "Rubbish not collected for two weeks"},
    }


def test_engine_declined_confirmation_submits_nothing(engine):
    done = run(engine, "en", "1", "1", "Dusun Kidul", "Big hole", "2")[-1]
    assert done.done and done.submission is None
    assert "Nothing was sent" in done.text


@pytest.mark.parametrize("typed, reason", [
    ("123", "Must be 16 digits."),
    ("12345678901234567", "Must be 16 digits."),
    ("12345678901234ab", "Must be 16 digits."),
    ("", "Must be 16 digits."),
])
def test_engine_wrong_nik_reasks_with_reason(engine, typed, reason):
    turn = run(engine, "en", "2", typed)[-1]
    assert not turn.done
    assert turn.text.splitlines() == [reason, "Your NIK (the 16-digit national ID number on your KTP card):", HINT["en"]]
    assert turn.session["screen"] == "nik"


@pytest.mark.parametrize("typed, reason", [
    ("31022000", "Wrong date."),     # no 31 February
    ("29022023", "Wrong date."),     # 2023 is not a leap year
    ("1708199", "Wrong date."),
    ("17/08/1890", "Wrong date."),
    ("01012099", "cannot be in the future"),
    ("29112026", "cannot be in the future"),  # tomorrow
])
def test_engine_birth_date_must_be_real_and_past(engine, typed, reason):
    turn = run(engine, "en", "2", NIK, "Siti Aminah", typed)[-1]
    assert reason in turn.text.splitlines()[0]
    assert turn.session["screen"] == "birth_date"


def test_engine_birth_date_on_a_leap_day_is_accepted(engine):
    turn = run(engine, "en", "2", "3201236902040001", "Siti Aminah", "29022004")[-1]
    assert turn.session["screen"] == "village"


def test_engine_birth_date_shown_in_callers_language(engine):
    answers = ("2", NIK, "Siti Aminah", "17081990", "Sukamaju")
    assert "17 Agu 1990" in run(engine, "id", *answers)[-1].text
    assert "Aug 17, 1990" in run(engine, "en", *answers)[-1].text
    assert "17 Ago 1990" in run(engine, "sw", *answers)[-1].text


@pytest.mark.parametrize("typed, reason", [
    ("", "The answer cannot be empty."),
    ("  ", "The answer cannot be empty."),
    ("ab", "At least 3 letters."),
    ("x" * 41, "At most 40 letters."),
    ("✓ ✓", "The answer cannot be empty."),  # nothing GSM-7 can show is left
])
def test_engine_free_text_limits(engine, typed, reason):
    turn = run(engine, "en", "1", "1", typed)[-1]
    assert turn.text.splitlines()[0] == reason
    assert turn.session["screen"] == "location"


def test_engine_wrong_choice_reasks_same_menu(engine):
    for typed in ("6", "x", "1.5", "", "١", "01"):
        turn = run(engine, "en", "1", typed)[-1]
        assert turn.text.startswith("That choice does not exist.\nWhat is the problem?")
        assert turn.session["screen"] == "category" and not turn.done


def test_engine_double_zero_goes_home_from_anywhere(engine):
    turn = run(engine, "en", "2", NIK, "00")[-1]
    assert turn.session["flow"] == "main" and turn.session["answers"] == {}
    assert turn.text.startswith("Kentongan village services")


def test_engine_branches_on_answer(engine):
    other = run(engine, "en", "3", OTHER_NIK, "Warung Bu Siti", "6")[-1]
    assert other.session["screen"] == "kind_other"
    shop = run(engine, "en", "3", OTHER_NIK, "Warung Bu Siti", "1")[-1]
    assert shop.session["screen"] == "village"


def test_engine_duplicate_nik_refused_when_typed(engine):
    lookup = FakeLookup(taken={("voter", "nik", NIK)})
    turn = run(engine, "en", "2", NIK, ctx=context(lookup))[-1]
    assert turn.done and turn.submission is None
    assert "already registered" in turn.text


def test_engine_duplicate_nik_refused_at_submission(engine):
    lookup = FakeLookup()
    ctx = context(lookup)
    turns = run(engine, "en", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", ctx=ctx)
    lookup._taken.add(("voter", "nik", NIK))  # a session of the same phone finished first
    turn = engine.resume(turns[-1].session, "1", ctx)
    assert turn.done and turn.submission is None and "already registered" in turn.text


def test_engine_voter_submission_claims_nik(engine):
    turn = run(engine, "en", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1")[-1]
    assert turn.submission["unique"] == {"nik": NIK}
    assert turn.submission["answers"]["birth_date"] == "1990-08-17"


def test_engine_status_pages_long_lists(engine):
    items = [{"ref": f"K7AAAA{n}", "service": "permit", "status": "in_progress", "note": None,
              "created": dt.date(2026, 11, n), "changed": dt.date(2026, 11, n)} for n in range(2, 7)]
    ctx = context(FakeLookup(recent=items))
    first = run(engine, "sw", "4", "1", ctx=ctx)[-1]
    assert not first.done and first.text.endswith("98 Ijayo\n0 Rudi, 00 Menyu")
    second = engine.resume(first.session, "98", ctx)
    assert not second.done and second.text.endswith("\n0 Rudi, 00 Menyu") and "98 Ijayo" not in second.text
    shown = first.text + second.text
    assert all(item["ref"] in shown for item in items[:3])  # the latest three; others by reference
    assert items[3]["ref"] not in shown


def test_engine_status_by_reference_only_own(engine):
    found = {"K7QQQQQ": {"ref": "K7QQQQQ", "service": "report", "status": "resolved", "note": None,
                         "created": dt.date(2026, 11, 2), "changed": dt.date(2026, 11, 5)}}
    ctx = context(FakeLookup(found=found))
    mine = run(engine, "en", "4", "2", "k7qqqqq", ctx=ctx)[-1]
    assert not mine.done and "K7QQQQQ Problem report: Resolved (Nov 5)" in mine.text
    other = run(engine, "en", "4", "2", "K7ZZZZZ", ctx=ctx)[-1]
    assert not other.done and "not found" in other.text


def test_engine_language_change_applies_at_once(engine):
    turn = run(engine, "id", "5", "3")[-1]
    assert turn.language == "sw" and not turn.done
    assert turn.text.startswith("Lugha imehifadhiwa: Kiswahili.\nKentongan, huduma za kijiji. Chagua:\n1. ")
    assert turn.session["flow"] == "main" and turn.session["lang"] == "sw"


def test_engine_resume_offer_continues_where_left(engine):
    dropped = run(engine, "en", "2", NIK, "Siti Aminah")[-1].session
    ctx = context()
    offer = engine.start("en", ctx, saved=dropped)
    assert offer.text.startswith("Your session was cut off. Continue Voter registration?")
    back = engine.resume(offer.session, "1", ctx)
    assert back.session["screen"] == "birth_date"
    assert back.session["answers"]["name"] == "Siti Aminah"
    fresh = engine.resume(offer.session, "2", ctx)
    assert fresh.session["flow"] == "main"


def test_engine_nothing_to_resume_on_main_menu(engine):
    assert not engine.resumable(run(engine, "en")[0].session)
    assert engine.start("en", context(), saved=run(engine, "en")[0].session).session["flow"] == "main"


def test_engine_unknown_flow_in_session_is_a_bug(engine):
    with pytest.raises(FlowError):
        engine.resume({"flow": "gone", "screen": "x", "page": 0, "answers": {}, "lang": "en"}, "1", context())


def test_engine_long_confirmation_is_one_page_with_answers_shortened(engine):
    ctx = context()
    where = "Dusun Kidul RT 03 RW 05 dekat balai desa"
    what = ("Jalan utama berlubang besar sepanjang dua ratus meter, motor sering jatuh "
            "saat hujan, mohon segera")
    confirm = run(engine, "id", "1", "1", where, what, ctx=ctx)[-1]
    lines = confirm.text.splitlines()
    assert lines[-3:] == ["1. Ya, kirim", "2. Batal", HINT["id"]]
    assert lines[3].endswith("...") and what.startswith(lines[3][:-3])
    assert engine.resume(confirm.session, "98", ctx).text == "Tidak ada halaman berikutnya.\n" + confirm.text
    done = engine.resume(confirm.session, "1", ctx)
    assert done.done and done.submission["answers"]["description"] == what  # shortened on screen only
