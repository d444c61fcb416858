"""Validators one by one, and text as villagers type it (flows/typed.py): what is kept, what is re-asked."""

import datetime as dt
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows import MenuError
from flows.text import is_gsm7, ussd_cost
from flows.typed import to_gsm7
from flows.validate import PROVINCES, Invalid, Valid, age, build, nik_birth

TODAY = dt.date(2026, 11, 28)
MAN = "3201231708900001"    # West Java (32), regency 01, district 23; born 17 08 (19)90
WOMAN = "3201235708900002"  # the same birth date: a woman's day is 17 + 40


def check(spec, raw, answers=None, today=TODAY):
    validator, _ = build(spec, "test")
    return validator(raw, today, answers or {})


def reason(outcome):
    assert isinstance(outcome, Invalid), outcome
    return outcome.reason


# -- NIK ------------------------------------------------------------------

NIK = {"type": "nik"}


@pytest.mark.parametrize("typed, kept", [
    (MAN, MAN),
    (WOMAN, WOMAN),
    ("32 0123 170890 0001", MAN),          # as printed on the card
    ("32.01.23.170890.0001", MAN),
    ("3201-2317-0890-0001", MAN),
    ("1101014101000001", "1101014101000001"),   # Aceh; a woman born 1 January (20)00
    ("9601017112990001", "9601017112990001"),   # Papua Barat Daya (96); a woman born 31 December
    ("3201232902000001", "3201232902000001"),   # 29 February of a leap year (2000)
    ("3273011501809999", "3273011501809999"),   # a city (73) code
])
def test_validate_nik_accepts_plausible_numbers(typed, kept):
    assert check(NIK, typed) == Valid(kept)


@pytest.mark.parametrize("typed", ["", "320123170890000", "32012317089000011", "320123170890000a",
                                   "３２０１２３１７０８９００００１", "٣٢٠١٢٣١٧٠٨٩٠٠٠٠١"])
def test_validate_nik_needs_sixteen_ascii_digits(typed):
    outcome = check(NIK, typed)
    assert reason(outcome) == "invalid.digits" and outcome.values == {"length": 16}


@pytest.mark.parametrize("code", [f"{n:02d}" for n in range(100)])
def test_validate_nik_province_is_a_real_one(code):
    outcome = check(NIK, code + MAN[2:])
    if code in PROVINCES:
        assert outcome == Valid(code + MAN[2:])
    else:
        assert reason(outcome) == "invalid.nik_region"


def test_validate_nik_provinces_are_the_38_of_2022_to_2024():
    assert len(PROVINCES) == 38
    assert {"11", "19", "21", "31", "36", "51", "53", "61", "65", "71", "76", "81", "82", "91", "96"} <= PROVINCES
    assert not {"10", "20", "30", "37", "50", "54", "60", "66", "70", "77", "80", "83", "90", "97"} & PROVINCES


@pytest.mark.parametrize("typed", ["3200231708900001", "3201001708900001"])
def test_validate_nik_regency_and_district_are_not_00(typed):
    assert reason(check(NIK, typed)) == "invalid.nik_region"


@pytest.mark.parametrize("birth", [
    "456789",   # the old test constant 3201234567890123: month 67
    "000890",   # day 00
    "320890",   # day 32
    "400890",   # 40: a woman's day 00
    "720890",   # 72: a woman's day 32
    "170090",   # month 00
    "171390",   # month 13
    "300290",   # 30 February
    "290201",   # 29 February of a common year (1901 and 2001)
    "690201",   # a woman's 29 February of a common year
    "310490",   # 31 April
])
def test_validate_nik_birth_part_is_a_date(birth):
    assert reason(check(NIK, f"320123{birth}0001")) == "invalid.nik_birth"


def test_validate_nik_serial_is_not_0000():
    assert reason(check(NIK, "3201231708900000")) == "invalid.nik_serial"


def test_validate_nik_reports_the_first_wrong_part():
    assert reason(check(NIK, "0000000000000000")) == "invalid.nik_region"
    assert reason(check(NIK, "3201230000000000")) == "invalid.nik_birth"


def test_validate_nik_birth_part_undoes_a_womans_forty():
    assert nik_birth(MAN) == nik_birth(WOMAN) == (17, 8, 90)
    assert nik_birth("3201234567890123") is None
    assert nik_birth("not a nik") is None


def test_validate_nik_longest_value_is_16():
    assert build(NIK, "test")[1] == 16


def test_validate_nik_takes_no_options():
    with pytest.raises(MenuError, match="bad options for validator 'nik'"):
        build({"type": "nik", "length": 16}, "test")


