"""The web phone at `/simulator`: a feature phone on screen for testers and trainers (`simulator.enabled`).

Each call and each answer goes through the gateway's real USSD callback:
the page (its small script, or its plain form without one) posts here, and
this module posts Africa's Talking's own form fields to
`/ussd/africastalking` on the very server that took the request, adding
`?key=` itself. So the callback secret never reaches the browser, and a hop
takes the path of a real one: middlewares, checks, per-phone limits. The SMS
a number received are read from the outbox, newest first.

Who may use it: anyone who can reach it, without signing in. It is off
unless `simulator.enabled` is set (the demo config sets it), and it shows
the SMS of whatever number is typed, so a gateway that holds villagers'
numbers keeps it off. A number's hourly limit of USSD sessions holds here as
for any caller.

The caller's language: choosing one sets it for that number when a call
starts, as the language menu does, so the call and its SMS are in it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from ulid import ULID

from flows.catalog import N_
from flows.text import USSD_LIMIT, ussd_cost
from sync.pages import form, language, pages_key, render
from sync.store import Store

from . import turn
from .callback import BadCallback, e164
from .resources import config_key, engine_key, store_key
from .ussd import MAX_TEXT

log = logging.getLogger(__name__)

PREFIX = "/simulator"
SCRIPT = Path(__file__).parent / "static" / "simulator.js"
DEMO_PHONE = "+6281234567890"
SERVICE_CODE = "*384*1#"
NETWORK_CODE = "00000"
KEYS = tuple("123456789*0#")
MAX_ENTRY = 182
"""The longest answer one hop carries: a screen's worth."""
SMS_SHOWN = 10
FORWARD_SECONDS = 15.0
"""The most the network waits for an answer to one hop."""
USSD_CODE = re.compile(r"\*[0-9*]{1,30}#")
SESSION_ID = re.compile(r"[0-9A-Z]{26}")
STATE_LABELS = {"queued": N_("web.simulator.state.queued"), "sending": N_("web.simulator.state.sending"),
                "sent": N_("web.simulator.state.sent"), "delivered": N_("web.simulator.state.delivered"),
                "failed": N_("web.simulator.state.failed"), "dead": N_("web.simulator.state.dead"),
                "expired": N_("web.simulator.state.expired"), "suppressed": N_("web.simulator.state.suppressed")}
"""What the page calls each outbox state."""
BAD_PHONE = N_("web.simulator.bad_phone")
BAD_CODE = N_("web.simulator.bad_code")
BAD_LANGUAGE = N_("web.simulator.bad_language")
UNREACHABLE = N_("web.simulator.unreachable")
REFUSED = N_("web.simulator.refused")
http_key = web.AppKey("simulator_http", aiohttp.ClientSession)


