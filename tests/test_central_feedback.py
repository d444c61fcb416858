"""Villagers' answers to "is it fixed?" reach the central backend in a signed batch, and count once."""

import datetime as dt
import functools

import aiohttp
import pytest

from conftest import MovableClock, served
from flows import Engine
from gateway.config import data_root
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from sync.protocol import BATCH_PATH, BATCH_TYPE, QUIET, check_answer, encode_batch, sign_request

SECRET = "secret-of-a"
START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)

pytestmark = pytest.mark.central_backends


@functools.cache
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def submission(n: int) -> dict:
    return {"id": f"01KB{n:022d}", "ref": f"AAAA{n:02d}", "service": "report", "channel": "sms",
            "answers": {"category": "road", "location": "Cibodas", "description": "Lubang"},
            "phone": "+6281234567890", "language": "id", "created_at": START.isoformat()}


def answer(n: int, ref_n: int, fixed: bool, rating=None, words="", at=None) -> dict:
    return {"id": f"01KC{n:022d}", "submission_id": f"01KB{ref_n:022d}", "ref": f"AAAA{ref_n:02d}", "fixed": fixed,
            "rating": rating, "words": words, "at": (at or START).isoformat()}


async def send(url: str, items: list, feedback: list | None) -> dict:
    body = encode_batch("desa-a", items, feedback)
    headers = {**sign_request("desa-a", SECRET, "POST", BATCH_PATH, body), "Content-Type": BATCH_TYPE}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + BATCH_PATH, data=body, headers=headers) as response:
            raw = await response.read()
            assert response.status == 200, raw
            check_answer(response.headers, SECRET, 200, headers["X-Kentongan-Nonce"], raw)
            return await response.json()


async def test_feedback_accepted_once_duplicate_late_unknown_and_not_fixed_reopens(tmp_path, central_db):
    clock = MovableClock(START)
    config = CentralConfig(tmp_path, "", engine().forms("en"), gateways={"desa-a": SECRET}, prefixes={"desa-a": "A"},
                           clock=clock, rating_days=14, database_url=central_db)
    app = create_central_app(config)
    async with served(app) as url:
        answered = await send(url, [submission(n) for n in (1, 2, 3, 4)], None)
        assert "feedback_results" not in answered  # an old batch stays as it was
        thread = app[central_store_key]
        for ref in ("AAAA01", "AAAA02", "AAAA03"):
            await thread.call(lambda s, ref=ref: s.change(ref, "resolved", "Sudah ditambal", "ani"))
        clock.advance(days=3)
        feedback = [answer(1, 1, True, 5, at=clock()), answer(2, 2, False, 1, "lubangnya masih ada", at=clock()),
                    answer(3, 1, False, 1, at=clock()), answer(4, 4, True, 4), answer(5, 9, True, 5),
                    {"id": "not-a-ulid"}]
        results = (await send(url, [], feedback))["feedback_results"]
        assert [r["result"] for r in results] == ["accepted", "accepted", "duplicate", "late", "unknown", "rejected"]
        again = (await send(url, [], feedback[:2]))["feedback_results"]  # a retried batch
        assert [r["result"] for r in again] == ["duplicate", "duplicate"]
        clock.advance(days=12)
        late = (await send(url, [], [answer(6, 3, True, 3, at=clock())]))["feedback_results"]
        assert late == [{"id": answer(6, 3, True).get("id"), "result": "late"}]

        fixed = await thread.call(lambda s: s.submission_page("AAAA01"))
        assert (fixed["status"], fixed["fixed"], fixed["rating"], fixed["reopened"]) == ("resolved", 1, 5, 0)
        reopened = await thread.call(lambda s: s.submission_page("AAAA02"))
        assert (reopened["status"], reopened["fixed"], reopened["rating"], reopened["reopened"]) == (
            "in_progress", 0, 1, 1)
        assert reopened["resolved_at"] is None and reopened["first_resolved_at"]
        words = reopened["history"][-1]
        assert (words["kind"], words["who"], words["detail"], words["note"], words["status"]) == (
            "feedback", "villager", "not fixed", "lubangnya masih ada", "in_progress")
        kept = await thread.call(lambda s: s.submission_page("AAAA03"))
        assert kept["fixed"] is None and kept["history"][-1]["kind"] == "late-feedback"
        updates = await thread.call(lambda s: s.updates("desa-a", 0))
        last = [u for u in updates if u["ref"] == "AAAA02"][-1]
        assert (last["status"], last["notice"]) == ("in_progress", QUIET)  # the gateway sends no SMS for it
