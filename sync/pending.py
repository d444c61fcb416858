"""SMS reports waiting for their place: one draft per phone, until the place comes or the draft expires.

A report by SMS without a place (`LAPOR JALAN lubang besar`) is no
submission yet: staff cannot act on a report that says nowhere. The gateway
keeps it here and asks for the place; the phone's next SMS that is not a
keyword completes it. A draft is the caller's own words, so it is sealed like
every answer and found by the phone's digest.

An expired draft is kept for `KEEP_EXPIRED` more, so that a place sent late
is told the report expired instead of getting the usage answer; then
`purge` deletes it (the store's hourly housekeeping calls it).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from .database import Database

KEEP_EXPIRED = dt.timedelta(days=1)


@dataclass(frozen=True)
class Waiting:
    """The draft a phone left: the submission without its place, its language, whether it expired."""

    draft: dict
    language: str
    inbound_id: str | None
    expired: bool


class Pending:
    """The `sms_pending` table of a store; every method joins the store's transaction."""

    def __init__(self, store: Database):
        self._store = store
        self._db = store.db

    def hold(self, phone: str, draft: dict, *, language: str, inbound_id: str, ttl: dt.timedelta) -> None:
        """Keep `draft` for `phone` until `ttl` from now; it replaces any draft the phone left before."""
        store = self._store
        now = store.clock()
        with store.transaction():
            self._db["sms_pending"].upsert({
                "phone_hash": store.phone_digest(phone),
                "draft": store.sealer.seal(json.dumps(draft, ensure_ascii=False)),
                "language": language, "inbound_id": inbound_id,
                "created_at": store.stamp(now), "expires_at": store.stamp(now + ttl),
            }, pk="phone_hash")

    def waiting(self, phone: str) -> Waiting | None:
        """The draft `phone` left, expired or not; None when there is none."""
        row = self._db.execute("SELECT draft, language, inbound_id, expires_at FROM sms_pending "
                               "WHERE phone_hash = ?", [self._store.phone_digest(phone)]).fetchone()
        if row is None:
            return None
        expired = row[3] <= self._store.stamp(self._store.clock())
        return Waiting(json.loads(self._store.sealer.open(row[0])), row[1], row[2], expired)

    def drop(self, phone: str) -> None:
        """Forget the draft `phone` left, if any."""
        with self._store.transaction():
            self._db.execute("DELETE FROM sms_pending WHERE phone_hash = ?", [self._store.phone_digest(phone)])

    def purge(self) -> int:
        """Delete drafts expired more than `KEEP_EXPIRED` ago; return how many went."""
        with self._store.transaction():
            cursor = self._db.execute("DELETE FROM sms_pending WHERE expires_at < ?",
                                      [self._store.stamp(self._store.clock() - KEEP_EXPIRED)])
        return cursor.rowcount

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM sms_pending").fetchone()[0]
