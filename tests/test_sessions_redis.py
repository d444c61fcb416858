"""USSD sessions in Redis (`sessions.backend: redis`): a real gateway on a loopback port and the real Redis.

What only Redis does: sessions and resume offers expire on their own, the
session is written after the store's COMMIT (so a write that fails must
neither lose nor duplicate a submission), and a Redis that is down gets a
polite "try again" instead of an apology. The behaviour every backend shares
(retries, resume, binding to the phone) runs against Redis in test_ussd.py
and test_navigation.py as well.
"""

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from conftest import PHONE, REDIS, Gateway, eventually, free_port, make_config, our_errors, redis_prefix, sms_config
from gateway.resources import sessions_key, store_key

NIK = "3201235708900002"
REPORT = ["1", "1", "Dusun Kidul", "Jalan berlubang"]
BUSY = {"id": "END Maaf, layanan sedang sibuk. Silakan coba lagi dalam beberapa menit.",
        "en": "END Sorry, the service is busy. Please try again in a few minutes."}


@pytest.fixture
async def prefix():
    async with redis_prefix() as prefix:
        yield prefix


def redis_settings(prefix, url=REDIS):
    return {"sessions__backend": "redis", "sessions__redis_url": url, "sessions__redis_prefix": prefix}


@pytest.fixture
async def gateway(tmp_path, prefix, clock):
    gw = await Gateway(make_config(tmp_path / "var", **redis_settings(prefix)), clock).start()
    yield gw
    await gw.stop()


@pytest.fixture
async def sms_gateway(tmp_path, standin, clock, prefix):
    gw = await Gateway(sms_config(tmp_path / "var", standin, **redis_settings(prefix)), clock).start()
    yield gw
    await gw.stop()


def redis_of(gateway):
    sessions = gateway.app[sessions_key]
    return sessions, sessions.client


async def store_sessions(gateway):
    """Sessions the store holds: none, when they live in Redis."""
    return (await gateway.app[store_key].call(lambda store: store.counts()))["ussd_sessions_open"]


async def submissions(gateway):
    def read(store):
        return [store.submission(row["ref"]) for row in reversed(store.list_submissions(100))]

    return await gateway.app[store_key].call(read)


async def confirmations(gateway, phone=PHONE):
    rows = await gateway.app[store_key].call(lambda store: store.outbox.messages(phone))
    return [row for row in rows if row["kind"] == "confirmation"]


# -- expiry ------------------------------------------------------------------------

async def test_sessions_redis_session_and_offer_carry_their_ttl(gateway):
    sessions, client = redis_of(gateway)
    await gateway.dial("drop", "2", NIK)
    keep_ms = gateway.config["ussd.keep_sessions_hours"] * 3600 * 1000
    window_ms = gateway.config["ussd.resume_minutes"] * 60 * 1000
    session_ttl = await client.pttl(sessions.key("drop"))
    offer_ttl = await client.pttl(sessions.resume_key(sessions.phone_digest(PHONE)))
    assert keep_ms - 60_000 < session_ttl <= keep_ms  # set on the last write, counting down since
    assert window_ms - 60_000 < offer_ttl <= window_ms
    await gateway.dial("done", *REPORT, "1")  # an ended session expires too; it is no offer
    assert keep_ms - 60_000 < await client.pttl(sessions.key("done")) <= keep_ms
    assert await store_sessions(gateway) == 0


async def test_sessions_redis_an_expired_offer_is_offered_no_more(gateway):
    sessions, client = redis_of(gateway)
    await gateway.dial("drop", "2", NIK, "Siti Aminah")
    offer = sessions.resume_key(sessions.phone_digest(PHONE))
    assert await client.pexpire(offer, 1)
    await eventually(lambda: _gone(client, offer))
    assert (await gateway.hop("again", "")).startswith("CON Kentongan, layanan desa")


async def test_sessions_redis_an_expired_session_is_gone(gateway):
    sessions, client = redis_of(gateway)
    screens = await gateway.dial("gone", "2", NIK, "Siti Aminah")
    assert await sessions.count_open() == 1
    assert await client.pexpire(sessions.key("gone"), 1)
    await eventually(lambda: _gone(client, sessions.key("gone")))
    assert await sessions.count_open() == 0
    # A retry of the last hop finds no session: its history is replayed from the main menu, as for a session
    # begun at another gateway, and the caller sees the same screen.
    assert await gateway.hop("gone", f"2*{NIK}*Siti Aminah") == screens[-1]


