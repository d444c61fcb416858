"""The operator's dashboard at `/kiosk`: what waits to sync and what failed, Sync now, batch files, the SMS outbox.

A kiosk operator is no programmer: everything `kentongan status`, `sync`,
`export`, `import` and `outbox` do is here, with the same checks and the
same one-line refusals, and numbers always masked.

Sync now runs one round at a time for the whole app (`Rounds`): a double
click, or a second operator, joins the round in flight instead of starting
another. Its progress streams as server-sent events (`/kiosk/sync/events`)
to a small script; without the script the button still works: the POST
waits for the round (within `ROUND_WAIT_SECONDS`) and goes back to the
dashboard, which shows the last round's summary.

The answer file comes as multipart form data, its `csrf` field first: that
field alone is read before the session is checked, the file only after, and
never more than `UPLOAD_LIMIT` bytes of it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from babel.support import NullTranslations

from flows.catalog import N_
from sync.errors import BatchFileError, SyncError
from sync.pages import account_key, form, form_key, language, pages_key, render, require, signed_in
from sync.seal import mask_phone
from sync.store import Store

from .resources import Rules, config_key, engine_key, rules_key, sender_key, store_key, syncer_key
from .syncer import Summary, export_file, import_file

log = logging.getLogger(__name__)

PREFIX = "/kiosk"
STATIC = Path(__file__).parent / "static"
LATEST = 10
"""Rows shown of each list: refused submissions, and dead, expired and suppressed SMS."""
SHOWN_OUTBOX = ("dead", "expired", "suppressed")
UPLOAD_LIMIT = 4 * 1024 * 1024
"""The most of an answer file read: thousands of status updates fit in far less."""
CSRF_LIMIT = 256
CHUNK = 64 * 1024
ROUND_WAIT_SECONDS = 60.0
"""How long Sync now without the script waits for the round before going back to the dashboard."""
KEEPALIVE_SECONDS = 15.0
MESSAGE_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
NO_SECRET = N_("web.dashboard.sync.off")
SMS_GONE = N_("web.dashboard.sms.gone")
"""A retry of an SMS that is no longer dead (another operator retried it, or it was sent)."""
SMS_RETRIED = N_("web.dashboard.sms.retried")
OUTBOX_LABELS = {"queued": N_("web.dashboard.sms.queued"), "sending": N_("web.dashboard.sms.sending"),
                 "sent": N_("web.dashboard.sms.sent"), "delivered": N_("web.dashboard.sms.delivered"),
                 "failed": N_("web.dashboard.sms.failed"), "dead": N_("web.dashboard.sms.dead"),
                 "expired": N_("web.dashboard.sms.expired"), "suppressed": N_("web.dashboard.sms.suppressed")}
"""A name for each state of `sync.outbox.STATES`, in its order."""
KIND_LABELS = {"confirmation": N_("web.dashboard.sms.kind.confirmation"), "reply": N_("web.dashboard.sms.kind.reply"),
               "notice": N_("web.dashboard.sms.kind.notice")}


# -- the one round in flight ----------------------------------------------------------

@dataclass
class Round:
    """One sync round started at the kiosk: how far it got, then its summary or what stopped it."""

    total: int | None = None
    sent: int = 0
    summary: Summary | None = None
    error: str | None = None
    crashed: bool = False
    finished_at: str | None = None
    task: asyncio.Task | None = None
    waiter: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def changed(self) -> None:
        """Wake whoever watches: each watcher holds the event of its time, a new one waits for the next change."""
        self.waiter.set()
        self.waiter = asyncio.Event()

    def progress(self, items: int, size: int) -> None:
        self.sent += items
        self.changed()


class Rounds:
    """The app's kiosk rounds: the one running, or the last one."""

    def __init__(self) -> None:
        self.current: Round | None = None

    def start(self, app: web.Application) -> tuple[Round, bool]:
        """The round in flight, or a new one; True when this call started it. No await before `current` is
        set: two requests cannot both start one."""
        if self.current is not None and not self.current.done:
            return self.current, False
        self.current = Round()
        self.current.task = asyncio.create_task(_run(self.current, app))
        return self.current, True

    async def stop(self, app: web.Application) -> None:
        if self.current is not None and self.current.task is not None and not self.current.done:
            self.current.task.cancel()


rounds_key = web.AppKey("kiosk_rounds", Rounds)


