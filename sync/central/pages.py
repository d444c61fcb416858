"""The district office's pages under `/office`: triage, one request, status changes, bulk changes, the review
queue and the CSV export, beside sign-in and the audit log (`sync.pages`).

Triage (`/office`) is a GET form, so a filtered view is a link staff can
keep; a staff member arrives at their own agency's queue (a filter they can
clear). A request's page shows its answers (personal ones only to a role
with "personal", each such view an audit row), its history, and the form
that changes its status: posting it first shows the exact SMS the villager
will get (`CentralConfig.notice`), and only the confirmation changes
anything. Every change carries the `updated_at` the staff member saw, so a
request that someone else changed meanwhile is refused with what changed,
never overwritten. A bulk change picks requests in the list (a GET, which
changes nothing), confirms the selection, and applies each, skipping those
that changed since they were picked.

Statistics (`/office/stats`) add their routes to `setup_office`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web
from babel.dates import format_datetime

from ..accounts import AGENCY_MAX
from ..pages import (BAD_ADDRESS, N_, FORM_BODY_LIMIT, PageSettings, account_key, day_stamp, form, language,
                     pages_key, period_fault, render, require, setup_pages)
from ..protocol import SILENT_STATUSES, STATUSES
from ..reference import ALPHABET, MAX_LENGTH
from ..seal import mask_phone
from . import metrics
from .keys import body_limits_key, central_config_key
from .service import not_personal, place_shown
from .export import stream_csv
from .stats_pages import setup_stats
from .store import HISTORY_KINDS, MAX_NOTE, VILLAGER_KINDS, CentralStore, Changed, Cursor

PREFIX = "/office"
TEMPLATES = Path(__file__).parent / "templates"
PAGE = 50
ESCALATED_TO = ("supervisor", "admin")
"""The roles an agency's overdue requests are escalated to (`CentralStore.escalate_overdue`)."""
"""Requests per page of triage, and the most one bulk change takes."""
VILLAGE_MAX = 80
NAV = ((PREFIX, N_("web.office.nav.triage")), (f"{PREFIX}/review", N_("web.office.nav.review")),
       (f"{PREFIX}/stats", N_("web.office.nav.stats")))
ORDERS = ("newest", "overdue")
BAD_REF = N_("web.office.bad_ref")
BAD_DATE = N_("web.office.bad_date")
BAD_RANGE = N_("web.office.bad_range")
BAD_VILLAGE = N_("web.office.bad_village")
BAD_AGENCY = N_("web.office.bad_agency")
BAD_STATUS = N_("web.office.bad_status")
NOTE_TOO_LONG = N_("web.office.note_too_long")
NOTHING_PICKED = N_("web.office.nothing_picked")
TOO_MANY_PICKED = N_("web.office.too_many_picked")
NOT_FOUND = N_("web.office.not_found")
CHANGED = N_("web.office.changed")
DONE = {"status": N_("web.office.done.status"), "assign": N_("web.office.done.assign")}
HISTORY = {kind: f"web.office.history.{kind}" for kind in HISTORY_KINDS}
CHANNELS = {"ussd": N_("web.requests.channel.ussd"), "sms": N_("web.requests.channel.sms"),
            "kiosk": N_("web.requests.channel.kiosk")}


def setup_office(app: web.Application, settings: PageSettings, store_key: web.AppKey) -> None:
    setup_pages(app, settings, PREFIX, N_("web.title.office"), "central", store_key, TEMPLATES, nav=NAV)
    routes = {
        triage_page: ("GET", PREFIX),
        review_page: ("GET", f"{PREFIX}/review"),
        export_page: ("GET", f"{PREFIX}/export.csv"),
        bulk_page: ("GET", f"{PREFIX}/bulk"),
        bulk_change: ("POST", f"{PREFIX}/bulk"),
        request_page: ("GET", f"{PREFIX}/r/{{ref}}"),
        change_status: ("POST", f"{PREFIX}/r/{{ref}}/status"),
        reassign: ("POST", f"{PREFIX}/r/{{ref}}/agency"),
    }
    for handler, (method, path) in routes.items():
        app.router.add_route(method, path, handler)
        if method == "POST":
            app[body_limits_key][handler] = FORM_BODY_LIMIT
    setup_stats(app)


def _config(request: web.Request):
    return request.app[central_config_key]


def _thread(request: web.Request):
    return request.app[pages_key].store(request)


# -- words --------------------------------------------------------------------------