# -- dates: minimum age, agreement with the NIK -------------------------------

VOTER_DATE = {"type": "date", "past": True, "agrees_with": "nik", "min_age": 17}


@pytest.mark.parametrize("born, years", [
    (dt.date(2009, 11, 28), 17),   # the 17th birthday is today
    (dt.date(2009, 11, 29), 16),   # tomorrow
    (dt.date(2009, 12, 1), 16),
    (dt.date(1990, 8, 17), 36),
    (dt.date(2026, 11, 28), 0),
])
def test_validate_age_counts_whole_years(born, years):
    assert age(born, TODAY) == years


def test_validate_age_of_a_leap_day_birth_grows_on_1_march():
    born = dt.date(2008, 2, 29)
    assert age(born, dt.date(2025, 2, 28)) == 16
    assert age(born, dt.date(2025, 3, 1)) == 17
    assert age(born, dt.date(2024, 2, 29)) == 16


def test_validate_min_age_on_the_day_of_the_turn():
    spec = {"type": "date", "past": True, "min_age": 17}
    assert check(spec, "28112009") == Valid("2009-11-28")
    young = check(spec, "29112009")
    assert reason(young) == "invalid.date_young" and young.values == {"age": 17}
    assert check(spec, "29112009", today=dt.date(2026, 11, 29)) == Valid("2009-11-29")


def test_validate_min_age_is_optional():
    assert check({"type": "date", "past": True}, "28112026") == Valid("2026-11-28")


@pytest.mark.parametrize("typed, nik", [
    ("17081990", MAN),
    ("17081990", WOMAN),
    ("17-08-1990", MAN),
    ("01012000", "1101014101000001"),
    ("29022000", "3201232902000001"),
])
def test_validate_birth_date_agreeing_with_the_nik_is_kept(typed, nik):
    assert isinstance(check(VOTER_DATE, typed, {"nik": nik}), Valid)


@pytest.mark.parametrize("typed", ["18081990", "17091990", "17081991", "17081980"])
@pytest.mark.parametrize("nik", [MAN, WOMAN])
def test_validate_birth_date_disagreeing_with_the_nik_is_reasked(typed, nik):
    assert reason(check(VOTER_DATE, typed, {"nik": nik})) == "invalid.date_nik"


def test_validate_birth_date_is_the_real_day_not_the_nik_day():
    assert reason(check(VOTER_DATE, "57081990", {"nik": WOMAN})) == "invalid.date"


def test_validate_birth_date_agrees_on_two_year_digits_only():
    # The NIK holds no century: 1990 and 1890 share the digits (1890 is refused as before 1900).
    assert reason(check(VOTER_DATE, "17081890", {"nik": MAN})) == "invalid.date"
    assert isinstance(check({**VOTER_DATE, "earliest": 1800, "min_age": None}, "17081890", {"nik": MAN}), Valid)


def test_validate_birth_date_mismatch_is_told_before_age():
    young_nik = "3201236911090001"  # a woman born 29 11 (20)09
    assert reason(check(VOTER_DATE, "28112009", {"nik": young_nik})) == "invalid.date_nik"
    assert reason(check(VOTER_DATE, "29112009", {"nik": young_nik})) == "invalid.date_young"


def test_validate_birth_date_without_a_nik_answer_is_not_compared():
    assert isinstance(check(VOTER_DATE, "17081990", {"name": "Siti"}), Valid)


def test_validate_birth_date_never_agrees_with_an_implausible_nik():
    assert reason(check(VOTER_DATE, "17081990", {"nik": "3201234567890123"})) == "invalid.date_nik"


@pytest.mark.parametrize("options", [{"min_age": "17"}, {"min_age": -1}, {"min_age": True}, {"min_age": 17.5},
                                     {"agrees_with": 5}, {"agrees_with": ["nik"]}])
def test_validate_date_options_are_checked_when_menus_load(options):
    with pytest.raises(MenuError, match="bad options for validator 'date'"):
        build({"type": "date", **options}, "voter.yaml: screen 'birth_date'")


# -- free text --------------------------------------------------------------

TEXT = {"type": "text", "min": 3, "max": 40}