async def _run(round_: Round, app: web.Application) -> None:
    store = app[store_key]
    try:
        round_.total = await store.call(lambda s: s.counts()["sync"]["pending"])
        round_.changed()
        round_.summary = await app[syncer_key].round(round_.progress)
    except SyncError as error:
        round_.error = str(error)
    except Exception:
        log.exception("a sync round started at the kiosk failed")
        round_.crashed = True
    finally:
        round_.finished_at = store.store.clock().isoformat(timespec="seconds")
        round_.changed()


def _round_view(round_: Round | None, _) -> dict:
    """What the page and the event stream show of a round, in the request's words."""
    if round_ is None:
        return {"text": _("web.dashboard.sync.none"), "value": 0, "max": 0, "done": True, "failed": False}
    view = {"value": round_.sent, "max": max(round_.total or 0, round_.sent), "done": round_.done,
            "failed": round_.done and round_.summary is None, "at": round_.finished_at}
    if round_.summary is not None:
        s = round_.summary
        view["text"] = _("web.dashboard.sync.summary").format(
            pushed=s.pushed, accepted=s.accepted, duplicate=s.duplicate, rejected=s.rejected, updates=s.updates,
            notices=s.notices)
    elif round_.crashed:
        view["text"] = _("web.dashboard.sync.crashed")
    elif round_.error is not None:
        view["text"] = _("web.dashboard.sync.failed").format(error=round_.error)
    elif round_.total is None:
        view["text"] = _("web.dashboard.sync.starting")
    else:
        view["text"] = _("web.dashboard.sync.progress").format(sent=round_.sent, total=view["max"])
    return view


def _gettext(request: web.Request):
    translations = request.app[pages_key].translations.get(language(request)) or NullTranslations()
    return translations.gettext


# -- the dashboard --------------------------------------------------------------------

def setup_dashboard(app: web.Application) -> None:
    app[rounds_key] = Rounds()
    app.on_shutdown.append(app[rounds_key].stop)
    app.router.add_get(PREFIX, dashboard)
    app.router.add_post(f"{PREFIX}/sync", sync_now)
    app.router.add_get(f"{PREFIX}/sync/events", sync_events)
    app.router.add_get(f"{PREFIX}/batch", download_batch)
    app.router.add_post(f"{PREFIX}/answer", upload_answer)
    app.router.add_post(f"{PREFIX}/outbox/retry", retry_sms)
    app.router.add_static(f"{PREFIX}/static", STATIC)


def _overview(store: Store) -> dict:
    """Everything the dashboard shows from the store; numbers masked here, in the store's thread."""
    counts = store.counts()
    refused = store.refused(LATEST)
    sms = {state: [{"id": row["id"], "to": mask_phone(row["phone"]), "kind": row["kind"], "reason": row["reason"],
                    "at": row["updated_at"]} for row in store.outbox.latest(state, LATEST)]
           for state in SHOWN_OUTBOX}
    return {"counts": counts, "sync": counts["sync"], "outbox": counts["outbox"], "sms": sms,
            "refused": refused}


async def _dashboard(request: web.Request, notice: str = "", failed: bool = False,
                     status: int = 200) -> web.Response:
    overview = await request.app[store_key].call(_overview)
    submissions = overview["counts"]["submissions"]
    rows = [(N_("web.kiosk.pending"), overview["sync"]["pending"]), (N_("web.kiosk.synced"), overview["sync"]["sent"]),
            (N_("web.dashboard.held"), submissions["by_status"].get("review", 0)),
            (N_("web.kiosk.rejected"), overview["sync"]["rejected"]), (N_("web.counts.total"), submissions["total"])]
    round_ = request.app[rounds_key].current
    return render(request, "kiosk_dashboard.html", {
        **overview, "rows": rows, "states": OUTBOX_LABELS, "kinds": KIND_LABELS, "shown": SHOWN_OUTBOX, "notice": notice,
        "failed": failed, "can_sync": syncer_key in request.app, "no_secret": NO_SECRET,
        "round": _round_view(round_, _gettext(request)), "running": round_ is not None and not round_.done},
        status=status)


@require("read")
async def dashboard(request: web.Request) -> web.Response:
    return await _dashboard(request)


# -- Sync now -------------------------------------------------------------------------