def _when(stamp: str | None, lang: str) -> str:
    return format_datetime(dt.datetime.fromisoformat(stamp), "short", tzinfo=dt.timezone.utc, locale=lang) \
        if stamp else ""


def _title(forms, service: str) -> str:
    return forms[service]["title"] if service in forms else service


def _choice(form: dict | None, answer: str, value) -> str:
    """The label of `value` among the choices of the question saving `answer`; the value itself when none."""
    for question in (form or {}).get("questions", ()):
        if question["answer"] == answer:
            for choice in question["choices"]:
                if choice["value"] == value:
                    return choice["label"]
    return "" if value is None else str(value)


def _category(form: dict | None, value: str | None) -> str:
    """The label of a category value: the choice of any list question that has it."""
    for question in (form or {}).get("questions", ()):
        for choice in question["choices"]:
            if choice["value"] == value:
                return choice["label"]
    return value or ""


def _row(request: web.Request, row: dict) -> dict:
    """A request as triage shows it: its words and times in the request's language."""
    forms, lang = _config(request).forms, language(request)
    personal = "personal" in request[account_key]["permissions"]
    return {**row, "village": place_shown(forms.get(row["service"]), row.get("village"), personal),
            "title": _title(forms, row["service"]), "status_word": f"status.{row['status']}",
            "category_word": _category(forms.get(row["service"]), row.get("category")),
            "received": _when(row["created_at"], lang), "due": _when(row.get("due_at"), lang)}


# -- filters ------------------------------------------------------------------------

def filters(query, account: dict, forms, gateways: list[str]) -> tuple[dict[str, str], str | None]:
    """The triage filters as typed (the agency defaults to the account's own until cleared), and the reason
    they are refused (None when they are fine)."""
    typed = {key: query.get(key, "").strip()[:VILLAGE_MAX + 1] for key in
             ("ref", "service", "status", "village", "gateway", "from", "to", "order", "overdue")}
    typed["agency"] = query.get("agency", account["agency"]).strip()[:AGENCY_MAX + 1]
    typed["ref"] = typed["ref"].upper()
    typed["order"] = typed["order"] if typed["order"] in ORDERS else "newest"
    typed["overdue"] = "1" if typed["overdue"] else ""
    if len(typed["ref"]) > MAX_LENGTH or set(typed["ref"]) - set(ALPHABET):
        return typed, BAD_REF
    if len(typed["village"]) > VILLAGE_MAX or not typed["village"].isprintable():
        return typed, BAD_VILLAGE
    if len(typed["agency"]) > AGENCY_MAX or not typed["agency"].isprintable():
        return typed, BAD_AGENCY
    if typed["service"] not in ("", *forms) or typed["status"] not in ("", *STATUSES) \
            or typed["gateway"] not in ("", *gateways):
        return typed, BAD_ADDRESS
    fault = period_fault(typed)
    return typed, {"date": BAD_DATE, "range": BAD_RANGE}[fault] if fault else None


def chosen(typed: dict[str, str]) -> dict:
    """The store's `triage` arguments for filters `typed` (checked by `filters`)."""
    return {"ref": typed["ref"] or None, "service": typed["service"] or None, "status": typed["status"] or None,
            "village": typed["village"] or None, "gateway": typed["gateway"] or None,
            "agency": typed["agency"] or None, "overdue": True if typed["overdue"] else None,
            "since": day_stamp(typed["from"]) if typed["from"] else None,
            "until": day_stamp(typed["to"], 1) if typed["to"] else None, "order": typed["order"]}


def _kept(typed: dict[str, str]) -> dict[str, str]:
    """The filters a link keeps: those set, and the agency always (empty when cleared)."""
    return {key: value for key, value in typed.items() if value or key == "agency"}


def agencies(store: CentralStore, config) -> list[str]:
    """Every agency a request may go to: the routing rules', the default one, and the staff accounts'."""
    known = {rule.agency for rule in config.routing} | {config.default_agency}
    known |= {row[0] for row in store.db.execute("SELECT DISTINCT agency FROM accounts WHERE agency != ''")}
    return sorted(known - {""}, key=str.casefold)


def _choices(store: CentralStore, config) -> tuple[list[str], list[str]]:
    return agencies(store, config), [gateway["id"] for gateway in store.gateways()]


# -- triage -------------------------------------------------------------------------

CURSOR_MAX = 200


