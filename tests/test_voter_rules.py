"""The election office's rules and typed text, through the real USSD callback of a real gateway.

A NIK must be well-formed, the birth date must agree with it and make the
caller 17 on the day of registering; a permit's NIK is checked the same way.
Each wrong answer is re-asked with its reason on one screen, in every
language. Text typed with a smartphone keyboard is kept, in GSM-7.
"""

import datetime as dt

import pytest

from conftest import MovableClock
from flows.text import USSD_LIMIT, ussd_cost
from sync.store import Store

DAY = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.timezone.utc)
MAN = "3201231708900001"    # West Java; born 17 August (19)90
WOMAN = "3201235708900002"  # the same birth date: a woman's day is 17 + 40
NIK_PROMPT = "Masukkan NIK Anda (16 angka di KTP):"
PERMIT_PROMPT = "Masukkan NIK pemohon (16 angka di KTP):"
DATE_PROMPT = "Tanggal lahir, 8 angka HHBBTTTT (contoh 17081990):"
LANGUAGE_KEY = {"id": "1", "en": "2", "sw": "3"}


@pytest.fixture
def clock():
    return MovableClock(DAY)


def reasks(screen, reason, prompt):
    """True when `screen` asks `prompt` again below `reason` (a navigation hint may follow)."""
    return screen.startswith(f"CON {reason}\n{prompt}")


def submissions(gateway):
    store = Store.open(gateway.config.data_dir)
    try:
        refs = [r for (r,) in store.db.execute("SELECT ref FROM submissions ORDER BY created_at").fetchall()]
        return [store.submission(ref) for ref in refs]
    finally:
        store.close()


async def test_voter_rules_a_woman_registers_with_her_day_plus_40(gateway):
    screens = await gateway.dial("w", "2", WOMAN, "Siti Aminah", "17081990", "Sukamaju", "1")
    assert screens[3].startswith("CON " + DATE_PROMPT)
    assert screens[-1].startswith("END Pendaftaran diterima")
    [made] = submissions(gateway)
    assert made["answers"]["nik"] == WOMAN and made["answers"]["birth_date"] == "1990-08-17"


@pytest.mark.parametrize("typed, reason", [
    ("12345", "Harus 16 angka."),
    ("3201234567890123", "Angka ke-7 sampai 12 NIK bukan tanggal lahir. Cek KTP."),  # 45 67 89 is no date
    ("3201237213900001", "Angka ke-7 sampai 12 NIK bukan tanggal lahir. Cek KTP."),  # a woman's day 32
    ("3201233002900001", "Angka ke-7 sampai 12 NIK bukan tanggal lahir. Cek KTP."),  # 30 February
    ("2001231708900001", "6 angka awal NIK bukan kode wilayah. Cek KTP."),  # no province 20
    ("9701231708900001", "6 angka awal NIK bukan kode wilayah. Cek KTP."),  # nor 97
    ("3200231708900001", "6 angka awal NIK bukan kode wilayah. Cek KTP."),  # regency 00
    ("3201001708900001", "6 angka awal NIK bukan kode wilayah. Cek KTP."),  # district 00
    ("3201231708900000", "4 angka akhir NIK tidak boleh 0000. Cek KTP."),
])
async def test_voter_rules_a_wrong_nik_is_reasked_with_its_reason(gateway, caplog, typed, reason):
    caplog.set_level("DEBUG")
    screens = await gateway.dial("n", "2", typed, MAN)
    assert reasks(screens[2], reason, NIK_PROMPT), screens[2]
    assert screens[3].startswith("CON Nama lengkap sesuai KTP:")
    assert typed not in caplog.text and MAN not in caplog.text


async def test_voter_rules_a_nik_typed_in_dotted_groups_is_kept_as_digits(gateway):
    await gateway.dial("g", "2", "32.0123.170890.0001", "Budi Santoso", "17081990", "Sukamaju", "1")
    assert submissions(gateway)[0]["answers"]["nik"] == MAN


@pytest.mark.parametrize("typed", ["18081990", "17091990", "17081991"])
async def test_voter_rules_a_birth_date_that_disagrees_with_the_nik_is_reasked(gateway, typed):
    screens = await gateway.dial("d", "2", WOMAN, "Siti Aminah", typed, "17081990")
    assert reasks(screens[4], "Tanggal lahir tidak cocok dengan NIK.", DATE_PROMPT), screens[4]
    assert screens[5].startswith("CON Desa tempat tinggal Anda:")


async def test_voter_rules_the_issues_child_born_2020_is_not_registered(gateway):
    screens = await gateway.dial("c", "2", "3201230101200001", "Anak Kecil", "01012020")
    assert reasks(screens[-1], "Umur minimal 17 tahun.", DATE_PROMPT), screens[-1]
    assert submissions(gateway) == []