@require("act")
async def sync_now(request: web.Request) -> web.StreamResponse:
    if syncer_key not in request.app:
        return await _dashboard(request, _gettext(request)(NO_SECRET), failed=True, status=409)
    round_, started = request.app[rounds_key].start(request.app)
    if started:
        await request.app[store_key].call(lambda s: s.accounts.audit(_who(request), "sync"))
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"started": started}, status=202)
    await asyncio.wait({round_.task}, timeout=ROUND_WAIT_SECONDS)
    raise web.HTTPSeeOther(f"{PREFIX}#sync")


@require("read")
async def sync_events(request: web.Request) -> web.StreamResponse:
    """The round in flight (or the last one) as server-sent events, one per change, until it is done."""
    _ = _gettext(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    round_ = request.app[rounds_key].current
    try:
        while True:
            waiter = round_.waiter if round_ is not None else None
            view = _round_view(round_, _)
            await response.write(f"data: {json.dumps(view, ensure_ascii=False)}\n\n".encode("utf-8"))
            if view["done"]:
                break
            try:
                await asyncio.wait_for(waiter.wait(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                pass  # the same view again keeps the connection alive
    except ConnectionResetError:
        pass  # the browser went away: the round goes on
    return response


def _who(request: web.Request) -> str:
    return request[account_key]["name"]


# -- batch files ----------------------------------------------------------------------

def _file_name(gateway_id: str, now: str) -> str:
    """`kentongan-<gateway>-<YYYYMMDD-HHMMSS>.batch`: what an operator would type for `kentongan export`."""
    stamp = re.sub(r"[^0-9]", "", now[:19])
    return f"kentongan-{re.sub(r'[^A-Za-z0-9_.-]', '_', gateway_id)}-{stamp[:8]}-{stamp[8:14]}.batch"


def _export(store: Store, gateway_id: str, secret: str, path: Path, who: str) -> tuple[int, int, str]:
    count, size = export_file(store, gateway_id, secret, path)
    store.accounts.audit(who, "batch-export", detail=f"{count} submissions")
    return count, size, store.clock().isoformat(timespec="seconds")


@require("act")
async def download_batch(request: web.Request) -> web.StreamResponse:
    """`kentongan export` as a download: every unsynced submission in one sealed batch file."""
    config = request.app[config_key]
    if not config["sync.secret"]:
        return await _dashboard(request, _gettext(request)(NO_SECRET), failed=True, status=409)
    folder = Path(tempfile.mkdtemp(prefix="kentongan-export-"))
    try:
        path = folder / "batch"
        try:
            _, size, now = await request.app[store_key].call(_export, config["gateway.id"], config["sync.secret"],
                                                              path, _who(request))
        except BatchFileError as error:
            return await _dashboard(request, str(error), failed=True, status=500)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{_file_name(config["gateway.id"], now)}"'})
        response.content_length = size
        await response.prepare(request)
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        shutil.rmtree(folder, ignore_errors=True)


reader_key = web.RequestKey("multipart", object)


def csrf_first(handler):
    """Read a multipart form's leading `csrf` field (at most CSRF_LIMIT bytes) for `require`'s check, and
    leave the rest of the body to `handler`, which reads it only once the session is checked."""

    @functools.wraps(handler)
    async def read_csrf(request: web.Request) -> web.StreamResponse:
        # Nothing of the body is read for a stranger, nor a body larger than an upload may be: aiohttp's search
        # for the first boundary would read any preamble, however long or slow.
        if await signed_in(request) is None:
            return await handler(request)  # `require` sends them to the sign-in page
        if request.content_length is None:
            raise web.HTTPLengthRequired(text="an upload needs a Content-Length")
        if request.content_length > UPLOAD_LIMIT + CHUNK:
            _ = _gettext(request)
            return await _dashboard(request, _(N_("web.dashboard.answer.too_large")).format(
                megabytes=UPLOAD_LIMIT // (1024 * 1024)), failed=True, status=413)
        if request.content_type == "multipart/form-data":
            token = b""
            try:
                reader = await request.multipart()
                part = await reader.next()
                if part is not None and part.name == "csrf":
                    while len(token) <= CSRF_LIMIT and (chunk := await part.read_chunk(CSRF_LIMIT)):
                        token += chunk
            except (ValueError, RuntimeError, RequestPayloadError) as error:
                log.warning("%s %s: unreadable multipart form refused: %s", request.method, ascii(request.path),
                            ascii(str(error)[:80]))
                raise web.HTTPBadRequest(text="the form must be multipart/form-data, its csrf field first") from None
            request[form_key] = {"csrf": token[:CSRF_LIMIT].decode("utf-8", "replace")}
            request[reader_key] = reader
        return await handler(request)

    return read_csrf


async def _upload(request: web.Request) -> tuple[str, bytes] | str:
    """The uploaded answer file (its name, its bytes), or the message id of why there is none."""
    if (request.content_length or 0) > UPLOAD_LIMIT + CHUNK or reader_key not in request:
        return N_("web.dashboard.answer.too_large") if reader_key in request else N_("web.dashboard.answer.missing")
    reader = request[reader_key]
    try:
        while (part := await reader.next()) is not None:
            if part.name != "file":
                await part.release()
                continue
            data = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                data += chunk
                if len(data) > UPLOAD_LIMIT:
                    return N_("web.dashboard.answer.too_large")
            name = Path(part.filename or "").name
            return (name if name.isprintable() else "")[:100] or "answer", bytes(data)
    except (ValueError, RuntimeError, RequestPayloadError) as error:
        log.warning("POST %s: unreadable upload refused: %s", ascii(request.path), ascii(str(error)[:80]))
    return N_("web.dashboard.answer.missing")


def _import(store: Store, engine, rules: Rules, gateway_id: str, secret: str, name: str, data: bytes,
            who: str):
    """`kentongan import` of the uploaded bytes; a refusal names the file as the operator knows it."""
    with tempfile.TemporaryDirectory(prefix="kentongan-answer-") as folder:
        path = Path(folder) / "answer"
        path.write_bytes(data)
        try:
            acked, applied = import_file(store, engine, rules, gateway_id, secret, path)
        except BatchFileError as error:
            raise BatchFileError(str(error).replace(str(path), name)) from None
    store.accounts.audit(who, "answer-import", detail=f"{acked} acknowledged, {applied.updates} updates")
    return acked, applied


@csrf_first
@require("act")
async def upload_answer(request: web.Request) -> web.Response:
    """`kentongan import` as an upload: the centre's answer file, with the CLI's one-line refusals."""
    _ = _gettext(request)
    config = request.app[config_key]
    if not config["sync.secret"]:
        return await _dashboard(request, _(NO_SECRET), failed=True, status=409)
    upload = await _upload(request)
    if isinstance(upload, str):
        return await _dashboard(request, _(upload).format(megabytes=UPLOAD_LIMIT // (1024 * 1024)), failed=True,
                                status=413 if upload == N_("web.dashboard.answer.too_large") else 400)
    name, data = upload
    if not data:
        return await _dashboard(request, _("web.dashboard.answer.missing"), failed=True, status=400)
    try:
        acked, applied = await request.app[store_key].call(
            _import, request.app[engine_key], request.app[rules_key], config["gateway.id"], config["sync.secret"],
            name, data, _who(request))
    except BatchFileError as error:
        log.warning("answer file refused at the kiosk: %s", error)
        return await _dashboard(request, _("web.dashboard.answer.refused").format(reason=error), failed=True,
                                status=400)
    if applied.queued:
        request.app[sender_key].wake()
    return await _dashboard(request, _("web.dashboard.answer.done").format(
        acked=acked, updates=applied.updates, queued=applied.queued, suppressed=applied.suppressed))


# -- the SMS outbox -------------------------------------------------------------------

def _retry(store: Store, message_id: str, rules: Rules, who: str) -> bool:
    with store.transaction():
        retried = store.outbox.retry_dead(message_id, rules.sms_ttl)
        if retried:
            store.accounts.audit(who, "sms-retry", target=message_id)
    return retried


@require("act")
async def retry_sms(request: web.Request) -> web.Response:
    """Retry a dead SMS: queued again now, for one more attempt, and the sender woken."""
    message_id = (await form(request)).get("id", "")
    if not (MESSAGE_ID.fullmatch(message_id) and await request.app[store_key].call(
            _retry, message_id, request.app[rules_key], _who(request))):
        return await _dashboard(request, _gettext(request)(SMS_GONE), failed=True, status=409)
    request.app[sender_key].wake()
    return await _dashboard(request, _gettext(request)(SMS_RETRIED))
