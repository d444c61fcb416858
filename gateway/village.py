"""The kiosk's view of the village: its own requests (`/kiosk/requests`), and where callers give up
(`/kiosk/funnel`, `/kiosk/funnel.json`).

Everything here reads the local store only, so it works with no link to the
centre. The list never shows a personal field. One request's page shows its
answers and phone to a role with "personal", and writes each such view to
the audit log; any other role sees the answers chosen from a list and a
masked number.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from aiohttp import web
from babel.dates import format_date, format_datetime
from babel.support import NullTranslations
from markupsafe import Markup

from flows.catalog import N_
from flows.engine import STATUS_LABELS
from sync.pages import BAD_ADDRESS, account_key, day_stamp, language, pages_key, period_fault, render, require
from sync.protocol import STATUSES
from sync.reference import ALPHABET, MAX_LENGTH, normalize_reference
from sync.seal import mask_phone

from . import funnel
from .resources import engine_key, rules_key, store_key
from .turn import service_title

PAGE = 25
"""Requests per page of the list."""
ULID_LENGTH = 26
BAD_REF = N_("web.requests.bad_ref")
BAD_DATE = N_("web.requests.bad_date")
BAD_RANGE = N_("web.requests.bad_range")
NOT_FOUND = N_("web.request.not_found")
SYNC_STATES = {"pending": N_("web.kiosk.pending"), "synced": N_("web.kiosk.synced"),
               "rejected": N_("web.kiosk.rejected")}
CHANNELS = {"ussd": N_("web.requests.channel.ussd"), "sms": N_("web.requests.channel.sms"),
            "kiosk": N_("web.requests.channel.kiosk")}


def setup_village(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/requests", requests_page)
    app.router.add_get(f"{prefix}/requests/{{ref}}", request_page)
    app.router.add_get(f"{prefix}/funnel", funnel_page)
    app.router.add_get(f"{prefix}/funnel.json", funnel_json)


# -- the list -----------------------------------------------------------------------

def _filters(query, services: list[str]) -> tuple[dict[str, str], str | None]:
    """The list's filters as typed, and the reason they are refused (None when they are fine)."""
    typed = {key: query.get(key, "").strip()[:40] for key in ("ref", "service", "status", "from", "to")}
    typed["ref"] = normalize_reference(typed["ref"])
    if len(typed["ref"]) > MAX_LENGTH or set(typed["ref"]) - set(ALPHABET):
        return typed, BAD_REF
    if typed["service"] not in ("", *services) or typed["status"] not in ("", *STATUSES):
        return typed, BAD_ADDRESS
    fault = period_fault(typed)
    return typed, {"date": BAD_DATE, "range": BAD_RANGE}[fault] if fault else None


def _when(stamp: str | None, lang: str) -> str:
    return format_datetime(dt.datetime.fromisoformat(stamp), "short", tzinfo=dt.timezone.utc, locale=lang) if stamp else ""


