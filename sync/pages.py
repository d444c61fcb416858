"""The web pages' shared parts, for the gateway's kiosk (`/kiosk`) and the central backend's office (`/office`).

`setup_pages(app, ...)` gives an app its templates (its own folder first,
then `sync/templates`), the sign-in and sign-out routes, and the audit log
page; `require(permission)` guards a page handler; `render` answers with a
template in the request's language.

Language: `?lang=` (then remembered in the `kentongan_lang` cookie), else
that cookie, else the best match of Accept-Language, else the default.
Words come from the same catalogs as the USSD screens, bound per request:
the template context carries the request's `_`/`gettext`, never a global.

Sign-in: a signed-in browser holds `kentongan_session` (HttpOnly,
SameSite=Strict, Path=the prefix, Secure over https or with
`secure_cookies`). Every form carries a hidden `csrf` field: the sign-in
form's is checked against the `kentongan_csrf` cookie (double submit: there
is no session yet), every other against the session's own. A failed sign-in
reads the same for an unknown name, a disabled account and a wrong password,
and takes as long (one argon2 check each). A name locked out by
`Accounts.record_failure` is refused without its password being checked;
sign-in attempts per source address are capped per minute.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hmac
import logging
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel import Locale, UnknownLocaleError
from babel.support import NullTranslations

from .accounts import ROLES, verify_password
from .limits import RateLimiter
from .thread import StoreThread

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "kentongan_session"
CSRF_COOKIE = "kentongan_csrf"
LANG_COOKIE = "kentongan_lang"
LANG_COOKIE_SECONDS = 365 * 24 * 3600
FORM_BODY_LIMIT = 8 * 1024
"""The most a page's form reads: a name, a password of up to 1024 characters (percent-encoded) and a token."""
FORM_FIELDS = 10
AUDIT_PAGE = 50
MAX_ID = 2 ** 63 - 1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def N_(msgid: str) -> str:
    """Mark a message id for `pybabel extract`; translated per request, in the template."""
    return msgid


WRONG = N_("web.signin.wrong")
LOCKED = N_("web.signin.locked")
TOO_MANY = N_("web.signin.too_many")
EXPIRED = N_("web.form.expired")
BAD_ADDRESS = N_("web.page.bad_address")


@dataclass(frozen=True)
class PageSettings:
    """What the pages of either server need from the config: catalogs, languages, cookie and sign-in rules.

    `translations` are the same catalogs the USSD screens read (the gateway
    hands in its engine's), per language, in menu order. Without them the
    pages show their message ids (tests that do not look at words).
    """

    translations: Mapping[str, NullTranslations] = field(default_factory=lambda: MappingProxyType({}))
    default_language: str = "en"
    default_language: str = "en"
    secure_cookies: bool = False
    login_per_minute: int = 10

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.translations) or (self.default_language,)


@dataclass
class Pages:
    """One app's pages: its settings, URL prefix, title (a message id), realm, store, catalogs and sign-in
    limit."""

    settings: PageSettings
    prefix: str
    site: str
    realm: str
    store_key: web.AppKey
    translations: dict[str, NullTranslations] = field(default_factory=dict)
    limiter: RateLimiter | None = None
    nav: tuple[tuple[str, str], ...] = ()
    """(path, message id) of the pages a signed-in person can go to, in the header."""

    def store(self, request: web.Request) -> StoreThread:
        return request.app[self.store_key]


pages_key = web.AppKey("pages", Pages)
account_key = web.RequestKey("account", object)
"""The request's signed-in account (`Accounts.session`), or None; set by `signed_in`."""
form_key = web.RequestKey("form", dict)


