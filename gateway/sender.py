"""Sending the outbox: providers and the background worker.

The worker claims due rows one at a time (`Outbox.begin` commits `sending`
first), hands each to the provider in a thread (the africastalking SDK is
synchronous `requests`), and records what happened: accepted, retry later
with exponential backoff and jitter, or give up. Rows a crashed process left
`sending` are queued again when the worker starts.

On a store several processes share (PostgreSQL) the sender runs in the one
process that leads the background duties (`gateway.duties`), and the lead
can move while a send is in the provider's hands: the old leader's call goes
on in its thread, and records its outcome even though the sender that began
it was stopped. So the new leader queues again only rows `sending` for longer
than a send can take (`stale_after`), at start and every RECOVER_EVERY after:
a row left by a process that died is sent again, a row still in flight
elsewhere is not.

A reply to a premium (on-demand) SMS goes back as Africa's Talking requires:
through the SDK's `send_premium`, from the short code the SMS came to, with
its `linkId` and the configured premium keyword, billed to the subscriber
(`bulkSMSMode` 0); everything else through `send`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import random
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol

import requests
from aiohttp import web

from .errors import ProviderError
from .log import mask_phone

log = logging.getLogger(__name__)

ACCEPTED = {100: "Processed", 101: "Success", 102: "Queued"}
"""Africa's Talking per-recipient status codes that mean the provider took the message."""
REFUSED_FOR_GOOD = {402: "InvalidSenderId", 403: "InvalidPhoneNumber", 404: "UnsupportedNumberType",
                    406: "UserInBlacklist", 409: "DoNotDisturbRejection"}
"""Codes a retry cannot change; retrying them is how SMS storms start."""
MAX_DELAY = dt.timedelta(hours=1)
IDLE_SECONDS = 5.0
SENDING_MARGIN = dt.timedelta(seconds=60)
"""Added to a send's own timeouts before a `sending` row counts as left behind: the sender may write its
outcome late (the store busy, or failing over)."""
RECOVER_EVERY = dt.timedelta(seconds=30)
"""How often a running sender looks for rows left `sending` by a process that died (store clock)."""


@dataclass(frozen=True)
class Premium:
    """How a reply to a premium SMS goes back: from the short code it came to, with its `linkId`."""

    short_code: str
    link_id: str


@dataclass(frozen=True)
class Outcome:
    """What a provider did with one message."""

    accepted: bool
    provider_id: str | None = None
    status: str = ""
    permanent: bool = False


class Provider(Protocol):
    def send(self, to: str, body: str, send_id: str, premium: Premium | None = None) -> Outcome:
        """Send one message (a reply through `premium` when given); synchronous; raises on a
        network failure (retried)."""


class ConsoleProvider:
    """Prints each message (number masked) and keeps it in the outbox: `make run` needs no account."""

    def send(self, to: str, body: str, send_id: str, premium: Premium | None = None) -> Outcome:
        via = f" from {premium.short_code}" if premium else ""
        print(f"SMS to {mask_phone(to)}{via} [{send_id}]: {body}", flush=True)
        return Outcome(True, f"console-{send_id}", "Console")


class AfricasTalkingProvider:
    """The official africastalking SDK, pointed at `api_url` when one is set."""

    def __init__(self, username: str, api_key: str, sender_id: str = "", api_url: str = "",
                 timeout: tuple[float, float] = (3.05, 9.05), keyword: str = ""):
        from africastalking.SMS import SMSService

        self._service = SMSService(username, api_key)
        if api_url:
            # The SDK has no option for its base URLs; it reads these attributes on every call.
            # Premium messages go to the second one (Africa's Talking's content host).
            self._service._baseUrl = self._service._contentUrl = api_url
        self._sender_id = sender_id or None
        self._keyword = keyword or None
        self._timeout = timeout

    def send(self, to: str, body: str, send_id: str, premium: Premium | None = None) -> Outcome:
        from africastalking.Service import AfricasTalkingException

        try:
            if premium is None:
                answer = self._service.send(body, [to], sender_id=self._sender_id, timeout=self._timeout)
            else:
                answer = self._service.send_premium(body, premium.short_code, [to], keyword=self._keyword,
                                                    link_id=premium.link_id, timeout=self._timeout)
        except ValueError as error:  # the SDK refuses a number without '+' before sending
            return Outcome(False, status=str(error), permanent=True)
        except AfricasTalkingException as error:
            raise ProviderError(f"refused: {str(error)[:120]}") from None
        if not isinstance(answer, dict):
            raise ProviderError(f"answer is not JSON: {str(answer)[:80]!r}")
        try:
            recipient = answer["SMSMessageData"]["Recipients"][0]
            code = int(recipient["statusCode"])
        except (KeyError, IndexError, TypeError, ValueError):
            message = str(answer.get("SMSMessageData", {}).get("Message", answer))[:120]
            raise ProviderError(f"no recipient in the answer: {message}") from None
        status = str(recipient.get("status", code))
        if code in ACCEPTED:
            return Outcome(True, recipient.get("messageId"), status)
        return Outcome(False, recipient.get("messageId"), f"{code} {status}", permanent=code in REFUSED_FOR_GOOD)