def setup_simulator(app: web.Application) -> None:
    """The web phone's routes, when `simulator.enabled`; otherwise none, so that every one of them is a 404."""
    if not app[config_key]["simulator.enabled"]:
        return
    script = SCRIPT.read_bytes()

    async def serve_script(request: web.Request) -> web.Response:
        return web.Response(body=script, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.cleanup_ctx.append(http_context)
    app.router.add_get(PREFIX, phone_page)
    app.router.add_post(PREFIX, press)
    app.router.add_get(f"{PREFIX}/sms", sms_json)
    app.router.add_post(f"{PREFIX}/language", language_json)
    app.router.add_get(f"{PREFIX}/simulator.js", serve_script)


def _refuse_other_sites(request: web.Request) -> None:
    """403 for a post another web site's page made the browser send (the web phone has no sign-in, so no CSRF
    token to check): a browser names the page's origin in `Origin` and says `Sec-Fetch-Site: cross-site`.
    A client that is no browser (`kentongan simulate`) sends neither."""
    origin = request.headers.get("Origin")
    foreign = origin not in (None, "null") and urlsplit(origin).netloc != request.host
    if foreign or request.headers.get("Sec-Fetch-Site") == "cross-site":
        log.warning("web phone: a post from another site (%s) refused", ascii((origin or "")[:80]))
        raise web.HTTPForbidden(text="the web phone takes posts from its own page only")


async def http_context(app: web.Application) -> AsyncIterator[None]:
    """The client the web phone dials its own server with."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_SECONDS)) as http:
        app[http_key] = http
        yield


@dataclass
class Handset:
    """What the page holds between two presses: the number, the call under way and the answer being typed.

    `code` is the code the call dialed, `history` the `text` of its last hop
    and `inputs` how many answers that joins; `screen` the last body the
    gateway answered.
    """

    phone: str = DEMO_PHONE
    language: str = ""
    session: str = ""
    code: str = ""
    history: str = ""
    inputs: int = 0
    entry: str = SERVICE_CODE
    screen: str = ""

    @classmethod
    def from_form(cls, fields: dict[str, str]) -> Handset:
        """The handset a form describes; a call whose hidden fields were tampered with is hung up."""
        inputs = fields.get("inputs", "0")
        session, code, history = fields.get("session", ""), fields.get("code", ""), fields.get("history", "")
        handset = cls(phone=fields.get("phone", "").strip()[:40], language=fields.get("language", ""),
                      entry=fields.get("entry", "")[:MAX_ENTRY])
        counted = inputs.isascii() and inputs.isdigit() and int(inputs) < 1000
        if SESSION_ID.fullmatch(session) and USSD_CODE.fullmatch(code) and len(history) <= MAX_TEXT and counted:
            handset = replace(handset, session=session, code=code, history=history, inputs=int(inputs))
        return handset

    def text_with(self, answer: str) -> str:
        """The callback's `text` once `answer` is sent: every answer of the call joined by `*`."""
        return answer if self.inputs == 0 else f"{self.history}*{answer}"


# -- pages ---------------------------------------------------------------------------

async def phone_page(request: web.Request) -> web.Response:
    """The phone, idle; `?phone=` shows that number and the SMS it received."""
    handset = Handset(language=language(request))
    reason = None
    if "phone" in request.query:
        handset.phone = request.query["phone"].strip()[:40]
        if _phone(handset.phone) is None:
            reason = BAD_PHONE
    return await _answer(request, handset, reason)


async def press(request: web.Request) -> web.StreamResponse:
    """One key of the phone: a digit or Clear edits the answer; Call/Send dials or answers; End hangs up.

    A form without `press` is Call/Send (Enter in a field); an unknown key changes nothing.
    """
    _refuse_other_sites(request)
    fields = await form(request)
    handset = Handset.from_form(fields)
    key, reason = fields.get("press", "send"), None
    if key in KEYS:
        handset.entry = (handset.entry + key)[:MAX_ENTRY]
    elif key == "clear":
        handset.entry = handset.entry[:-1]
    elif key == "end":
        handset = Handset(phone=handset.phone, language=handset.language)
    elif key == "send":
        handset, reason = await _send(request, handset)
    return await _answer(request, handset, reason)


async def _send(request: web.Request, handset: Handset) -> tuple[Handset, str | None]:
    """Dial (no call under way) or send the typed answer through the real callback; the handset after it."""
    phone = _phone(handset.phone)
    if phone is None:
        return handset, BAD_PHONE
    if handset.language not in request.app[engine_key].languages:
        return handset, BAD_LANGUAGE
    if not handset.session:
        if not USSD_CODE.fullmatch(handset.entry):
            return handset, BAD_CODE
        await request.app[store_key].call(set_language, phone, handset.language)
        handset = replace(handset, session=str(ULID()), code=handset.entry)
        text = ""
    else:
        text = handset.text_with(handset.entry)
    fields = {"sessionId": handset.session, "serviceCode": handset.code, "phoneNumber": phone,
              "networkCode": NETWORK_CODE, "text": text}
    try:
        status, body = await forward(request, fields)
    except (aiohttp.ClientError, TimeoutError) as error:
        log.warning("web phone: the USSD callback did not answer: %s", type(error).__name__)
        return handset, UNREACHABLE
    if status != 200:
        return replace(handset, screen=f"{status} {body[:200]}"), REFUSED
    if body.startswith("CON "):
        return replace(handset, history=text, inputs=handset.inputs + (text != ""), entry="", screen=body), None
    return Handset(phone=handset.phone, language=handset.language, screen=body), None


async def forward(request: web.Request, fields: dict[str, str]) -> tuple[int, str]:
    """Post `fields` to the USSD callback of the server that took `request`, with the callback key."""
    transport = request.transport
    if transport is None:
        raise web.HTTPServiceUnavailable(text="the connection closed")
    host, port = transport.get_extra_info("sockname")[:2]
    host = f"[{host}]" if ":" in host else host
    secret = request.app[config_key]["gateway.callback_secret"]
    async with request.app[http_key].post(f"http://{host}:{port}/ussd/africastalking", data=fields,
                                          params={"key": secret} if secret else {}) as response:
        return response.status, await response.text()


async def _answer(request: web.Request, handset: Handset, reason: str | None) -> web.StreamResponse:
    """The page, or its JSON for the page's script (`Accept: application/json`)."""
    phone = _phone(handset.phone)
    messages = await request.app[store_key].call(received, phone) if phone else []
    status = 400 if reason in (BAD_PHONE, BAD_CODE, BAD_LANGUAGE) else 200
    if "application/json" in request.headers.get("Accept", ""):
        words = _gettext(request)
        return web.json_response({
            **asdict(handset), "count": _count(handset.screen), "limit": USSD_LIMIT,
            "reason": words(reason) if reason else "",
            "sms": [{**m, "state": words(STATE_LABELS[m["state"]])} for m in messages]}, status=status)
    return render(request, "simulator.html", {
        "site": N_("web.simulator.title"), "prefix": PREFIX, "handset": handset, "reason": reason,
        "count": _count(handset.screen), "limit": USSD_LIMIT, "keys": KEYS, "sms": messages,
        "states": STATE_LABELS}, status=status)


def _gettext(request: web.Request):
    translations = request.app[pages_key].translations.get(language(request))
    return translations.gettext if translations else (lambda msgid: msgid)


def _count(body: str) -> int:
    return ussd_cost(body) if body else 0


# -- JSON for the terminal phone -----------------------------------------------------

async def sms_json(request: web.Request) -> web.Response:
    """`GET /simulator/sms?phone=`: the SMS the number received, newest first (`kentongan simulate` shows them)."""
    phone = _phone(request.query.get("phone", ""))
    if phone is None:
        return web.json_response({"error": "phone must be in E.164 form, like +6281234567890"}, status=400)
    return web.json_response({"sms": await request.app[store_key].call(received, phone)})


async def language_json(request: web.Request) -> web.Response:
    """`POST /simulator/language` (`phone`, `language`): the number's language, set as the language menu sets it."""
    _refuse_other_sites(request)
    fields = await form(request)
    phone = _phone(fields.get("phone", ""))
    if phone is None:
        return web.json_response({"error": "phone must be in E.164 form, like +6281234567890"}, status=400)
    languages = request.app[engine_key].languages
    if fields.get("language") not in languages:
        return web.json_response({"error": f"language must be one of {', '.join(languages)}"}, status=400)
    await request.app[store_key].call(set_language, phone, fields["language"])
    return web.json_response({"language": fields["language"]})


# -- the store's side ----------------------------------------------------------------

def set_language(store: Store, phone: str, lang: str) -> None:
    with store.transaction():
        turn.set_language(store, phone, lang)


def received(store: Store, phone: str) -> list[dict]:
    """The newest SMS queued for `phone` (at most SMS_SHOWN), newest first: id, time, kind, state and text."""
    rows = store.db["outbox"].rows_where("phone_hash = ?", [store.phone_digest(phone)],
                                         order_by="created_at DESC, id DESC", limit=SMS_SHOWN)
    return [{"id": row["id"], "at": row["created_at"], "kind": row["kind"], "state": row["state"],
             "text": store.sealer.open(row["body"])} for row in rows]


def _phone(raw: str) -> str | None:
    try:
        return e164(raw) if raw else None
    except BadCallback:
        return None
