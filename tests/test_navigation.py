"""A way back on every screen, through the real USSD callback: `0` back, `00` home, `98` next, hints, pages.

Also what status screens show now: they wait (`CON`) for the caller to go back
or home, with the staff's last note and the day of the last status change.
"""

import datetime as dt
import re
import shutil

import pytest

from conftest import PHONE, Gateway, MovableClock, make_config
from flows.text import USSD_LIMIT, ussd_cost
from gateway.config import data_root
from gateway.resources import engine_key, rules_key, sessions_key, store_key
from gateway.turn import change_status

pytestmark = pytest.mark.backends

HINT = {"id": "0 Kembali, 00 Menu", "en": "0 Back, 00 Menu", "sw": "0 Rudi, 00 Menyu"}
MAIN = "CON Kentongan, layanan desa. Pilih:\n1. Lapor masalah"
NIK = "3201235708900002"  # a woman born 17 August 1990
DAY = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.timezone.utc)


async def stored(gateway):
    """Every submission in the gateway's store (whichever it is): service and answers, oldest first."""
    def read(store):
        found = [store.submission(row["ref"]) for row in reversed(store.list_submissions(1000))]
        return [(row["service"], row["answers"]) for row in found]

    return await gateway.app[store_key].call(read)


async def report(gateway, session, place):
    end = (await gateway.dial(session, "1", "2", place, "Lampu mati sejak minggu lalu", "1"))[-1]
    return re.search(r"Kode: (\w+)\.", end).group(1)


# -- 0 goes back a screen, and what was answered there is forgotten -------------

async def test_navigation_back_from_an_input_screen_to_the_categories_and_another_category(gateway):
    screens = await gateway.dial("b", "1", "1", "0", "3", "Dusun Kidul", "Sampah menumpuk di pasar", "1")
    assert screens[3] == screens[1]  # 0 on the place: the categories again, not "at least 3 letters"
    assert screens[4].startswith("CON Di mana?")
    assert "Sampah tidak diangkut" in screens[6]
    assert screens[7].startswith("END Terima kasih")
    assert await stored(gateway) == [("report", {"category": "garbage", "location": "Dusun Kidul",
                                           "description": "Sampah menumpuk di pasar"})]


async def test_navigation_back_past_a_question_drops_its_answer_from_the_summary(gateway):
    # permit: kind "other" asks what kind; back to the kinds, a shop, and "Jahit baju" is gone
    screens = await gateway.dial("k", "3", "3201231708900001", "Warung Bu Siti", "6", "Jahit baju", "Sukamaju",
                                 "0", "0", "0", "1", "Sukamaju", "1")
    assert screens[7].startswith("CON Desa tempat usaha:")    # back from the village question ...
    assert screens[8].startswith("CON Sebutkan jenis usahanya:")  # ... to the kind question ...
    assert screens[9].startswith("CON Jenis usaha:")          # ... to the kinds
    summary = screens[11]
    assert summary.startswith("CON Ajukan izin usaha?") and "Toko/warung" in summary and "Jahit" not in summary
    assert await stored(gateway) == [("permit", {"nik": "3201231708900001", "business": "Warung Bu Siti",
                                           "kind": "shop", "village": "Sukamaju"})]


async def test_navigation_back_from_the_summary_to_retype_the_last_answer(gateway):
    screens = await gateway.dial("s", "1", "2", "Dusun Kidul", "Lampu mati", "0", "Lampu padam tiap malam", "1")
    assert screens[5].startswith("CON Jelaskan singkat masalahnya")
    assert "\nLampu padam tiap malam\n" in screens[6] and "\nLampu mati\n" not in screens[6]
    assert (await stored(gateway))[0][1]["description"] == "Lampu padam tiap malam"


async def test_navigation_zero_on_the_main_menu_shows_it_again(gateway):
    screens = await gateway.dial("m", "0", "1", "0", "0")
    assert screens[1] == screens[0] == screens[3] == screens[4]
    assert screens[0].startswith(MAIN)


async def test_navigation_double_zero_from_deep_in_a_flow(gateway):
    screens = await gateway.dial("h", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "00", "0", "2")
    assert screens[5].startswith("CON Daftar sebagai pemilih?")
    assert screens[6] == screens[0] == screens[7]  # home, where 0 has nothing to go back to
    assert screens[8] == "CON Masukkan NIK Anda (16 angka di KTP):\n0 Kembali, 00 Menu"  # nothing kept from before
    assert await stored(gateway) == []