@pytest.mark.parametrize("typed, kept", [
    ("Pak Ma’ruf", "Pak Ma'ruf"),
    ("Rumah “Bu Siti” – RT 03…", 'Rumah "Bu Siti" - RT 03...'),
    ("Dusun\u00a0Kidul", "Dusun Kidul"),
    ("Jalan ✓ rusak 😀", "Jalan rusak"),
    ("Jalan\nrusak\tparah", "Jalan rusak parah"),
    ("Jalan\x07 rusak", "Jalan rusak"),
    ("São João", "Sao Joao"),
    ("José Müller", "José Müller"),        # letters GSM-7 has are kept as they are
    ("ＲＴ　０３", "RT 03"),
    ("  Blok   C7  ", "Blok C7"),
])
def test_validate_text_keeps_what_was_typed_in_gsm7(typed, kept):
    assert check(TEXT, typed) == Valid(kept)


@pytest.mark.parametrize("typed", ["", "   ", "😀😀", "\u200b\u200d", "\n\t"])
def test_validate_text_empty_once_nothing_can_be_kept(typed):
    assert reason(check(TEXT, typed)) == "invalid.text_empty"


def test_validate_text_limits_count_what_is_kept():
    assert reason(check(TEXT, "a😀b")) == "invalid.text_short"
    short = {"type": "text", "min": 1, "max": 5}
    assert check(short, "ab…") == Valid("ab...")
    assert reason(check(short, "abc…")) == "invalid.text_long"


# -- to_gsm7: text villagers type ------------------------------------------

@pytest.mark.parametrize("typed, kept", [
    ("‘a’ ‚b‛ “c” „d‟ 5′ 6″", "'a' 'b' \"c\" \"d\" 5' 6\""),
    ("a–b—c‒d―e−f‐g‑h", "a-b-c-d-e-f-g-h"),
    ("tunggu…", "tunggu..."),
    ("a\u00a0b\u2002c\u2003d\u2009e\u202ff\u3000g\u205fh", "a b c d e f g h"),
    ("ＡＢＣ ｘｙｚ １２３ ！？（）", "ABC xyz 123 !?()"),
    ("｛ｘ｝", "{x}"),                      # fullwidth braces are braces: two septets, as typed
    ("áâãçêíîóôõúûýÿ ÁÂÃÊÍÓÔÚ", "aaaceiiooouuyy AAAEIOOU"),
    ("Łódź Đakovo", "Lodz Dakovo"),
    ("e\u0301", "é"),                       # an accent typed as its own mark joins its letter
    ("ok 😀👍🏽🇮🇩 ya", "ok  ya"),
    ("漢字 ok", " ok"),
    ("a\r\nb", "a  b"),
    ("Ma`ruf Ma´ruf Maʼruf", "Ma'ruf Ma'ruf Ma'ruf"),
    ("½", "1/2"),
    ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà€[]{}~^|\\", "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà€[]{}~^|\\"),
])
def test_validate_to_gsm7_maps_look_alikes(typed, kept):
    assert to_gsm7(typed) == kept


TYPED = st.sampled_from(list("‘’‚‛“”„‟′″–—‒―−…\u00a0\u2007\u202f\u3000\t\n\r\x00\x07\x1b\x7f\u200b\ufeff\u0301"
                             "ＡｚＺ０９｛～áçêõÁŁ€{}[]^~|\\`´😀👍🏽🇮🇩漢αЖ")) | st.characters()
TEXTS = st.text(TYPED, max_size=60) | st.text(max_size=60)


def septets_needed(text):
    """One septet per character of the compatibility decomposition, two for an extension character."""
    return sum(ussd_cost(part) if is_gsm7(part) else 1
               for char in unicodedata.normalize("NFC", text) for part in unicodedata.normalize("NFKD", char))


@given(TEXTS)
def test_validate_to_gsm7_property_always_gsm7_on_one_line(text):
    kept = to_gsm7(text)
    assert is_gsm7(kept)
    assert not any(char.isspace() and char != " " for char in kept)
    assert not any(unicodedata.category(char) in ("Cc", "Cf") for char in kept)


@given(TEXTS)
def test_validate_to_gsm7_property_idempotent(text):
    assert to_gsm7(to_gsm7(text)) == to_gsm7(text)


@given(TEXTS)
def test_validate_to_gsm7_property_never_longer_than_needed(text):
    kept = to_gsm7(text)
    assert ussd_cost(kept) <= septets_needed(text)
    # Extension characters (two septets) only where the text had them, in some form.
    extension = {char for char in kept if ussd_cost(char) == 2}
    assert extension <= set(unicodedata.normalize("NFKC", text))


GSM7_LINE = [chr(code) for code in range(0x2200) if is_gsm7(chr(code)) and chr(code).isprintable()]


@given(st.text(st.sampled_from(GSM7_LINE), max_size=60))
def test_validate_to_gsm7_property_leaves_gsm7_text_alone(text):
    assert to_gsm7(text) == text