def setup_pages(app: web.Application, settings: PageSettings, prefix: str, site: str, realm: str,
                store_key: web.AppKey, templates: Path | None = None,
                nav: tuple[tuple[str, str], ...] = ()) -> None:
    """Templates, catalogs, sign-in, sign-out and the audit page of `app`, under `prefix`.

    `site` is the message id of the pages' title; `realm` the accounts'
    (`gateway` or `central`); `store_key` the app's StoreThread, whose store
    has `accounts`; `templates` the app's own folder, searched before
    `sync/templates`; `nav` the (path, message id) links of the header.
    """
    folders = ([templates] if templates else []) + [TEMPLATES]
    aiohttp_jinja2.setup(app, loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(f)) for f in folders]),
                         autoescape=True, extensions=["jinja2.ext.i18n"])
    app[pages_key] = Pages(settings, prefix, site, realm, store_key,
                           dict(settings.translations),
                           RateLimiter("sign-ins per address", settings.login_per_minute, 60.0), tuple(nav))
    app.router.add_get(f"{prefix}/login", sign_in_form)
    app.router.add_post(f"{prefix}/login", sign_in)
    app.router.add_post(f"{prefix}/logout", sign_out)
    app.router.add_get(f"{prefix}/audit", audit_page)


# -- language -----------------------------------------------------------------------

def language(request: web.Request) -> str:
    """The request's language: `?lang=`, the `kentongan_lang` cookie, Accept-Language, the default."""
    settings = request.app[pages_key].settings
    for chosen in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if chosen in settings.languages:
            return chosen
    found = Locale.negotiate(_accepted(request.headers.get("Accept-Language", "")), settings.languages, sep="-")
    return str(found) if found is not None and str(found) in settings.languages else settings.default_language


def _accepted(header: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first (a tag with a bad `q` counts 0)."""
    weighted = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag and tag != "*" and math.isfinite(weight):
            weighted.append((-weight, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def language_name(lang: str) -> str:
    """The language's own name for itself, from babel's CLDR data."""
    try:
        return Locale.parse(lang).get_display_name(lang) or lang
    except (ValueError, UnknownLocaleError):
        return lang


def _context(request: web.Request) -> dict:
    """What every page's template sees: the request's words and language, the app, the signed-in account."""
    pages = request.app[pages_key]
    lang = language(request)
    translations = pages.translations.get(lang) or NullTranslations()
    return {"_": translations.gettext, "gettext": translations.gettext, "ngettext": translations.ngettext,
            "lang": lang, "languages": [(code, language_name(code)) for code in pages.settings.languages],
            "prefix": pages.prefix, "site": pages.site, "account": request.get(account_key), "path": request.path,
            "nav": pages.nav}


def render(request: web.Request, template: str, context: dict, status: int = 200) -> web.Response:
    """`template` in the request's language; a `?lang=` choice is remembered in a cookie."""
    response = aiohttp_jinja2.render_template(template, request, {**_context(request), **context}, status=status)
    chosen = request.query.get("lang")
    if chosen in request.app[pages_key].settings.languages:
        response.set_cookie(LANG_COOKIE, chosen, max_age=LANG_COOKIE_SECONDS, path="/", httponly=True,
                            samesite="Strict", secure=_secure(request))
    return response


# -- cookies, forms, CSRF -----------------------------------------------------------

def _secure(request: web.Request) -> bool:
    return request.secure or request.app[pages_key].settings.secure_cookies


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(name, value, path=request.app[pages_key].prefix, httponly=True, samesite="Strict",
                        secure=_secure(request))


async def form(request: web.Request) -> dict[str, str]:
    """The request's urlencoded form (UTF-8, a few fields); a 400 page when it is anything else."""
    if form_key in request:
        return request[form_key]
    try:
        if request.content_type != "application/x-www-form-urlencoded":
            raise ValueError(f"content type {request.content_type[:60]!r}")
        body = await request.read()
        if len(body) > FORM_BODY_LIMIT:
            raise ValueError("too large")
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                                max_num_fields=FORM_FIELDS, errors="strict"))
    except (ValueError, UnicodeDecodeError) as error:
        log.warning("%s %s: unreadable form refused: %s", request.method, ascii(request.path), ascii(str(error)[:80]))
        raise web.HTTPBadRequest(text="the form must be UTF-8, application/x-www-form-urlencoded") from None
    request[form_key] = fields
    return fields