async def test_navigation_keys_are_never_answers_on_an_input_screen(gateway):
    screens = await gateway.dial("n", "4", "2", "98", "00")
    assert screens[3].startswith("CON Tidak ada halaman berikutnya.\nMasukkan kode kiriman")
    assert screens[4] == screens[0]


# -- the hint ------------------------------------------------------------------

@pytest.mark.parametrize("lang, key", [("id", "1"), ("en", "2"), ("sw", "3")])
async def test_navigation_hint_on_every_screen_but_the_main_menu_and_the_last(gateway, lang, key):
    await gateway.dial(f"lang-{lang}", "5", key)
    screens = await gateway.dial(f"walk-{lang}", "1", "4", "Sumur umum", "Air keruh sejak seminggu", "1")
    assert HINT[lang] not in screens[0]
    for screen in screens[1:-1]:
        assert screen.startswith("CON ") and screen.endswith("\n" + HINT[lang]), screen
    assert screens[-1].startswith("END ") and HINT[lang] not in screens[-1]


# -- pages ---------------------------------------------------------------------

async def test_navigation_back_over_pages_then_screens(gateway):
    for n in range(3):
        await report(gateway, f"r{n}", f"Dusun {n} Kidul")
    screens = await gateway.dial("p", "4", "1", "98", "0", "0", "0", "0")
    first, second = screens[2], screens[3]
    assert first.endswith("\n98 Berikutnya\n0 Kembali, 00 Menu") and "98 Berikutnya" not in second
    assert screens[4] == first                              # 0 on page 2: page 1
    assert screens[5] == screens[1]                         # 0 on page 1: the status menu
    assert screens[6] == screens[0] == screens[7]           # then the main menu, where 0 stays


async def test_navigation_invalid_input_on_page_two_shows_page_two_again(gateway):
    for n in range(3):
        await report(gateway, f"r{n}", f"Dusun {n} Kidul")
    screens = await gateway.dial("i", "4", "1", "98", "7", "98", "0")
    second = screens[3]
    assert screens[4] == "CON Pilihan tidak ada.\n" + second[len("CON "):]
    assert screens[5] == "CON Tidak ada halaman berikutnya.\n" + second[len("CON "):]
    assert screens[6] == screens[2]  # the layout did not move: 0 still leads to page 1


@pytest.fixture
async def long_summary_gateway(tmp_path, backend):
    """A gateway whose Indonesian report summary is too long for one page whatever the answers."""
    locale = tmp_path / "locale"
    shutil.copytree(data_root() / "locale", locale)
    po = locale / "id" / "LC_MESSAGES" / "messages.po"
    preface = ("Periksa sekali lagi sebelum mengirim. Laporan yang sudah terkirim tidak bisa diubah, tetapi "
               "Anda bisa mengirim laporan baru kapan saja. Petugas desa membaca setiap laporan.")
    text = po.read_text()
    assert '"Kirim laporan?\\n"' in text
    po.write_text(text.replace('"Kirim laporan?\\n"', f'"{preface}\\n"'))
    (locale / "id" / "LC_MESSAGES" / "messages.mo").unlink()
    gw = await Gateway(make_config(tmp_path / "var", language__locale_dir=str(locale), **backend)).start()
    yield gw
    await gw.stop()


async def test_navigation_a_choice_on_a_page_that_does_not_show_it_does_nothing(long_summary_gateway):
    gateway = long_summary_gateway
    typed = ["1", "1", "Dusun Kidul", "Lubang besar sejak musim hujan", "1", "2", "98", "1", "98"]
    screens = await gateway.dial("c", *typed)
    first, second, last = screens[4], screens[7], screens[9]
    assert first.startswith("CON Periksa sekali lagi") and "1. Ya, kirim" not in first
    assert screens[5] == "CON Pilihan itu tidak ada di halaman ini.\n" + first[len("CON "):]
    assert screens[6] == screens[5]  # 2 does not cancel from there either
    assert "1. Ya, kirim" not in second and screens[8].endswith(second[len("CON "):])
    assert await stored(gateway) == []
    assert last.endswith("1. Ya, kirim\n2. Batal\n0 Kembali, 00 Menu")
    assert "Lubang besar sejak musim hujan\n1. Ya, kirim" in last  # paged anyway: the answers are shown whole
    end = await gateway.hop("c", "*".join([*typed, "1"]))
    assert end.startswith("END Terima kasih") and len(await stored(gateway)) == 1