async def _gone(client, key):
    return await client.exists(key) == 0


# -- resume ------------------------------------------------------------------------------

async def test_sessions_redis_dropped_session_is_resumed_once_within_the_window(gateway):
    await gateway.dial("drop", "2", NIK, "Siti Aminah", "17081990")
    gateway.advance(minutes=4)
    assert (await gateway.hop("again", "")).startswith("CON Sambungan terputus. Lanjutkan Pendaftaran pemilih?")
    assert await gateway.hop("again", "1") == "CON Desa tempat tinggal Anda:\n0 Kembali, 00 Menu"
    end = (await gateway.dial("again", "1", "Sukamaju", "1"))[-1]
    assert end.startswith("END Pendaftaran diterima")
    [made] = await submissions(gateway)
    assert made["answers"] == {"nik": NIK, "name": "Siti Aminah", "birth_date": "1990-08-17", "village": "Sukamaju"}
    assert made["ref"] in end
    assert (await gateway.hop("third", "")).startswith("CON Kentongan")  # offered once, not forever


async def test_sessions_redis_offer_follows_the_gateways_clock_not_only_the_ttl(gateway):
    sessions, client = redis_of(gateway)
    await gateway.dial("drop", "2", NIK)
    gateway.advance(minutes=6)  # past the 5-minute window by the store's clock; Redis's TTL has not run out
    assert await client.exists(sessions.resume_key(sessions.phone_digest(PHONE)))
    assert (await gateway.hop("late", "")).startswith("CON Kentongan")


# -- bound to its phone ----------------------------------------------------------------

async def test_sessions_redis_session_is_bound_to_its_phone_by_digest_only(gateway):
    sessions, client = redis_of(gateway)
    await gateway.dial("mine", "2", NIK)
    status, body, _ = await gateway.post("/ussd/africastalking", {
        "sessionId": "mine", "serviceCode": "*384*1#", "phoneNumber": "+254711082300", "networkCode": "63902",
        "text": "2"})
    assert status == 400 and "another phoneNumber" in body
    assert (await gateway.hop("mine", f"2*{NIK}*Siti Aminah")).startswith("CON Tanggal lahir")
    kept = await client.hgetall(sessions.key("mine"))
    digest = await gateway.app[store_key].call(lambda store: store.phone_digest(PHONE))
    assert kept[b"phone"].decode() == digest
    raw = b"".join(kept.values())
    for secret in (PHONE.encode(), PHONE[1:].encode(), NIK.encode(), b"Siti Aminah"):
        assert secret not in raw


# -- the write after the COMMIT ------------------------------------------------------------

async def test_sessions_redis_lost_write_after_commit_neither_loses_nor_duplicates(sms_gateway, standin, caplog):
    gateway = sms_gateway
    sessions, _ = redis_of(gateway)
    real = sessions._save
    failures = []

    async def fails_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RedisConnectionError("Connection reset by peer")
        return await real(*args, **kwargs)

    # A hop that waits for more input cannot go on without its session: the caller is asked to try again.
    await gateway.hop("early", "")
    sessions._save = fails_once
    assert await gateway.hop("early", REPORT[0]) == BUSY["id"]

    await gateway.dial("lost", *REPORT)
    failures.clear()
    last = "*".join([*REPORT, "1"])
    caplog.clear()
    first = await gateway.hop("lost", last)  # the session ended: its confirmation is answered all the same
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "Redis" in r.getMessage()]
    assert len(warnings) == 1 and PHONE not in warnings[0].getMessage() and not our_errors(caplog.records)
    [made] = await submissions(gateway)
    assert first.startswith("END Terima kasih") and f"Kode: {made['ref']}." in first
    await eventually(lambda: len(standin.accepted) == 1)
    assert made["ref"] in standin.accepted[0]["message"]

    # Had the gateway died before answering, the network would retry the hop: the same submission, confirmed.
    failures.clear()
    failures.append(1)  # this time the write goes through
    assert await gateway.hop("lost", last) == first
    assert await gateway.hop("lost", last) == first  # and now the session is written: a plain retry
    assert [row["ref"] for row in await submissions(gateway)] == [made["ref"]]
    assert len(await confirmations(gateway)) == 1
    await gateway.dial("next", *REPORT, "1")  # the sender is awake: a later SMS goes, and still one for "lost"
    await eventually(lambda: len(standin.accepted) == 2)
    assert sum(made["ref"] in sms["message"] for sms in standin.accepted) == 1