async def test_voter_rules_seventeen_on_the_day_of_registering(gateway):
    young = "3201236911090001"  # a woman born 29 November 2009: 17 tomorrow
    today = await gateway.dial("t1", "2", young, "Dewi Lestari", "29112009")
    assert reasks(today[-1], "Umur minimal 17 tahun.", DATE_PROMPT), today[-1]
    gateway.advance(days=1)
    tomorrow = await gateway.dial("t2", "2", young, "Dewi Lestari", "29112009", "Sukamaju", "1")
    assert tomorrow[-1].startswith("END Pendaftaran diterima")
    assert submissions(gateway)[0]["answers"]["birth_date"] == "2009-11-29"


async def test_voter_rules_a_permit_nik_is_checked_the_same_way(gateway):
    screens = await gateway.dial("p", "3", "3201234567890999", "3200231708900001", "3201231708900000", MAN,
                                 "Warung Bu Siti", "1", "Sukamaju", "1")
    assert reasks(screens[2], "Angka ke-7 sampai 12 NIK bukan tanggal lahir. Cek KTP.", PERMIT_PROMPT), screens[2]
    assert reasks(screens[3], "6 angka awal NIK bukan kode wilayah. Cek KTP.", PERMIT_PROMPT), screens[3]
    assert reasks(screens[4], "4 angka akhir NIK tidak boleh 0000. Cek KTP.", PERMIT_PROMPT), screens[4]
    assert screens[5].startswith("CON Nama usaha")
    assert screens[-1].startswith("END ")
    assert submissions(gateway)[0]["answers"]["nik"] == MAN


REASKS = {  # language -> the reasons shown for the wrong answers typed below
    "id": ["6 angka awal NIK bukan kode wilayah.", "Angka ke-7 sampai 12 NIK bukan tanggal lahir.",
           "4 angka akhir NIK tidak boleh 0000.", "Tanggal lahir tidak cocok dengan NIK.", "Umur minimal 17 tahun."],
    "en": ["The NIK's first 6 digits are not a region code.", "The NIK's digits 7 to 12 are not a birth date.",
           "The NIK's last 4 digits cannot be 0000.", "This date does not match the NIK.",
           "You must be at least 17 years old."],
    "sw": ["Tarakimu 6 za kwanza za NIK si msimbo wa eneo.", "Tarakimu 7 hadi 12 za NIK si tarehe ya kuzaliwa.",
           "Tarakimu 4 za mwisho za NIK haziwezi kuwa 0000.", "Tarehe hii hailingani na NIK.",
           "Lazima uwe na umri wa miaka 17 au zaidi."],
}


@pytest.mark.parametrize("lang", ["id", "en", "sw"])
async def test_voter_rules_every_reason_and_its_question_fit_one_screen(gateway, lang):
    await gateway.dial(f"{lang}-language", "5", LANGUAGE_KEY[lang])
    young = "3201236911090001"
    voter = await gateway.dial(f"{lang}-voter", "2", "2001231708900001", "3201234567890123", "3201231708900000",
                               young, "Dewi Lestari", "28112009", "29112009", "00")  # home: nothing to resume
    permit = await gateway.dial(f"{lang}-permit", "3", "2001231708900001", "3201234567890123", "3201231708900000")
    wrong = voter[2:5] + voter[7:9] + permit[2:5]
    reasons = REASKS[lang] + REASKS[lang][:3]
    for screen, reason in zip(wrong, reasons, strict=True):
        assert screen.startswith(f"CON {reason}"), screen
        assert ussd_cost(screen) <= USSD_LIMIT, f"{ussd_cost(screen)} septets: {screen!r}"
        assert "\n98. " not in screen, f"the question went to a second page: {screen!r}"


# -- text as villagers type it ----------------------------------------------

async def test_voter_rules_a_curly_apostrophe_in_a_name_is_kept_as_a_plain_one(gateway):
    screens = await gateway.dial("q", "2", MAN, "Pak Ma’ruf Amin", "17081990", "Sukamaju", "1")
    assert "\nPak Ma'ruf Amin\n" in screens[5]
    assert all(ussd_cost(screen) == len(screen) for screen in screens)  # GSM-7 throughout: nothing became UCS-2
    assert submissions(gateway)[0]["answers"]["name"] == "Pak Ma'ruf Amin"


async def test_voter_rules_a_report_typed_on_a_smartphone_is_kept_not_refused(gateway):
    screens = await gateway.dial("r", "1", "4", "Gang “Mawar” – RT 03", "pipa PDAM bocor di rumah Pak Ma’ruf 😢", "1")
    assert "Gang \"Mawar\" - RT 03" in screens[4] and "pipa PDAM bocor di rumah Pak Ma'ruf\n" in screens[4]
    assert screens[5].startswith("END ")
    [made] = submissions(gateway)
    answers = made["answers"]
    assert answers["location"] == 'Gang "Mawar" - RT 03'
    assert answers["description"] == "pipa PDAM bocor di rumah Pak Ma'ruf"


async def test_voter_rules_a_name_of_emoji_only_is_asked_again_as_empty(gateway):
    screens = await gateway.dial("e", "2", MAN, "😀👍", "Siti\nAminah")
    assert reasks(screens[3], "Jawaban tidak boleh kosong.", "Nama lengkap sesuai KTP:"), screens[3]
    assert screens[4].startswith("CON " + DATE_PROMPT)