LONGEST = {  # every free answer as long as its validator allows
    "place": "Dusun Sukamaju Kidul RT 03 RW 05 Blok C7",
    "problem": "Jalan berlubang besar di depan SD Negeri 02, motor sering jatuh saat hujan. Mohon segera diperbaiki.",
    "name": "Siti Aminah binti Haji Abdul Rahman Sale",
    "village": "Desa Sukamaju Kidul Kec. Cianj",
    "business": "Toko Kelontong dan Warung Makan Bu Siti2",
    "kind": "Jahit dan permak baju seragams",
}


@pytest.mark.parametrize("lang, key", [("id", "1"), ("en", "2"), ("sw", "3")])
async def test_navigation_summaries_at_maximum_lengths_are_one_page(gateway, lang, key):
    assert [len(v) for v in LONGEST.values()] == [40, 100, 40, 30, 40, 30]
    await gateway.dial(f"lang-{lang}", "5", key)
    walks = {"report": ["1", "1", LONGEST["place"], LONGEST["problem"]],
             "voter": ["2", NIK, LONGEST["name"], "17081990", LONGEST["village"]],
             "permit": ["3", "3201231708900001", LONGEST["business"], "6", LONGEST["kind"], LONGEST["village"]]}
    for service, inputs in walks.items():
        screens = await gateway.dial(f"{service}-{lang}", *inputs, "1")
        summary = screens[-2]
        lines = summary.splitlines()
        assert ussd_cost(summary) <= USSD_LIMIT and "98" not in summary, summary
        assert lines[-3].startswith("1. ") and lines[-2].startswith("2. ") and lines[-1] == HINT[lang], summary
        assert any(line.endswith("...") for line in lines), summary  # something long had to give way
        assert screens[-1].startswith("END "), f"{service}: {screens[-1]}"
    assert [answers for _, answers in await stored(gateway)][0]["description"] == LONGEST["problem"]  # kept whole


# -- status and language go on to the main menu ----------------------------------

async def test_navigation_status_results_wait_and_lead_to_the_main_menu(gateway):
    ref = await report(gateway, "r", "Dusun Kidul")
    recent = await gateway.dial("st", "4", "1", "00")
    assert recent[2].startswith("CON Kiriman terakhir Anda:\n") and ref in recent[2]
    assert recent[2].endswith("\n0 Kembali, 00 Menu")
    assert recent[3] == recent[0]
    one = await gateway.dial("so", "4", "2", ref, "0", "ZZZZZZ", "00", "1")
    assert one[3].startswith("CON Status:\n" + ref) and one[3].endswith("\n0 Kembali, 00 Menu")
    assert one[4].startswith("CON Masukkan kode kiriman")     # 0: ask for another reference
    assert one[5].startswith("CON Status:\nKode itu tidak ditemukan")
    assert one[6] == one[0] and one[7].startswith("CON Jenis masalah:")


async def test_navigation_language_choice_confirms_over_the_main_menu_in_the_new_language(gateway):
    screens = await gateway.dial("l", "5", "2", "1")
    assert screens[2] == ("CON Language saved: English.\nKentongan village services. Choose:\n1. Report a problem\n"
                          "2. Register to vote\n3. Business permit\n4. Check status\n5. Language/Bahasa")
    assert screens[3].startswith("CON What is the problem?")
    assert (await gateway.hop("later", "")).startswith("CON Kentongan village services")  # saved for the phone


# -- sessions from before the way back ---------------------------------------------

async def save_state(gateway, session_id, change, resumable=False, phone=PHONE):
    """Change a kept session's state behind the gateway's back, wherever it lives."""
    sessions = gateway.app.get(sessions_key)
    if sessions is not None:
        saved, _ = await sessions.load(session_id, phone, offer=False)
        await sessions.save(session_id, phone=phone, service_code="*384*1#", state=change(saved["state"]),
                            history=saved["history"], response=saved["response"], done=False, resumable=resumable)
        return

    def rewrite(store):
        saved = store.session(session_id)
        store.save_session(session_id, phone=phone, service_code="*384*1#", state=change(saved["state"]),
                           history=saved["history"], response=saved["response"], done=False, resumable=resumable)

    await gateway.app[store_key].call(rewrite)