async def connection_reset(*args, **kwargs):
    """A Redis save that fails as a dropped connection does."""
    raise RedisConnectionError("Connection reset by peer")


async def test_sessions_redis_retries_racing_after_a_lost_write_make_one_submission(gateway):
    sessions, _ = redis_of(gateway)
    await gateway.dial("race", *REPORT)
    real = sessions._save

    sessions._save = connection_reset
    last = "*".join([*REPORT, "1"])
    first = await gateway.hop("race", last)
    sessions._save = real
    ends = await asyncio.gather(*[gateway.hop("race", last) for _ in range(4)])
    [made] = await submissions(gateway)
    assert set(ends) == {first} and f"Kode: {made['ref']}." in first
    assert len(await confirmations(gateway)) == 1


async def test_sessions_redis_redial_after_a_lost_confirmation_write_is_not_offered_it_again(sms_gateway, standin):
    gateway = sms_gateway
    sessions, _ = redis_of(gateway)
    await gateway.dial("lost", *REPORT)
    real = sessions._save

    # The confirmation is committed and answered, but Redis keeps the session on its confirm screen, and the
    # caller's resume offer still points there.
    sessions._save = connection_reset
    end = await gateway.hop("lost", "*".join([*REPORT, "1"]))
    sessions._save = real
    [made] = await submissions(gateway)
    assert end.startswith("END Terima kasih") and made["ref"] in end

    # The caller dials again (the END never reached them): the main menu, not "continue your report?", which
    # would confirm it a second time under the new session.
    assert (await gateway.hop("again", "")).startswith("CON Kentongan, layanan desa")
    assert (await gateway.hop("third", "")).startswith("CON Kentongan, layanan desa")  # gone, not skipped once
    assert [row["ref"] for row in await submissions(gateway)] == [made["ref"]]
    await eventually(lambda: len(standin.accepted) == 1)
    assert len(await confirmations(gateway)) == 1


# -- Redis down ------------------------------------------------------------------------------

async def test_sessions_redis_down_at_a_hop_is_a_polite_end_in_the_callers_language(tmp_path, prefix, caplog):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gateway = await Gateway(make_config(tmp_path / "var", **redis_settings(prefix, down))).start()
    try:
        assert len([r for r in caplog.records if "does not answer" in r.getMessage()]) == 1  # at start, once
        await gateway.app[store_key].call(lambda store: store.set_language(PHONE, "en"))
        caplog.clear()
        status, body, kind = await gateway.post("/ussd/africastalking", {
            "sessionId": "d", "serviceCode": "*384*1#", "phoneNumber": PHONE, "networkCode": "51010", "text": ""})
        assert (status, body) == (200, BUSY["en"]) and kind.startswith("text/plain")
        assert body not in gateway.apologies()
        assert await gateway.hop("d2", "", phone="+6281298765432") == BUSY["id"]  # the default language
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 2 and all("reading its session in Redis failed" in r.getMessage() for r in warnings)
        assert all(PHONE not in r.getMessage() for r in caplog.records) and not our_errors(caplog.records)
        assert await submissions(gateway) == [] and await store_sessions(gateway) == 0
    finally:
        await gateway.stop()


async def test_sessions_redis_a_late_copy_of_an_earlier_hop_never_takes_the_session_back(gateway):
    sessions, _ = redis_of(gateway)
    await gateway.dial("late", "2", NIK)
    early, _ = await sessions.load("late", PHONE, offer=False)  # read by a copy of hop 2 before it was written
    await gateway.hop("late", f"2*{NIK}*Siti Aminah")
    assert not await sessions.save("late", phone=PHONE, service_code="*384*1#", state=early["state"],
                                   history=early["history"], response=early["response"], done=False,
                                   resumable=True)
    assert (await gateway.hop("late", f"2*{NIK}*Siti Aminah*17081990")).startswith("CON Desa tempat tinggal")


async def test_sessions_redis_session_sealed_under_a_key_no_longer_held_is_gone(gateway, caplog):
    sessions, client = redis_of(gateway)
    screens = await gateway.dial("old", "2", NIK)
    await client.hset(sessions.key("old"), "sealed", "s9:" + "A" * 40)  # sealed under a rotated-out key
    assert await gateway.hop("old", "2") == screens[1]  # replayed from its history, as an unknown session
    assert [r.levelname for r in caplog.records if "cannot be opened" in r.getMessage()] == ["WARNING"]
    assert not our_errors(caplog.records)
