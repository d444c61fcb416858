"""The staff API with per-person tokens: the role decides what a call may do and see, views of personal fields
and status changes are audited, the shared token still works (deprecated), wrong tokens are limited per address.

A real central backend on a loopback port (test_sync's `Central`), its submissions from a signed batch, its
accounts and tokens made through its store.
"""

import logging

import aiohttp
import pytest

from conftest import PHONE
from sync.central.app import central_store_key
from test_sync import STAFF, Central, batch, item, signed_post

VOTER = {"nik": "3201231708900001", "name": "Siti Aminah", "birth_date": "17081990", "village": "Sukamaju"}


@pytest.fixture
async def central(tmp_path):
    central = await Central(tmp_path / "central").start()
    status, _, _ = await signed_post(central, batch([item(1), item(2, service="voter", answers=VOTER)]))
    assert status == 200
    yield central
    await central.stop()


def store(central):
    return central.runner.app[central_store_key]


async def token_of(central, name, role):
    def make(s):
        s.accounts.add(name, role, "a long enough password", "Dinas PU")
        return s.accounts.issue_token(name)

    return await store(central).call(make)


async def call(central, method, path, token, **kwargs):
    async with aiohttp.ClientSession() as http:
        async with http.request(method, central.url + path, headers={"Authorization": f"Bearer {token}"},
                                **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body


async def audit(central):
    return [(row["who"], row["action"], row["target"], row["detail"])
            for row in await store(central).call(lambda s: s.accounts.audit_log())]


async def test_staff_tokens_viewer_sees_masked_phones_and_no_personal_answers(central):
    token = await token_of(central, "tono", "viewer")
    status, body = await call(central, "GET", "/api/v1/submissions", token)
    assert status == 200
    by_service = {row["service"]: row for row in body["submissions"]}
    assert {row["phone"] for row in body["submissions"]} == {"+62812****890"}
    assert by_service["report"]["answers"] == {"category": "road", "location": "Dusun 1", "description": "Rusak"}
    # A voter's village is theirs (Open311 publishes only reports): not shown without `personal`.
    assert by_service["voter"]["answers"] == {} and by_service["voter"]["village"] is None
    assert VOTER["nik"] not in str(body) and VOTER["name"] not in str(body) and PHONE not in str(body)
    assert "Sukamaju" not in str(body)
    ref = by_service["report"]["ref"]
    status, text = await call(central, "PATCH", f"/api/v1/submissions/{ref}", token, json={"status": "resolved"})
    assert status == 403 and "act" in text
    assert await audit(central) == []


async def test_staff_tokens_supervisor_sees_everything_and_each_view_is_audited(central):
    token = await token_of(central, "sari", "supervisor")
    status, body = await call(central, "GET", "/api/v1/submissions", token)
    assert status == 200
    voter = next(row for row in body["submissions"] if row["service"] == "voter")
    assert voter["answers"] == VOTER and voter["phone"] == PHONE
    refs = {row["ref"] for row in body["submissions"]}
    rows = await audit(central)
    assert len(rows) == 2 and {(who, action) for who, action, _, _ in rows} == {("sari", "personal-view")}
    assert {target for _, _, target, _ in rows} == refs


async def test_staff_tokens_patch_writes_a_status_row_with_the_account_name(central):
    token = await token_of(central, "pak", "staff")
    ref = item(1)["ref"]
    status, body = await call(central, "PATCH", f"/api/v1/submissions/{ref}", token,
                              json={"status": "in_progress", "note": "dikerjakan"})
    assert status == 200 and body["status"] == "in_progress" and body["phone"] == "+62812****890"
    assert await audit(central) == [("pak", "status", ref, "received -> in_progress")]


async def test_staff_tokens_disabled_account_and_unknown_token_are_refused(central):
    token = await token_of(central, "tono", "viewer")
    await store(central).call(lambda s: s.accounts.disable("tono"))
    for given in (token, "kt_" + "x" * 43, "not-a-token", ""):
        assert (await call(central, "GET", "/api/v1/submissions", given))[0] == 401


async def test_staff_tokens_shared_token_still_works_and_warns_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    central = await Central(tmp_path / "central").start()
    try:
        await signed_post(central, batch([item(1), item(2)]))
        for _ in range(3):
            status, body = await call(central, "GET", "/api/v1/submissions", STAFF)
            assert status == 200 and {row["phone"] for row in body["submissions"]} == {PHONE}
        rows = await audit(central)
    finally:
        await central.stop()
    deprecated = [r for r in caplog.records if "central.staff_token is deprecated" in r.getMessage()]
    assert len(deprecated) == 1  # as the backend started; no more while it is used within the hour
    assert len(rows) == 6 and {who for who, _, _, _ in rows} == {"central.staff_token"}


async def test_staff_tokens_sixty_wrong_tokens_from_one_address_get_429(central, caplog):
    caplog.set_level(logging.DEBUG)
    token = await token_of(central, "sari", "supervisor")
    statuses = [(await call(central, "GET", "/api/v1/submissions", f"kt_guess{n:040d}"))[0] for n in range(61)]
    assert statuses == [401] * 60 + [429]
    assert (await call(central, "GET", "/api/v1/submissions", STAFF))[0] == 429  # no guessing past it
    assert (await call(central, "GET", "/api/v1/submissions", token))[0] == 429
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert sum("wrong tokens" in r.getMessage() for r in caplog.records) == 1
    assert token not in text and "kt_guess" not in text and STAFF not in text
