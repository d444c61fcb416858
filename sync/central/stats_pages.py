"""Service performance pages: `/office/stats` for staff, `/public` for anyone, each also as JSON and CSV.

    /office/stats      (.json, .csv)   permission "read": by service, category, village and agency
    /public            (.json, .csv)   no sign-in: by service, category and agency; no place, phone,
                                       answer or name (a typed place is personal), cacheable

`?from=YYYY-MM-DD&to=YYYY-MM-DD` chooses the period (UTC days, both
included; the last 30 days by default); the figures and their definitions
are `stats.py`'s. The page draws one bar chart per grouping on the server
(inline SVG, titled and described, each bar labelled in text) above a table
of every figure; the JSON and the CSV carry the same rounded numbers. A
period that cannot be shown re-shows the form with the reason (400).
Everything is read on a reading thread, never the store's writer.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import time
from collections import OrderedDict
from decimal import Decimal
from html import escape
from urllib.parse import urlencode

from aiohttp import web
from babel.numbers import format_decimal
from babel.support import NullTranslations
from markupsafe import Markup

from ..database import stamp
from ..limits import RateLimiter
from ..pages import N_, language, pages_key, render, require
from .keys import central_config_key
from .stats import FIGURES, GROUPS, PUBLIC_GROUPS, PeriodError, performance, period, plain

OFFICE_PATH = "/office/stats"
PUBLIC_PATH = "/public"
PUBLIC_CACHE = "public, max-age=300"
"""How long a browser or a proxy may keep the public figures: they change slowly, and anyone may ask."""
TYPED = 40
GROUP_WORDS = {"service": N_("web.stats.by_service"), "category": N_("web.stats.by_category"),
               "village": N_("web.stats.by_village"), "agency": N_("web.stats.by_agency")}
FIGURE_WORDS = {"received": N_("web.stats.figure.received"), "open": N_("web.stats.figure.open"),
                "within_target_pct": N_("web.stats.figure.within_target_pct"),
                "median_hours": N_("web.stats.figure.median_hours"), "p90_hours": N_("web.stats.figure.p90_hours"),
                "reopened_pct": N_("web.stats.figure.reopened_pct"), "ratings": N_("web.stats.figure.ratings"),
                "rating_mean": N_("web.stats.figure.rating_mean"), "fixed_pct": N_("web.stats.figure.fixed_pct")}
"""The figures the page's tables show, with their column headings; the JSON and the CSV also carry the counts
the shares are of."""
BAR_WORDS = N_("web.stats.bar")
"""A bar's tooltip: its whole name and its main numbers."""
BAR_FIGURES = N_("web.stats.bar_figures")
"""A bar's line of numbers, under its name."""
LABEL_LIMIT = 38
"""Characters of a name that fit a chart's width; a longer one is cut with `…` (the table has it whole)."""
NONE = N_("web.stats.none")
CHART_DESC = N_("web.stats.chart_desc")
CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")
"""How a cell a spreadsheet would run as a formula begins; such a cell is sent with a leading `'`."""

PUBLIC_SECONDS = 300.0
PUBLIC_KEPT = 32
PUBLIC_PER_MINUTE = 20
ROW = 58
WIDTH = 320


def setup_stats(app: web.Application) -> None:
    app[public_key] = PublicFigures()
    for path, handler in ((OFFICE_PATH, office_stats), (f"{OFFICE_PATH}.json", office_json),
                          (f"{OFFICE_PATH}.csv", office_csv), (PUBLIC_PATH, public_stats),
                          (f"{PUBLIC_PATH}.json", public_json), (f"{PUBLIC_PATH}.csv", public_csv)):
        app.router.add_get(path, handler)


# -- reading ------------------------------------------------------------------------

def _typed(request: web.Request) -> dict[str, str]:
    return {key: request.query.get(key, "").strip()[:TYPED] for key in ("from", "to")}


def _read(store, typed: dict[str, str], groups: tuple[str, ...]):
    """(the period, its figures), on a reading thread; `PeriodError` for a period that cannot be shown."""
    now = store.clock()
    chosen = period(typed["from"], typed["to"], now.astimezone(dt.timezone.utc).date())
    rows = store.performance_rows(chosen.since, chosen.until, places="village" in groups)
    return chosen, performance(rows, stamp(now), groups)


async def _figures(request: web.Request, groups: tuple[str, ...]):
    if groups != PUBLIC_GROUPS:
        return await request.app[pages_key].store(request).read(_read, _typed(request), groups)
    return await request.app[public_key].figures(request)