def _same(given: str, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                                                  expected.encode("utf-8", "surrogatepass"))


def _expired(request: web.Request) -> web.Response:
    log.warning("%s %s refused: the form's csrf token is missing or wrong", request.method, ascii(request.path))
    return render(request, "message.html", {"message": EXPIRED}, status=403)


async def check_csrf(request: web.Request) -> web.Response | None:
    """For a signed-in POST: None when its form's `csrf` is the session's, else the 403 page to answer."""
    fields = await form(request)
    return None if _same(fields.get("csrf", ""), request[account_key]["csrf"]) else _expired(request)


# -- who is signed in ---------------------------------------------------------------

async def signed_in(request: web.Request) -> dict | None:
    """The signed-in account of the request's session (also `request[account_key]`); None when there is none."""
    if account_key not in request:
        token = request.cookies.get(SESSION_COOKIE, "")
        account = None
        if token and token.isascii():
            account = await request.app[pages_key].store(request).call(lambda s: s.accounts.session(token))
        request[account_key] = account
    return request[account_key]


def _login_url(request: web.Request) -> str:
    prefix = request.app[pages_key].prefix
    return f"{prefix}/login?{urlencode({'next': request.path_qs})}"


def roles_with(realm: str, permission: str) -> list[str]:
    return [role for role, allowed in ROLES[realm].items() if permission in allowed]


def require(permission: str) -> Callable[[Handler], Handler]:
    """Guard a page handler: not signed in, a 303 to the sign-in page (back here after); signed in without
    `permission`, a 403 page naming the roles that have it; a POST, its csrf checked."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            account = await signed_in(request)
            if account is None:
                raise web.HTTPSeeOther(_login_url(request))
            if permission not in account["permissions"]:
                pages = request.app[pages_key]
                return render(request, "forbidden.html", {"roles": roles_with(pages.realm, permission)}, status=403)
            if request.method == "POST" and (refused := await check_csrf(request)) is not None:
                return refused
            return await handler(request)

        return guarded

    return wrap


# -- sign-in and sign-out -----------------------------------------------------------

def _next(request: web.Request, wanted: str) -> str:
    """Where a sign-in goes: `wanted` when it is a local path under the prefix, else the prefix."""
    prefix = request.app[pages_key].prefix
    local = wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted and wanted.isprintable()
    if local and (wanted == prefix or wanted.startswith((prefix + "/", prefix + "?"))):
        return wanted
    return prefix


def _login_page(request: web.Request, csrf: str, *, name: str = "", nxt: str = "", reason: str = "",
                minutes: int = 0, status: int = 200) -> web.Response:
    response = render(request, "login.html", {"csrf": csrf, "name": name, "next": nxt, "reason": reason,
                                              "minutes": minutes}, status=status)
    _set_cookie(request, response, CSRF_COOKIE, csrf)
    return response


def _form_token(request: web.Request) -> str:
    """The sign-in form's csrf token: the browser's cookie when it holds a well-formed one, else a new one."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if 20 <= len(token) <= 64 and token.isascii() and token.isprintable() else secrets.token_urlsafe(32)


async def sign_in_form(request: web.Request) -> web.Response:
    if await signed_in(request) is not None:
        raise web.HTTPSeeOther(_next(request, request.query.get("next", "")))
    return _login_page(request, _form_token(request), nxt=_next(request, request.query.get("next", "")))