@require("read")
async def requests_page(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    lang = language(request)
    services = [name for name, flow in engine.flows.items() if flow.submits]
    typed, reason = _filters(request.query, services)
    before = request.query.get("before", "")
    if before and not (len(before) == ULID_LENGTH and before.isascii() and before.isalnum()):
        return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    rows = []
    if reason is None:
        chosen = {"ref": typed["ref"], "service": typed["service"], "status": typed["status"],
                  "since": day_stamp(typed["from"]) if typed["from"] else "",
                  "until": day_stamp(typed["to"], 1) if typed["to"] else "", "before": before}
        rows = await request.app[store_key].call(lambda s: s.list_submissions(PAGE + 1, **chosen))
    more = len(rows) > PAGE
    rows = [{**row, "title": service_title(engine, lang, row["service"]),
             "status_word": STATUS_LABELS.get(row["status"], row["status"]),
             "channel_word": CHANNELS.get(row["channel"], row["channel"]),
             "created": _when(row["created_at"], lang), "changed": _when(row["status_at"], lang)}
            for row in rows[:PAGE]]
    kept = {key: value for key, value in typed.items() if value}
    return render(request, "requests.html", {
        "rows": rows, "typed": typed, "reason": reason, "first_page": not before,
        "services": [(name, service_title(engine, lang, name)) for name in services],
        "statuses": [(status, STATUS_LABELS.get(status, status)) for status in STATUSES],
        "older": urlencode({**kept, "before": rows[-1]["id"]}) if more else None,
        "newest": urlencode(kept)}, status=400 if reason else 200)


# -- one request --------------------------------------------------------------------

def _answers(engine, lang: str, row: dict, personal: bool) -> list[tuple[str, str]]:
    """(question, answer) in menu order: every answer for `personal`, else only those chosen from a list."""
    flow = engine.flows.get(row["service"])
    if flow is None:
        return [(key, str(value)) for key, value in row["answers"].items()] if personal else []
    shown = []
    for screen in flow.screens.values():
        value = row["answers"].get(screen.save or "")
        if value is None or not (personal or screen.choices):
            continue
        words = value
        for choice in screen.choices:
            if choice.value == value:
                words = engine.catalog.text(lang, choice.label)
        if screen.check == "date":
            words = format_date(dt.date.fromisoformat(value), "long", locale=lang)
        shown.append((engine.catalog.text(lang, screen.text).split("\n")[0], words))
    return shown


@require("read")
async def request_page(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    lang = language(request)
    account = request[account_key]
    ref = normalize_reference(request.match_info["ref"])[:MAX_LENGTH + 1]
    personal = "personal" in account["permissions"]

    def read(store):
        row = store.submission(ref)
        if row is None:
            return None, []
        if personal and not row["purged_at"]:
            store.accounts.audit(account["name"], "personal-view", ref)
        return row, store.history(ref)

    row, history = await request.app[store_key].call(read)
    if row is None:
        return render(request, "message.html", {"message": NOT_FOUND}, status=404)
    return render(request, "requests_one.html", {
        "row": row, "personal": personal, "title": service_title(engine, lang, row["service"]),
        "status_word": STATUS_LABELS.get(row["status"], row["status"]),
        "channel_word": CHANNELS.get(row["channel"], row["channel"]),
        "sync_word": SYNC_STATES.get(row["sync_state"], row["sync_state"]),
        "created": _when(row["created_at"], lang), "changed": _when(row["status_at"], lang),
        "answers": _answers(engine, lang, row, personal),
        "phone": row["phone"] if personal else (mask_phone(row["phone"]) if row["phone"] else ""),
        "history": [{**item, "word": STATUS_LABELS.get(item["status"], item["status"]),
                     "when": _when(item["at"], lang)} for item in history]})


# -- where callers give up ----------------------------------------------------------

async def _figures(request: web.Request) -> dict | None:
    """The funnel for the request's `days` (1 unless told), in the request's language; None for a bad `days`."""
    days = request.query.get("days", "1")
    if days not in {str(d) for d in funnel.PERIODS}:
        return None
    days = int(days)
    window = request.app[rules_key].resume_window

    def read(store):
        now = store.clock()
        return now, store.funnel_sessions(funnel.since_day(now, days))

    now, rows = await request.app[store_key].call(read)
    return funnel.figures(request.app[engine_key], language(request), rows, now, window, days)


@require("read")
async def funnel_page(request: web.Request) -> web.Response:
    found = await _figures(request)
    if found is None:
        return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    gettext = (request.app[pages_key].translations.get(language(request)) or NullTranslations()).gettext
    charts = [Markup(funnel.svg(flow, gettext, f"chart-{flow['flow']}")) for flow in found["flows"]]
    return render(request, "funnel.html", {"figures": found, "charts": charts, "periods": funnel.PERIODS})


@require("read")
async def funnel_json(request: web.Request) -> web.Response:
    found = await _figures(request)
    if found is None:
        return web.json_response({"error": "days must be 1 or 7"}, status=400)
    return web.json_response(found)
