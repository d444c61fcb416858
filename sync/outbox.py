"""The outbox: every SMS the gateway decided to send, kept until it is sent or given up.

A row is written in the same transaction as the event that caused it (a
submission, an incoming SMS, a status change), so deciding to send and
recording the decision cannot come apart. The sender marks a row `sending`
and commits before it calls the provider; a gateway that dies there finds
the row `sending` on start and queues it again: a crash costs at most one
extra copy, never a lost message. On a store several processes share, the
row is queued again only once it has been `sending` for longer than a send
can take (`recover`): until then its sender may still be waiting for the
provider's answer.

States:

    queued      waits for its next attempt (`next_attempt_at`)
    sending     handed to the provider (`send_id` names the attempt)
    sent        the provider took it; delivery reports may follow
    delivered   a delivery report said Success                       (final)
    failed      a delivery report said Failed, Rejected or Expired   (final)
    dead        given up: refused for good, or out of attempts      (final; operators look here)
    expired     waited past its time-to-live, never sent              (final)
    suppressed  never sent: the number said STOP to notices, or hit
                the hourly cap on automatic replies                   (final)

Only rows queued as `auto` count toward the cap and are held back by it.
The gateway queues so only the answers two machines could trade forever
(usage, for text it did not understand), never a confirmation or an
acknowledgement.

A reply to an SMS that came with a `linkId` (premium, on-demand) carries
that id and the short code the SMS came to: the provider must send it back
through them.
"""

from __future__ import annotations

import datetime as dt
from ulid import ULID

from .database import Database

STATES = ("queued", "sending", "sent", "delivered", "failed", "dead", "expired", "suppressed")
FINAL = frozenset({"delivered", "failed", "dead", "expired", "suppressed"})
DELIVERY_FINAL = {"Success": "delivered", "Failed": "failed", "Rejected": "failed", "Expired": "failed"}
KINDS = ("confirmation", "reply", "notice")
RESENT = "resent after a restart: the provider may have had it already"
RETRIED = "retried by an operator"


def create_table(db) -> None:
    """The outbox table; a schema step of the store that holds it."""
    db["outbox"].create({
        "id": str, "phone": str, "phone_hash": str, "body": str, "kind": str, "auto": int,
        "cause": str, "state": str, "attempts": int, "send_id": str, "next_attempt_at": str,
        "expires_at": str, "provider_id": str, "provider_status": str, "reason": str,
        "created_at": str, "updated_at": str,
    }, pk="id", not_null={"phone", "phone_hash", "body", "kind", "auto", "state", "attempts",
                          "next_attempt_at", "expires_at", "created_at", "updated_at"})
    db["outbox"].create_index(["state", "next_attempt_at"])
    db["outbox"].create_index(["provider_id"])
    db["outbox"].create_index(["phone_hash", "auto", "created_at"])