class PublicFigures:
    """What `/public` costs anyone who asks: a period's figures are worked out once per PUBLIC_SECONDS and kept
    for at most PUBLIC_KEPT periods, and an address may ask for at most PUBLIC_PER_MINUTE periods not kept
    (429 beyond): no stranger can keep the reading threads busy with one year after another."""

    def __init__(self) -> None:
        self.kept: OrderedDict[tuple, tuple[float, object]] = OrderedDict()
        self.misses = RateLimiter("public periods per address", PUBLIC_PER_MINUTE, 60.0)

    async def figures(self, request: web.Request):
        typed = _typed(request)
        thread = request.app[pages_key].store(request)
        key = (typed["from"], typed["to"], thread.store.clock().astimezone(dt.timezone.utc).date())
        found = self.kept.get(key)
        if found is not None and time.monotonic() - found[0] < PUBLIC_SECONDS:
            return found[1]
        verdict = self.misses.hit(request.remote or "?")
        if not verdict.allowed:
            seconds = max(1, math.ceil(verdict.retry_after))
            raise web.HTTPTooManyRequests(text=f"too many periods asked from this address; retry in {seconds} s",
                                          headers={"Retry-After": str(seconds)})
        result = await thread.read(_read, typed, PUBLIC_GROUPS)
        self.kept[key] = (time.monotonic(), result)
        self.kept.move_to_end(key)
        while len(self.kept) > PUBLIC_KEPT:
            self.kept.popitem(last=False)
        return result


public_key = web.AppKey("public_figures", PublicFigures)


def _forms(request: web.Request) -> dict:
    """The config's forms, for the names of services and categories."""

    return request.app[central_config_key].forms


def labeller(gettext, forms):
    """`label(group, key)`: a service's title and a category's choice label in the page's language (the
    menus' message ids `<service>.title` and `<service>.<answer>.<value>`, else the forms' own words), a
    village or an agency as it is; `web.stats.none` for an unknown key."""

    def words(msgid: str, fallback: str) -> str:
        translated = gettext(msgid)
        return translated if translated != msgid else fallback

    def label(group: str, key: str | None) -> str:
        if key is None:
            return gettext(NONE)
        if group == "service":
            return words(f"{key}.title", forms[key]["title"] if key in forms else key)
        if group == "category":
            service, _, value = key.partition("/")
            questions = [q for q in forms.get(service, {}).get("questions", ()) if q["kind"] == "choice"]
            choices = {c["value"]: c["label"] for c in questions[0]["choices"]} if questions else {}
            return words(f"{service}.{questions[0]['answer']}.{value}", choices[value]) if value in choices \
                else value
        return key

    return label


def _labelled(result: dict, label) -> dict:
    """`result` with each group entry's `label`; categories of two services that read the same (`Other`) get
    their service's name after them."""
    groups = {group: [{**entry, "label": label(group, entry["key"])} for entry in entries]
              for group, entries in result["groups"].items()}
    categories = groups.get("category", [])
    seen = [entry["label"] for entry in categories]
    for entry in categories:
        if seen.count(entry["label"]) > 1:
            entry["label"] += f" ({label('service', entry['key'].partition('/')[0])})"
    return {"total": result["total"], "groups": groups}


# -- the page -----------------------------------------------------------------------