def stale_after(timeout_seconds: float) -> dt.timedelta:
    """How long a row may stay `sending` before it counts as left behind: the provider call's connect and
    read timeouts (`make_provider`: each at most `sms.timeout_seconds`), plus SENDING_MARGIN."""
    return dt.timedelta(seconds=2 * timeout_seconds) + SENDING_MARGIN


def backoff(attempt: int, base: float) -> dt.timedelta:
    """Exponential backoff with jitter: about base, 2 base, 4 base... capped at an hour."""
    ceiling = min(MAX_DELAY.total_seconds(), base * 2 ** (attempt - 1))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


class Sender:
    """Sends due outbox rows until cancelled."""

    def __init__(self, store_thread, provider: Provider, *, max_attempts: int, retry_seconds: float,
                 idle_seconds: float = IDLE_SECONDS, on_accepted: Callable[[], None] = lambda: None,
                 stale: dt.timedelta, shared: bool = False):
        self._store = store_thread
        self._provider = provider
        self._max_attempts = max_attempts
        self._retry_seconds = retry_seconds
        self._idle_seconds = idle_seconds
        """Longest wait between looks at the outbox: short when other processes queue SMS in a shared store."""
        self._on_accepted = on_accepted
        self._shared = shared
        """Other processes use the store, and one of them may have a send in flight (see the module)."""
        self._stale = stale
        """How long a row may stay `sending` before it counts as left behind (`stale_after`)."""
        self._next_recovery: dt.datetime | None = None
        self._in_flight: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.accepted = 0
        """Messages the provider took since the start (`/metrics`)."""
        # The SDK blocks for up to its timeout: one thread of its own keeps it off the loop.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sms")

    def wake(self) -> None:
        """Something was queued: look now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        # A lone process just started is the only sender there is: whatever is `sending` was left by its
        # predecessor. On a shared store, only what has been `sending` for longer than a send can take.
        await self._recover(self._stale if self._shared else None)
        while True:
            # Cleared before looking, so a wake-up during the round is not lost.
            self._wake.clear()
            try:
                if self._store.store.clock() >= self._next_recovery:
                    await self._recover(self._stale)
                sent_any = await self.round()
            except Exception:
                log.exception("outbox round failed")
                sent_any = False
            if not sent_any:
                await self._idle()

    async def _recover(self, older_than: dt.timedelta | None) -> None:
        """Queue again the rows left `sending` (see `Outbox.recover`), and say so once for all of them."""
        self._next_recovery = self._store.store.clock() + RECOVER_EVERY
        recovered = await self._store.call(lambda store: store.outbox.recover(older_than))
        if recovered:
            log.warning("%d SMS were left being sent by a process that stopped; sending them again", recovered)

    async def round(self) -> bool:
        """Send everything due now; True when there was anything."""
        due = await self._store.call(lambda store: store.outbox.due())
        for message_id in due:
            claim = await self._store.call_grouped(_begin, message_id)
            if claim is not None:
                # Shielded: a sender stopped mid-send (this process lost the lead) still records what the
                # provider answered, or the row would stay `sending` and the next leader would send it again.
                send = asyncio.ensure_future(self._send(claim))
                self._in_flight.add(send)
                send.add_done_callback(self._in_flight.discard)
                await asyncio.shield(send)
        return bool(due)

    async def _send(self, claim: dict) -> None:
        loop = asyncio.get_running_loop()
        try:
            premium = Premium(claim["short_code"], claim["link_id"]) if claim["link_id"] else None
            outcome = await loop.run_in_executor(self._pool, self._provider.send, claim["to"], claim["body"],
                                                 claim["send_id"], premium)
        except (ProviderError, requests.RequestException, OSError) as error:
            reason = str(error) if isinstance(error, ProviderError) else f"{type(error).__name__}"
            delay = backoff(claim["attempt"], self._retry_seconds)
            state = await self._store.call(_retry, claim["id"], reason, delay, self._max_attempts)
            log.warning("SMS %s to %s not sent (%s): %s", claim["send_id"], mask_phone(claim["to"]), reason, state)
            return
        if outcome.accepted:
            await self._store.call(_sent, claim["id"], outcome.provider_id, outcome.status)
            self.accepted += 1
            self._on_accepted()
            log.info("SMS %s to %s: %s", claim["send_id"], mask_phone(claim["to"]), outcome.status)
        elif outcome.permanent:
            await self._store.call(_give_up, claim["id"], outcome.status)
            log.warning("SMS %s to %s refused for good: %s", claim["send_id"], mask_phone(claim["to"]),
                        outcome.status)
        else:
            delay = backoff(claim["attempt"], self._retry_seconds)
            await self._store.call(_retry, claim["id"], outcome.status, delay, self._max_attempts)

    async def _idle(self) -> None:
        next_due = await self._store.call(lambda store: store.outbox.next_due())
        wait = self._idle_seconds
        if next_due is not None:
            # The store's clock, not the wall clock: due times are written in it (tests move it).
            now = self._store.store.clock()
            wait = min(wait, max(0.0, (next_due - now).total_seconds()))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=wait)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        for send in self._in_flight:  # the process is stopping: its row stays `sending`, queued again later
            send.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_provider(config) -> Provider:
    if config["sms.provider"] == "africastalking":
        read = config["sms.timeout_seconds"]
        return AfricasTalkingProvider(
            config["sms.africastalking.username"], config["sms.africastalking.api_key"],
            config["sms.africastalking.sender_id"], config["sms.africastalking.api_url"],
            timeout=(min(3.05, read), read), keyword=config["sms.africastalking.keyword"])
    return ConsoleProvider()


async def sender_context(app: web.Application) -> AsyncIterator[None]:
    """The app's sender; it sends only while this process runs the background duties (`gateway.duties`),
    but every process has one, for the wake-ups of its handlers."""
    from .duties import SHARED_POLL_SECONDS, duty, shared_store
    from .metrics import metrics_key
    from .resources import config_key, sender_key, store_key

    config = app[config_key]
    shared = shared_store(app)
    sender = Sender(app[store_key], make_provider(config), max_attempts=config["sms.max_attempts"],
                    retry_seconds=config["sms.retry_seconds"],
                    idle_seconds=SHARED_POLL_SECONDS if shared else IDLE_SECONDS,
                    on_accepted=app[metrics_key].sms_sent, shared=shared,
                    stale=stale_after(config["sms.timeout_seconds"]))
    app[sender_key] = sender
    async with duty(app, "SMS sender", sender.run):
        yield
    sender.close()


# The claim joins the hops' group commit (`StoreThread.call_grouped`): durable before the provider is called,
# as before, but sharing its fsync with the hops that arrive meanwhile. What the provider answered is written
# by a plain call, in arrival order: a delivery report queued after it must find the provider's id (a grouped
# write could run after the report), and it must not fail with another call's transaction (the SMS went).

def _begin(store, message_id: str) -> dict | None:
    return store.outbox.begin(message_id)


def _sent(store, message_id: str, provider_id: str | None, status: str) -> None:
    store.outbox.sent(message_id, provider_id, status)


def _give_up(store, message_id: str, status: str) -> None:
    store.outbox.give_up(message_id, status)


def _retry(store, message_id: str, reason: str, delay, max_attempts: int) -> str:
    return store.outbox.retry(message_id, reason, delay, max_attempts)