def encode_cursor(cursor: Cursor) -> str:
    """A page link's `after`: the store's cursor, opaque."""
    return base64.urlsafe_b64encode(json.dumps(list(cursor), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor | None:
    """The store's cursor of a page link's `after`; None for none; ValueError for one that is no cursor (the
    store refuses a well-formed one that is not its own with ValueError too)."""
    if not text:
        return None
    if len(text) > CURSOR_MAX:
        raise ValueError("not a cursor")
    try:
        cursor = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor") from None
    if not (isinstance(cursor, list) and len(cursor) in (2, 4) and all(isinstance(p, str) for p in cursor)):
        raise ValueError("not a cursor")
    return tuple(cursor)


@require("read")
async def triage_page(request: web.Request) -> web.Response:
    config, thread = _config(request), _thread(request)
    known_agencies, gateways = await thread.read(_choices, config)
    typed, reason = filters(request.query, request[account_key], config.forms, gateways)
    rows, more = [], None
    if reason is None:
        try:
            after = decode_cursor(request.query.get("after", ""))
            rows, more = await thread.read(lambda s: s.triage(**chosen(typed), after=after, limit=PAGE))
        except ValueError:
            return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    kept = _kept(typed)
    escalated = await _escalated(request)
    return render(request, "office_triage.html", {
        "escalated": escalated,
        "rows": [_row(request, row) for row in rows], "typed": typed, "reason": reason, "first_page": not request.query.get("after"),
        "services": [(code, form["title"]) for code, form in config.forms.items()],
        "statuses": [(status, f"status.{status}") for status in STATUSES],
        "agencies": sorted({*known_agencies, typed["agency"]} - {""}, key=str.casefold), "gateways": gateways,
        "orders": [(order, f"web.office.order.{order}") for order in ORDERS],
        "older": urlencode({**kept, "after": encode_cursor(more)}) if more else None,
        "newest": urlencode(kept), "export": urlencode(kept)}, status=400 if reason else 200)


async def _escalated(request: web.Request) -> dict | None:
    """For a supervisor of an agency: how many of its requests passed their deadline and went to its supervisors,
    and the address of that queue, most overdue first; None for anyone else or when there are none."""
    account = request[account_key]
    if account["role"] not in ESCALATED_TO or not account["agency"]:
        return None
    count = await _thread(request).read(lambda s: s.escalated(account["agency"]))
    query = urlencode({"agency": account["agency"], "overdue": "1", "order": "overdue"})
    return {"count": count, "agency": account["agency"], "href": f"{PREFIX}?{query}"} if count else None


@require("read")
async def review_page(request: web.Request) -> web.Response:
    try:
        after = decode_cursor(request.query.get("after", ""))
        rows, more = await _thread(request).read(lambda s: s.triage(status="review", after=after, limit=PAGE))
    except ValueError:
        return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    return render(request, "office_review.html", {
        "rows": [_row(request, row) for row in rows], "first_page": after is None,
        "older": urlencode({"after": encode_cursor(more)}) if more else None})


@require("read")
async def export_page(request: web.Request) -> web.StreamResponse:
    config, thread, account = _config(request), _thread(request), request[account_key]
    _, gateways = await thread.read(_choices, config)
    typed, reason = filters(request.query, account, config.forms, gateways)
    if reason is not None:
        return render(request, "message.html", {"message": reason}, status=400)
    return await stream_csv(request, thread, chosen(typed), config.forms, account["name"],
                            "personal" in account["permissions"], not_personal)


# -- one request --------------------------------------------------------------------

def _ref(request: web.Request) -> str:
    return request.match_info["ref"].strip().upper()[:MAX_LENGTH + 1]


def _answers(form: dict | None, row: dict, personal: bool) -> list[tuple[str, str]]:
    """(question, answer) in menu order: every answer for `personal`, else those a role without it may see."""
    if form is None:
        return [(key, str(value)) for key, value in row["answers"].items()] if personal else []
    allowed = not_personal(form)
    return [(question["prompt"].split("\n")[0], _choice(form, question["answer"], row["answers"][question["answer"]]))
            for question in form["questions"]
            if question["answer"] in row["answers"] and (personal or question["answer"] in allowed)]


def _history(request: web.Request, items: list[dict]) -> list[dict]:
    """The history to show; the villager's own words only to a role that may see personal fields."""
    lang = language(request)
    personal = "personal" in request[account_key]["permissions"]
    return [{**item, "word": HISTORY.get(item["kind"], item["kind"]), "when": _when(item["at"], lang),
             "note": item["note"] if personal or item["kind"] not in VILLAGER_KINDS else None,
             "status_word": f"status.{item['status']}" if item["kind"] == "status" and item["status"] else ""}
            for item in items]


async def _open(request: web.Request, ref: str) -> dict | None:
    """The request's page data (`submission_page`), a personal view written to the audit log."""
    account = request[account_key]
    personal = "personal" in account["permissions"]

    def read(store: CentralStore) -> tuple[dict | None, list[str]]:
        page = store.submission_page(ref)
        if page is not None and personal and not page["purged_at"]:
            store.accounts.audit(account["name"], "personal-view", ref)
        return page, agencies(store, _config(request))

    page, known = await _thread(request).call(read)
    if page is not None:
        page["known_agencies"] = known
    return page


def _show(request: web.Request, page: dict, status: int = 200, **extra) -> web.Response:
    """A request's page: `extra` carries what the form was given (typed, reason, preview, changed)."""
    config, account = _config(request), request[account_key]
    personal = "personal" in account["permissions"]
    form_ = config.forms.get(page["service"])
    lang = language(request)
    phone = page["phone"] if personal else (mask_phone(page["phone"]) if page["phone"] else "")
    typed = extra.pop("typed", {"status": page["status"], "note": "", "agency": page["agency"] or ""})
    return render(request, "office_request.html", {
        "row": _row(request, page), "personal": personal, "phone": phone,
        "answers": _answers(form_, page, personal), "history": _history(request, page["history"]),
        "channel_word": CHANNELS.get(page["channel"], page["channel"]),
        "resolved": _when(page.get("resolved_at"), lang),
        "statuses": [(code, f"status.{code}") for code in STATUSES], "agencies": page["known_agencies"],
        "typed": typed, "done": DONE.get(request.query.get("done", "")), "max_note": MAX_NOTE,
        **extra}, status=status)


@require("read")
async def request_page(request: web.Request) -> web.Response:
    page = await _open(request, _ref(request))
    if page is None:
        return render(request, "message.html", {"message": NOT_FOUND}, status=404)
    return _show(request, page)


def notice(config, row: dict, status: str, note: str) -> dict | None:
    """The SMS a change to `status` with `note` sends to the request's phone: text and whether the note is
    shortened; None when it sends none (no change, a silent status, or no renderer)."""
    if config.notice is None or status in SILENT_STATUSES or (status, note or None) == (row["status"], row["note"]):
        return None
    sent = config.notice(row, status, note)
    return {"text": sent.text, "shortened": sent.shortened}


def _checked_change(fields: dict[str, str]) -> tuple[dict[str, str], str | None]:
    typed = {"status": fields.get("status", ""), "note": fields.get("note", "").strip(),
             "expected": fields.get("expected", "")}
    if typed["status"] not in STATUSES:
        return typed, BAD_STATUS
    if len(typed["note"]) > MAX_NOTE:
        return typed, NOTE_TOO_LONG
    return typed, None


def _since(page: dict, expected: str) -> list[dict]:
    """What happened to a request after the `updated_at` a staff member saw: its history rows since."""
    return [item for item in page["history"] if item["at"] > expected]


@require("act")
async def change_status(request: web.Request) -> web.Response:
    ref, account, config = _ref(request), request[account_key], _config(request)
    fields = await form(request)
    typed, reason = _checked_change(fields)
    page = await _open(request, ref)
    if page is None:
        return render(request, "message.html", {"message": NOT_FOUND}, status=404)
    typed["agency"] = page["agency"] or ""
    if reason is not None:
        return _show(request, page, 400, typed=typed, reason=reason)
    if typed["expected"] != page["updated_at"]:
        return _stale(request, page, typed)
    if fields.get("step") != "confirm":
        preview = {"sms": notice(config, page, typed["status"], typed["note"])}
        return _show(request, page, typed=typed, preview=preview)

    def change(store: CentralStore) -> dict:
        with store.transaction():
            row = store.change(ref, typed["status"], typed["note"], account["name"], expected=typed["expected"])
            store.accounts.audit(account["name"], "status", ref, f"{page['status']} -> {typed['status']}")
            return row

    try:
        await _thread(request).call(change)
    except Changed:
        return _stale(request, await _open(request, ref), typed)
    metrics.staff_changed(request.app, typed["status"])
    raise web.HTTPSeeOther(f"{PREFIX}/r/{ref}?done=status")


def _stale(request: web.Request, page: dict, typed: dict[str, str]) -> web.Response:
    """The request's page, refusing a change made on what someone changed meanwhile: what changed since, and
    the form as typed, now on the current state."""
    since = _history(request, _since(page, typed["expected"]))
    return _show(request, page, 409, typed=typed, reason=CHANGED, changed=since)


@require("act")
async def reassign(request: web.Request) -> web.Response:
    ref, account = _ref(request), request[account_key]
    fields = await form(request)
    page = await _open(request, ref)
    if page is None:
        return render(request, "message.html", {"message": NOT_FOUND}, status=404)
    typed = {"status": page["status"], "note": "", "agency": fields.get("agency", "").strip(),
             "expected": fields.get("expected", "")}
    if typed["agency"] not in page["known_agencies"]:
        return _show(request, page, 400, typed=typed, reason=BAD_AGENCY)
    if typed["expected"] != page["updated_at"]:
        return _stale(request, page, typed)

    def move(store: CentralStore) -> dict:
        with store.transaction():
            row = store.reassign(ref, typed["agency"], account["name"], expected=typed["expected"])
            store.accounts.audit(account["name"], "assign", ref, f"{page['agency'] or ''} -> {typed['agency']}")
            return row

    try:
        await _thread(request).call(move)
    except Changed:
        return _stale(request, await _open(request, ref), typed)
    raise web.HTTPSeeOther(f"{PREFIX}/r/{ref}?done=assign")


# -- bulk ---------------------------------------------------------------------------

def _picks(values: list[str]) -> list[tuple[str, str]] | None:
    """(ref, updated_at seen) of each `REF@stamp` picked; None when one is no such pair."""
    picks = []
    for value in values:
        ref, _, seen = value.partition("@")
        if not (ref and len(ref) <= MAX_LENGTH and not set(ref) - set(ALPHABET) and seen and len(seen) <= 40
                and seen.isprintable()):
            return None
        picks.append((ref, seen))
    return list(dict.fromkeys(picks))


async def _selection(request: web.Request, picks: list[tuple[str, str]]) -> list[dict]:
    refs = [ref for ref, _ in picks]

    def read(store: CentralStore) -> list[dict]:
        return [row for row in (store.submission(ref) for ref in refs) if row is not None]

    rows = await _thread(request).read(read)
    seen = dict(picks)
    return [{**_row(request, row), "seen": seen[row["ref"]], "moved": row["updated_at"] != seen[row["ref"]]}
            for row in rows]


def _bulk(request: web.Request, picks, rows, status: int = 200, **extra) -> web.Response:
    return render(request, "office_bulk.html", {
        "rows": rows, "picks": " ".join(f"{ref}@{seen}" for ref, seen in picks),
        "statuses": [(code, f"status.{code}") for code in STATUSES], "max_note": MAX_NOTE,
        "typed": extra.pop("typed", {"status": "", "note": ""}), **extra}, status=status)


@require("act")
async def bulk_page(request: web.Request) -> web.Response:
    picks = _picks(request.query.getall("pick", []))
    reason = None if picks else (BAD_ADDRESS if picks is None else NOTHING_PICKED)
    if reason is None and len(picks) > PAGE:
        reason = TOO_MANY_PICKED
    if reason is not None:
        return render(request, "message.html", {"message": reason}, status=400)
    return _bulk(request, picks, await _selection(request, picks))


@require("act")
async def bulk_change(request: web.Request) -> web.Response:
    account = request[account_key]
    fields = await form(request)
    picks = _picks(fields.get("picks", "").split())
    if not picks or len(picks) > PAGE:
        return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    typed, reason = _checked_change(fields)
    if reason is not None:
        return _bulk(request, picks, await _selection(request, picks), 400, typed=typed, reason=reason)

    def apply(store: CentralStore) -> tuple[list[str], list[str]]:
        changed, skipped = [], []
        for ref, seen in picks:
            try:
                with store.transaction():
                    before = store.submission(ref)
                    if before is None:
                        skipped.append(ref)
                        continue
                    store.change(ref, typed["status"], typed["note"], account["name"], expected=seen)
                    store.accounts.audit(account["name"], "status", ref, f"{before['status']} -> {typed['status']}")
                changed.append(ref)
            except Changed:
                skipped.append(ref)
        return changed, skipped

    changed, skipped = await _thread(request).call(apply)
    metrics.staff_changed(request.app, typed["status"], len(changed))
    return render(request, "office_bulk_done.html", {"changed": changed, "skipped": skipped,
                                                     "status_word": f"status.{typed['status']}"})