async def sign_in(request: web.Request) -> web.Response:
    pages = request.app[pages_key]
    verdict = pages.limiter.hit(request.remote or "")
    if not verdict.allowed:
        if verdict.first_refusal:
            log.warning("sign-ins at %s from %s over web.login_per_minute: refused with 429 for %.0f s",
                        pages.prefix, request.remote, verdict.retry_after)
        return _login_page(request, _form_token(request), reason=TOO_MANY,
                           minutes=_minutes(verdict.retry_after), status=429)
    fields = await form(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not _same(fields.get("csrf", ""), cookie):
        return _expired(request)
    name, password = fields.get("name", "").strip()[:100], fields.get("password", "")
    nxt = _next(request, fields.get("next", ""))
    store = pages.store(request)
    locked, account = await store.call(_attempt, name)
    if locked > 0:
        await store.call(lambda s: s.accounts.audit(_who(name, account), "login-failed", detail="locked"))
        return _login_page(request, cookie, name=name, nxt=nxt, reason=LOCKED, minutes=_minutes(locked), status=429)
    verified = await asyncio.to_thread(verify_password, account and account["password_hash"], password)
    if not (verified and account and not account["disabled_at"]):
        await store.call(_failed, name, account)
        log.info("failed sign-in at %s from %s", pages.prefix, request.remote)
        return _login_page(request, cookie, name=name, nxt=nxt, reason=WRONG, status=401)
    token, _ = await store.call(_succeeded, name)
    response = web.HTTPSeeOther(nxt)
    _set_cookie(request, response, SESSION_COOKIE, token)
    response.del_cookie(CSRF_COOKIE, path=pages.prefix)
    raise response


def _who(name: str, account: dict | None) -> str:
    """Whom a failed sign-in's audit row names: the account, or "?" for a name that is none (it may be a
    password typed into the wrong field)."""
    return account["name"] if account else "?"


def _attempt(store, name: str) -> tuple[float, dict | None]:
    """(seconds `name` is still locked out, its account): an attempt that is not locked out is counted as a
    failure at once, in the same call, so that attempts already in flight cannot pass the lock-out together;
    a success forgets it (`_succeeded`)."""
    with store.transaction():
        locked = store.accounts.locked_for(name)
        if not locked:
            store.accounts.record_failure(name)
        return locked, store.accounts.account(name)


def _failed(store, name: str, account: dict | None) -> None:
    store.accounts.audit(_who(name, account), "login-failed",
                         detail="disabled" if account and account["disabled_at"] else "")


def _succeeded(store, name: str) -> tuple[str, str]:
    with store.transaction():
        store.accounts.record_success(name)
        store.accounts.audit(name, "login")
        return store.accounts.start_session(name)


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


async def sign_out(request: web.Request) -> web.Response:
    pages = request.app[pages_key]
    account = await signed_in(request)
    if account is not None:
        if (refused := await check_csrf(request)) is not None:
            return refused
        token = request.cookies[SESSION_COOKIE]

        def end(store) -> None:
            with store.transaction():
                store.accounts.end_session(token)
                store.accounts.audit(account["name"], "logout")

        await pages.store(request).call(end)
    response = web.HTTPSeeOther(f"{pages.prefix}/login")
    response.del_cookie(SESSION_COOKIE, path=pages.prefix)
    raise response


# -- the audit log ------------------------------------------------------------------

@require("audit")
async def audit_page(request: web.Request) -> web.Response:
    before = request.query.get("before", "")
    if before and not (before.isascii() and before.isdigit() and 0 < int(before) <= MAX_ID):
        return render(request, "message.html", {"message": BAD_ADDRESS}, status=400)
    before_id = int(before) if before else None
    rows = await request.app[pages_key].store(request).call(lambda s: s.accounts.audit_log(AUDIT_PAGE, before_id))
    older = rows[-1]["id"] if len(rows) == AUDIT_PAGE else None
    return render(request, "audit.html", {"rows": rows, "older": older})


# -- date filters ----------------------------------------------------------------------

def day_stamp(day: str, after: int = 0) -> str:
    """The store stamp of midnight UTC that starts `day` (an ISO date) plus `after` days: a date filter's bound."""
    start = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=after), dt.time(), dt.timezone.utc)
    return start.isoformat(timespec="milliseconds")


def period_fault(typed: Mapping[str, str]) -> str | None:
    """What is wrong with a filter form's `from` and `to` days: "date" (one is no date), "range" (from is after
    to), or None."""
    try:
        days = [dt.date.fromisoformat(typed[key]) if typed[key] else None for key in ("from", "to")]
    except ValueError:
        return "date"
    return "range" if all(days) and days[0] > days[1] else None