class Outbox:
    """The outbox table of a store; every method joins the store's transaction."""

    def __init__(self, store: Database):
        self._store = store
        self._db = store.db
        self._for_update = " FOR UPDATE" if store.postgres else ""
        """Locks a row read to be changed on PostgreSQL, where workers sharing the store take delivery reports
        at once; SQLite's BEGIN IMMEDIATE already lets one writer in at a time."""

    def _now(self) -> dt.datetime:
        return self._store.clock()

    def add(self, phone: str, body: str, kind: str, *, ttl: dt.timedelta, auto: bool = False,
            cause: str | None = None, cap_per_hour: int | None = None, opted_out: bool = False) -> dict:
        """Queue `body` for `phone`; return the row's id and state.

        A `notice` to a number that `opted_out` (said STOP), and an `auto`
        reply past `cap_per_hour` automatic replies to that number in the
        last hour, are kept as `suppressed` instead of queued: visible, never
        sent.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown outbox kind {kind!r}")
        store = self._store
        now = self._now()
        digest = store.phone_digest(phone)
        state, reason = "queued", None
        if kind == "notice" and opted_out:
            state, reason = "suppressed", "opted out (STOP)"
        elif auto and cap_per_hour is not None:
            recent = self._db.execute(
                "SELECT count(*) FROM outbox WHERE phone_hash = ? AND auto = 1 AND created_at >= ?",
                [digest, store.stamp(now - dt.timedelta(hours=1))]).fetchone()[0]
            if recent >= cap_per_hour:
                state, reason = "suppressed", f"over {cap_per_hour} automatic replies in an hour"
        row = {
            "id": str(ULID()), "phone": store.sealer.seal(phone), "phone_hash": digest,
            "body": store.sealer.seal(body), "kind": kind, "auto": int(auto), "cause": cause,
            "state": state, "attempts": 0, "send_id": None, "next_attempt_at": store.stamp(now),
            "expires_at": store.stamp(now + ttl), "provider_id": None, "provider_status": None,
            "reason": reason, "created_at": store.stamp(now), "updated_at": store.stamp(now),
        }
        with store.transaction():
            # One prepared INSERT: sqlite-utils' insert path costs more than the rest of a confirmation.
            self._db.execute(f"INSERT INTO outbox ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             list(row.values()))
        return {"id": row["id"], "state": state}

    def reply_through(self, cause: str, short_code: str, link_id: str) -> None:
        """Every row the incoming SMS `cause` made goes back through its premium link."""
        with self._store.transaction():
            self._db.execute("UPDATE outbox SET short_code = ?, link_id = ? WHERE cause = ?",
                             [short_code, link_id, cause])

    def recover(self, older_than: dt.timedelta | None = None) -> int:
        """Rows left `sending` by a process that died are queued again (sent at most once more); return how many.

        With `older_than`, only rows `sending` for longer than that: on a
        store that several processes share, a younger one may still be in the
        provider's hands in a process alive elsewhere (a leader that stepped
        down while its call went on), which records its outcome itself.
        Without, every one: a lone process just started is the only sender.
        """
        now = self._now()
        limit, args = "", [RESENT, self._store.stamp(now)]
        if older_than is not None:
            limit = " AND updated_at <= ?"
            args.append(self._store.stamp(now - older_than))
        with self._store.transaction():
            cursor = self._db.execute(
                "UPDATE outbox SET state = 'queued', reason = ?, updated_at = ? WHERE state = 'sending'" + limit, args)
        return cursor.rowcount

    def due(self, limit: int = 20) -> list[str]:
        """Ids of queued rows whose next attempt is due, oldest first."""
        rows = self._db.execute(
            "SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?", [self._store.stamp(self._now()), limit]).fetchall()
        return [row[0] for row in rows]

    def next_due(self) -> dt.datetime | None:
        """When the earliest queued row is due, or None when nothing waits."""
        row = self._db.execute("SELECT min(next_attempt_at) FROM outbox WHERE state = 'queued'").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row[0] else None

    def begin(self, message_id: str) -> dict | None:
        """Claim a due row for one attempt: mark it `sending` (or `expired`) and commit.

        Returns `to`, `body`, `send_id`, `attempt`, and `short_code` and
        `link_id` (None unless it replies through a premium link) for the
        provider, or None when the row is not queued any more or has outlived
        its time-to-live.
        """
        store = self._store
        now = store.stamp(self._now())
        with store.transaction():
            row = self._db.execute(
                "SELECT phone, body, attempts, expires_at, state, short_code, link_id FROM outbox WHERE id = ?",
                [message_id]).fetchone()
            if row is None or row[4] != "queued":
                return None
            if row[3] < now:
                self._set(message_id, state="expired", reason="waited past its time-to-live")
                return None
            attempt = row[2] + 1
            send_id = f"{message_id}-{attempt}"
            # Only while it is still queued: a sender that lost its lead a moment ago may be looking at the
            # same row (the SMS sender runs in one process, but a hand-over is not instantaneous).
            cursor = self._db.execute(
                "UPDATE outbox SET state = 'sending', attempts = ?, send_id = ?, updated_at = ? "
                "WHERE id = ? AND state = 'queued'", [attempt, send_id, now, message_id])
            if cursor.rowcount != 1:
                return None
        return {"id": message_id, "to": store.sealer.open(row[0]), "body": store.sealer.open(row[1]),
                "send_id": send_id, "attempt": attempt, "short_code": row[5], "link_id": row[6]}

    def sent(self, message_id: str, provider_id: str | None, provider_status: str) -> None:
        """The provider took it. A copy resent after a crash keeps saying so: it may be a duplicate."""
        with self._store.transaction():
            reason = self._db.execute("SELECT reason FROM outbox WHERE id = ?", [message_id]).fetchone()[0]
            self._set(message_id, state="sent", provider_id=provider_id, provider_status=provider_status,
                      reason=reason if reason == RESENT else None)

    def retry(self, message_id: str, reason: str, delay: dt.timedelta, max_attempts: int) -> str:
        """A failed attempt: queue again after `delay`, or give up after `max_attempts`; return the state."""
        attempts = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", [message_id]).fetchone()[0]
        if attempts >= max_attempts:
            self._set(message_id, state="dead", reason=f"{reason} (gave up after {attempts} attempts)")
            return "dead"
        self._set(message_id, state="queued", reason=reason,
                  next_attempt_at=self._store.stamp(self._now() + delay))
        return "queued"

    def retry_dead(self, message_id: str, ttl: dt.timedelta) -> bool:
        """An operator's Retry: a dead row is queued again, due now, for one more attempt, and may wait `ttl`
        from now; False when the row is not dead (any more)."""
        store = self._store
        now = self._now()
        with store.transaction():
            cursor = self._db.execute(
                "UPDATE outbox SET state = 'queued', reason = ?, next_attempt_at = ?, expires_at = ?, updated_at = ? "
                "WHERE id = ? AND state = 'dead'",
                [RETRIED, store.stamp(now), store.stamp(now + ttl), store.stamp(now), message_id])
        return cursor.rowcount == 1

    def give_up(self, message_id: str, reason: str) -> None:
        self._set(message_id, state="dead", reason=reason)

    def report(self, provider_id: str, status: str, reason: str | None) -> str | None:
        """Apply a delivery report; return the row's state, or None for an unknown id.

        A final state (delivered, failed) is never left: a late `Buffered`
        after `Success` changes nothing.
        """
        with self._store.transaction():
            row = self._db.execute("SELECT id, state FROM outbox WHERE provider_id = ?" + self._for_update,
                                   [provider_id]).fetchone()
            if row is None:
                return None
            message_id, state = row
            if state in FINAL:
                return state
            new_state = DELIVERY_FINAL.get(status, state)
            self._set(message_id, state=new_state, provider_status=status,
                      reason=reason or None if new_state == "failed" else None)
        return new_state

    def _set(self, message_id: str, **values) -> None:
        """Update the row's columns named by `values` (names from this module only, never from input)."""
        values["updated_at"] = self._store.stamp(self._now())
        with self._store.transaction():  # one statement: the sender's path, every SMS
            self._db.execute(f"UPDATE outbox SET {', '.join(f'{name} = ?' for name in values)} WHERE id = ?",
                             [*values.values(), message_id])

    def purge(self, older_than: dt.timedelta) -> int:
        """Delete rows in a final state last touched before `older_than` ago; return how many went.

        A row still queued, sending or sent (a delivery report may follow) is
        kept whatever its age.
        """
        final = ", ".join(f"'{state}'" for state in sorted(FINAL))
        with self._store.transaction():
            cursor = self._db.execute(f"DELETE FROM outbox WHERE state IN ({final}) AND updated_at < ?",
                                      [self._store.stamp(self._now() - older_than)])
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        found = dict(self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def messages(self, phone: str | None = None) -> list[dict]:
        """Rows with phone and body opened, oldest first; for tests."""
        where, args = ("phone_hash = ?", [self._store.phone_digest(phone)]) if phone else (None, [])
        return [self._opened(row) for row in self._db["outbox"].rows_where(where, args, order_by="created_at, id")]

    def latest(self, state: str | None = None, limit: int = 50) -> list[dict]:
        """The newest rows (of one `state`), newest first, at most `limit`: only those are opened."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown outbox state {state!r}; known: {', '.join(STATES)}")
        where, args = ("state = ?", [state]) if state else (None, [])
        rows = self._db["outbox"].rows_where(where, args, order_by="created_at DESC, id DESC", limit=limit)
        return [self._opened(row) for row in rows]

    def _opened(self, row: dict) -> dict:
        row["phone"] = self._store.sealer.open(row["phone"])
        row["body"] = self._store.sealer.open(row["body"])
        del row["phone_hash"]
        return row