def number(value, lang: str) -> str:
    """A figure as the page shows it: a count grouped, a rounded Decimal with its decimals, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, Decimal):
        decimals = -value.as_tuple().exponent
        return format_decimal(value, format="#,##0." + "0" * decimals, locale=lang)
    return format_decimal(value, locale=lang)


def svg(group: str, entries: list[dict], gettext, lang: str) -> str:
    """One grouping's chart as inline SVG: per entry its name, its main numbers in words, and a bar of the
    requests received with the part still open darker; titled and described for screen readers, each bar
    with a tooltip naming it whole."""
    widest = max((entry["received"] for entry in entries), default=0) or 1
    chart_id = f"chart-{group}"
    height = ROW * len(entries) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" '
             f'width="100%" aria-labelledby="{chart_id}-t {chart_id}-d" class="stats">',
             f'<title id="{chart_id}-t">{escape(gettext(GROUP_WORDS[group]))}</title>'
             f'<desc id="{chart_id}-d">{escape(gettext(CHART_DESC))}</desc>']
    for row, entry in enumerate(entries):
        top = row * ROW
        shown = {name: number(entry[name], lang) for name in ("received", "open", "median_hours")}
        figures = gettext(BAR_FIGURES).format(received=shown["received"], open=shown["open"],
                                              median=shown["median_hours"])
        whole = gettext(BAR_WORDS).format(label=entry["label"], received=shown["received"], open=shown["open"],
                                          median=shown["median_hours"])
        name = entry["label"] if len(entry["label"]) <= LABEL_LIMIT else entry["label"][:LABEL_LIMIT - 1] + "…"
        received = round(WIDTH * entry["received"] / widest, 1)
        still_open = round(WIDTH * entry["open"] / widest, 1)
        parts.append(f'<g><title>{escape(whole)}</title>'
                     f'<text x="0" y="{top + 14}" class="name">{escape(name)}</text>'
                     f'<text x="0" y="{top + 30}" class="label">{escape(figures)}</text>'
                     f'<rect x="0" y="{top + 36}" width="{max(received, 2)}" height="16" class="received"/>')
        if entry["open"]:
            parts.append(f'<rect x="0" y="{top + 36}" width="{max(still_open, 2)}" height="16" class="open"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


async def _page(request: web.Request, public: bool) -> web.Response:
    here = PUBLIC_PATH if public else OFFICE_PATH
    typed = _typed(request)
    context = {"typed": typed, "here": here, "public": public, "figure_words": FIGURE_WORDS,
               "group_words": GROUP_WORDS}
    try:
        chosen, result = await _figures(request, PUBLIC_GROUPS if public else GROUPS)
    except PeriodError as error:
        return render(request, "stats.html", {**context, "reason": error.args[0]}, status=400)
    lang, gettext = _words(request)
    result = _labelled(result, labeller(gettext, _forms(request)))
    shown = {group: [{**entry, "shown": {name: number(entry[name], lang) for name in FIGURE_WORDS}}
                     for entry in entries] for group, entries in result["groups"].items()}
    response = render(request, "stats.html", {
        **context, "period": chosen, "query": _query(chosen), "groups": shown,
        "total": {name: number(result["total"][name], lang) for name in FIGURE_WORDS},
        "charts": {group: Markup(svg(group, entries, gettext, lang)) for group, entries in result["groups"].items()},
    })
    if public:
        response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


def _words(request: web.Request):
    """The request's language and its catalog's gettext."""
    lang = language(request)
    return lang, (request.app[pages_key].translations.get(lang) or NullTranslations()).gettext


def _query(chosen) -> str:
    return urlencode({"from": chosen.first.isoformat(), "to": chosen.last.isoformat()})


@require("read")
async def office_stats(request: web.Request) -> web.Response:
    return await _page(request, public=False)


async def public_stats(request: web.Request) -> web.Response:
    return await _page(request, public=True)


# -- JSON and CSV -------------------------------------------------------------------

async def _data(request: web.Request, public: bool):
    """(the period, the labelled figures), or the 400 answer for a period that cannot be shown."""
    try:
        chosen, result = await _figures(request, PUBLIC_GROUPS if public else GROUPS)
    except PeriodError as error:
        gettext = _words(request)[1]
        raise web.HTTPBadRequest(text=json.dumps({"error": gettext(error.args[0])}),
                                 content_type="application/json") from None
    return chosen, _labelled(result, labeller(_words(request)[1], _forms(request)))


def _json(chosen, result: dict, public: bool) -> web.Response:
    body = {"period": {"from": chosen.first.isoformat(), "to": chosen.last.isoformat(), "timezone": "UTC"},
            "total": {name: plain(result["total"][name]) for name in FIGURES},
            "groups": {group: [{"key": entry["key"], "label": entry["label"],
                                **{name: plain(entry[name]) for name in FIGURES}} for entry in entries]
                       for group, entries in result["groups"].items()}}
    response = web.json_response(body)
    if public:
        response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


def _cell(value) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if isinstance(value, str) and text.startswith(CSV_RISKY) else text


def _csv(chosen, result: dict, public: bool) -> web.Response:
    """The figures as CSV: a row for all requests (group `all`), then one per group entry."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["from", "to", "group", "key", "label", *FIGURES])
    dates = [chosen.first.isoformat(), chosen.last.isoformat()]
    writer.writerow([*dates, "all", "", "", *(_cell(result["total"][name]) for name in FIGURES)])
    for group, entries in result["groups"].items():
        for entry in entries:
            writer.writerow([*dates, group, _cell(entry["key"]), _cell(entry["label"]),
                             *(_cell(entry[name]) for name in FIGURES)])
    name = f"kentongan-{'public' if public else 'stats'}-{dates[0]}-{dates[1]}.csv"
    response = web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"), content_type="text/csv",
                            charset="utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'})
    if public:
        response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@require("read")
async def office_json(request: web.Request) -> web.Response:
    return _json(*await _data(request, public=False), public=False)


@require("read")
async def office_csv(request: web.Request) -> web.Response:
    return _csv(*await _data(request, public=False), public=False)


async def public_json(request: web.Request) -> web.Response:
    return _json(*await _data(request, public=True), public=True)


async def public_csv(request: web.Request) -> web.Response:
    return _csv(*await _data(request, public=True), public=True)