def without_way_back(state):
    return {key: value for key, value in state.items() if key != "back"}


async def test_navigation_session_saved_before_the_way_back_goes_on(gateway):
    await gateway.dial("old", "1", "1", "Dusun Kidul")
    await save_state(gateway, "old", without_way_back)
    assert (await gateway.hop("old", "1*1*Dusun Kidul*Jalan rusak")).startswith("CON Kirim laporan?")
    other = "+6281298765432"
    await gateway.dial("older", "1", "1", "Dusun Kidul", phone=other)
    await save_state(gateway, "older", without_way_back, phone=other)
    assert (await gateway.hop("older", "1*1*Dusun Kidul*0", phone=other)).startswith(MAIN)  # nowhere to go back


async def test_navigation_dropped_session_from_before_the_way_back_resumes(gateway):
    await gateway.dial("drop", "2", NIK, "Siti Aminah")
    await save_state(gateway, "drop", lambda state: {**without_way_back(state), "page": 3}, resumable=True)
    offer = await gateway.dial("again", "0", "1", "17081990")
    assert offer[1] == offer[0] and offer[0].startswith("CON Sambungan terputus")  # 0 on the offer: the offer
    assert offer[2] == "CON Tanggal lahir, 8 angka HHBBTTTT (contoh 17081990):\n0 Kembali, 00 Menu"
    assert offer[3] == "CON Desa tempat tinggal Anda:\n0 Kembali, 00 Menu"


# -- what a status shows: the staff's note and the day of the last change ------------

@pytest.fixture
async def dated_gateway(tmp_path, backend):
    gw = await Gateway(make_config(tmp_path / "var", **backend), MovableClock(DAY)).start()
    yield gw
    await gw.stop()


async def change(gateway, ref, status, note):
    app = gateway.app
    return await app[store_key].call(change_status, app[engine_key], app[rules_key], ref, status, note)


NOTE = ("Petugas datang hari Kamis pagi untuk menambal jalan. Mohon kendaraan tidak diparkir di sana. "
        "Terima kasih atas laporannya.")


def content(screen, hint=HINT["id"]):
    """What a page says, without CON and its navigation lines."""
    return [line for line in screen.removeprefix("CON ").split("\n") if line not in ("98 Berikutnya", hint)]


async def test_navigation_status_shows_the_staff_note_and_the_day_of_the_last_change(dated_gateway):
    gateway = dated_gateway
    ref = await report(gateway, "r", "Dusun Kidul")
    gateway.advance(days=3)
    await change(gateway, ref, "in_progress", NOTE)
    recent = (await gateway.dial("st", "4", "1"))[-1]
    assert f"{ref} Laporan masalah: Diproses (1 Des)\nCatatan: Petugas datang hari..." in recent  # shortened
    pages = (await gateway.dial("so", "4", "2", ref))[-1:]
    while pages[-1].endswith("98 Berikutnya\n" + HINT["id"]):
        pages.append(await gateway.hop("so", f"4*2*{ref}" + "*98" * len(pages)))
    assert len(pages) > 1 and pages[0].startswith(f"CON Status:\n{ref} Laporan masalah: Diproses (1 Des)\n")
    shown = " ".join(line for page in pages for line in content(page))
    assert f"Catatan: {NOTE}" in shown  # whole, over its pages


async def test_navigation_sms_status_shows_the_staff_note_and_the_day_of_the_last_change(dated_gateway):
    gateway = dated_gateway
    ref = await report(gateway, "r", "Dusun Kidul")
    gateway.advance(days=3)
    await change(gateway, ref, "resolved", "Sudah ditambal.")
    status, _, _ = await gateway.post("/sms/africastalking/inbound", {
        "from": PHONE, "to": "21525", "text": f"CEK {ref}", "date": "2026-12-01 10:00:00", "id": "cek-1",
        "linkId": "", "networkCode": "51010"})
    assert status == 200
    rows = await gateway.app[store_key].call(lambda store: store.outbox.messages(PHONE))
    reply = [row["body"] for row in rows if row["cause"] == "cek-1"]
    assert len(reply) == 1 and f"{ref} Laporan masalah: Selesai (1 Des)\nCatatan: Sudah ditambal." in reply[0]
