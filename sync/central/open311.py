"""The central backend's Open311 GeoReport v2 face, under `/open311/v2/`.

    GET  services.{json|xml}                 the service list
    GET  services/{service_code}.{fmt}       a service definition (its attributes)
    GET  requests.{fmt}                      service requests (service_request_id, service_code,
                                             start_date, end_date, status); the last 90 days and
                                             at most 1000 by default
    POST requests.{fmt}                      a new request (api_key, service_code, a location,
                                             attribute[code]=value, description, requester)
    GET  requests/{service_request_id}.{fmt} one request (a list of one, as the spec says)

Submissions are service requests: the id is the reference, received, review
and in_progress are `open`, resolved and rejected are `closed`, the staff
note is `status_notes` (a review's reason, for staff, is not shown). XML
(which the specification requires) and JSON carry the same fields; errors
are a list of {code, description} with that HTTP status.

Which services appear, and how their answers map to Open311 fields, comes
from the forms (`service.py`): only the services named in
`CentralConfig.open311_services` (by default the problem report) are
exposed. Voter registrations and permits carry NIK and names. Lists are
filtered, ordered and limited by the store in SQL; only the rows returned
are unsealed. Every read runs in a reading thread of the store
(`StoreThread.read`), never in its one writing thread: a client asking for
the widest lists, many at once, never holds up a gateway's sync. A POST body is read up to `OPEN311_BODY_LIMIT` (the app's
`bounded_body`), must be UTF-8 text fields, and its coordinates finite
numbers on the globe: nothing else is stored, and nothing but JSON and
well-formed XML goes out.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Callable
from xml.etree import ElementTree as ET

from aiohttp import web

from ..database import stamp
from ..thread import StoreThread
from .config import CentralConfig
from .service import open311_services
from .store import CentralStore, utc_stamp

log = logging.getLogger(__name__)

OPEN311_BODY_LIMIT = 64 * 1024
"""The most a POST of one request reads: a description of 1000 characters and a few fields, with room."""
MAX_REFS = 100
"""The most service_request_ids one list asks for."""
_REF = re.compile(r"^[0-9A-Z]{6,8}$")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
FORMATS = ("json", "xml")
OPEN = ("received", "review", "in_progress")
CLOSED = ("resolved", "rejected")
LIST_DAYS = 90
LIST_LIMIT = 1000
REQUEST_FIELDS = ("service_request_id", "status", "status_notes", "service_name", "service_code", "description",
                  "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                  "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url")
SERVICE_FIELDS = ("service_code", "service_name", "description", "metadata", "type", "keywords", "group")
ATTRIBUTE_FIELDS = ("variable", "code", "datatype", "required", "datatype_description", "order", "description")


@dataclass(frozen=True)
class Open311:
    """What the Open311 handlers need, set up once."""

    services: dict[str, dict]
    api_key: str
    agency: str
    clock: Callable[[], dt.datetime]
    store_key: web.AppKey


open311_key = web.AppKey("open311", Open311)


class Open311Error(Exception):
    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


def setup_open311(app: web.Application, config: CentralConfig, store_key: web.AppKey) -> None:
    """Add the Open311 routes to the central backend's `app`; ValueError names a service that is not a form."""
    app[open311_key] = Open311(open311_services(config.forms, config.open311_services), config.open311_api_key,
                               config.agency, config.clock, store_key)
    base = "/open311/v2"
    app.router.add_get(base + "/services.{fmt}", service_list)
    app.router.add_get(base + "/services/{code:[^/]+?}.{fmt}", service_definition)
    app.router.add_get(base + "/requests.{fmt}", request_list)
    app.router.add_post(base + "/requests.{fmt}", create_request)
    app.router.add_get(base + "/requests/{id:[^/]+?}.{fmt}", one_request)


def _store(request: web.Request) -> StoreThread[CentralStore]:
    return request.app[request.app[open311_key].store_key]


# -- rendering -------------------------------------------------------------------

def _xml_value(value) -> str:
    """Text XML 1.0 can carry: characters it forbids (controls, lone surrogates) are left out."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _xml(parent: ET.Element, tag: str, data) -> None:
    element = ET.SubElement(parent, tag)
    if isinstance(data, dict):
        for key, value in data.items():
            _xml(element, key, value)
    elif isinstance(data, list):
        child = {"values": "value", "attributes": "attribute"}.get(tag, "item")
        for item in data:
            _xml(element, child, item)
    else:
        element.text = _xml_value(data)


def render(fmt: str, root: str, item: str, rows: list[dict], status: int = 200) -> web.Response:
    """Rows as `fmt`: a JSON list, or `<root><item>...</item></root>`."""
    return answer(fmt, serialize(fmt, root, item, rows), status)


def serialize(fmt: str, root: str, item: str, rows: list[dict]) -> bytes:
    """The body `render` answers with: made apart, so that a long list is made in a reading thread."""
    if fmt == "json":
        return json.dumps(rows).encode()
    top = ET.Element(root)
    for row in rows:
        _xml(top, item, row)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="utf-8")


def answer(fmt: str, body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json" if fmt == "json" else "text/xml",
                        charset="utf-8")


def _format(request: web.Request) -> str:
    fmt = request.match_info["fmt"]
    if fmt not in FORMATS:
        raise Open311Error(400, f"format must be json or xml, not {ascii(fmt[:40])}")
    return fmt


def _errors(fmt: str, error: Open311Error) -> web.Response:
    return render(fmt, "errors", "error", [{"code": error.status, "description": error.description}], error.status)


def _handler(fn):
    async def wrapped(request: web.Request) -> web.Response:
        fmt = request.match_info.get("fmt") if request.match_info.get("fmt") in FORMATS else "json"
        try:
            return await fn(request, _format(request))
        except Open311Error as error:
            return _errors(fmt, error)

    wrapped.__name__ = fn.__name__
    return wrapped


# -- services --------------------------------------------------------------------------

@_handler
async def service_list(request: web.Request, fmt: str) -> web.Response:
    services = request.app[open311_key].services.values()
    return render(fmt, "services", "service", [{k: s[k] for k in SERVICE_FIELDS} for s in services])


@_handler
async def service_definition(request: web.Request, fmt: str) -> web.Response:
    service = request.app[open311_key].services.get(request.match_info["code"])
    if service is None:
        raise Open311Error(404, f"service_code {ascii(request.match_info['code'][:40])} was not found")
    attributes = [{**{k: a[k] for k in ATTRIBUTE_FIELDS}, "values": a["values"]} for a in service["attributes"]]
    definition = {"service_code": service["service_code"], "attributes": attributes}
    if fmt == "json":
        return web.json_response(definition)
    top = ET.Element("service_definition")
    ET.SubElement(top, "service_code").text = service["service_code"]
    _xml(top, "attributes", attributes)
    body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="utf-8")
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


# -- requests --------------------------------------------------------------------------

def _as_request(row: dict, service: dict, agency: str) -> dict:
    fields = service["fields"]
    answers = row["answers"]
    return {
        "service_request_id": row["ref"],
        "status": "open" if row["status"] in OPEN else "closed",
        "status_notes": row.get("note") or "",
        "service_name": service["service_name"],
        "service_code": service["service_code"],
        "description": str(answers.get(fields.get("description", ""), "") or ""),
        "agency_responsible": row.get("agency") or agency,
        "service_notice": "",
        "requested_datetime": row["created_at"],
        "updated_datetime": row["updated_at"],
        "expected_datetime": row.get("due_at"),
        "address": str(answers.get(fields.get("address", ""), "") or ""),
        "address_id": None,
        "zipcode": None,
        "lat": _coordinate(answers.get("lat"), 90),
        "long": _coordinate(answers.get("long"), 180),
        "media_url": None,
    }


def _coordinate(value, most: float) -> float | None:
    """`value` when it is a finite number from -`most` to `most`, else None: JSON has no NaN or Infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and -most <= value <= most else None


def _when(text: str, name: str) -> str:
    try:
        return utc_stamp(text)
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C datetime, like 2026-11-01T00:00:00Z") from None


def _statuses(text: str) -> tuple[str, ...]:
    """The store statuses an Open311 `status` filter (open, closed, or both) means; () for any."""
    wanted = {part.strip() for part in text.split(",")}
    if not wanted <= {"open", "closed"}:
        raise Open311Error(400, "status must be open, closed, or both comma-delimited")
    if wanted == {"open"}:
        return OPEN
    if wanted == {"closed"}:
        return CLOSED
    return ()


@_handler
async def request_list(request: web.Request, fmt: str) -> web.Response:
    settings = request.app[open311_key]
    query = request.query
    codes = list(settings.services)
    if query.get("service_request_id"):
        refs = sorted({part.strip().upper() for part in query["service_request_id"].split(",") if part.strip()})
        if len(refs) > MAX_REFS:
            raise Open311Error(400, f"service_request_id names at most {MAX_REFS} requests")
        refs = [ref for ref in refs if _REF.match(ref)]
        wanted = {"refs": refs}
    else:
        start = _when(query["start_date"], "start_date") if query.get("start_date") else \
            stamp(settings.clock() - dt.timedelta(days=LIST_DAYS))
        end = _when(query["end_date"], "end_date") if query.get("end_date") else None
        statuses = _statuses(query["status"]) if query.get("status") else ()
        if query.get("service_code"):
            named = {code.strip() for code in query["service_code"].split(",")}
            codes = [code for code in codes if code in named]
        wanted = {"start": start, "end": end, "statuses": statuses}

    def listed(store: CentralStore) -> bytes:
        """The answer's body, made in a reading thread: the event loop only sends it."""
        rows = store.service_requests(codes, **wanted, limit=LIST_LIMIT)
        return serialize(fmt, "service_requests", "request",
                         [_as_request(r, settings.services[r["service"]], settings.agency) for r in rows])

    return answer(fmt, await _store(request).read(listed))


@_handler
async def one_request(request: web.Request, fmt: str) -> web.Response:
    settings = request.app[open311_key]
    ref = request.match_info["id"].upper()
    row = await _store(request).read(lambda s: s.submission(ref)) if _REF.match(ref) else None
    if row is None or row["service"] not in settings.services:
        raise Open311Error(404, f"service_request_id {ascii(ref[:40])} was not found")
    return render(fmt, "service_requests", "request",
                  [_as_request(row, settings.services[row["service"]], settings.agency)])


@_handler
async def create_request(request: web.Request, fmt: str) -> web.Response:
    settings = request.app[open311_key]
    form = await _form(request)
    key = form.get("api_key", "")
    if not key:
        raise Open311Error(400, "api_key is required")
    if not settings.api_key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise Open311Error(403, "Invalid api_key received -- can't proceed with create_request.")
    code = form.get("service_code", "")
    if not code:
        raise Open311Error(400, "service_code is required")
    service = settings.services.get(code)
    if service is None:
        raise Open311Error(404, f"service_code {ascii(code[:40])} was not found")
    lat, long_ = form.get("lat"), form.get("long")
    address = (form.get("address_string") or form.get("address_id") or "").strip()
    answers: dict = {}
    if lat and long_:
        answers["lat"], answers["long"] = _number(lat, 90), _number(long_, 180)
        address = address or f"{answers['lat']:.6f},{answers['long']:.6f}"
    if not address:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    fields = service["fields"]
    description = form.get("description", "").strip()
    if "description" in fields:
        if not description:
            raise Open311Error(400, "description is required")
        answers[fields["description"]] = description[:1000]
    if "address" in fields:
        answers[fields["address"]] = address[:200]
    for attribute in service["attributes"]:
        value = form.get(f"attribute[{attribute['code']}]", "").strip()
        if not value and attribute["required"]:
            raise Open311Error(400, f"attribute[{attribute['code']}] is required")
        allowed = {v["key"] for v in attribute["values"]}
        if value and allowed and value not in allowed:
            raise Open311Error(400, f"attribute[{attribute['code']}] must be one of {', '.join(sorted(allowed))}")
        if value:
            answers[attribute["code"]] = value[:200]
    phone = form.get("phone", "").strip()[:32]
    row = await _store(request).call(lambda s: s.add_direct(service["service_code"], answers, phone, "open311"))
    return render(fmt, "service_requests", "request",
                  [{"service_request_id": row["ref"], "service_notice": "", "account_id": None}])


FORM_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


async def _form(request: web.Request) -> dict[str, str]:
    """The POST's fields as text (the first of each name); an Open311 400 with a reason, and one WARNING line,
    for a body that is not UTF-8 text fields (another charset, stray bytes, a file, a broken multipart body)."""
    charset = request.charset
    if charset and charset.lower() not in FORM_CHARSETS:
        raise _malformed(request, f"the body must be UTF-8, not charset {ascii(charset[:40])}")
    try:
        form = await request.post()
    except (ValueError, LookupError, AssertionError) as error:  # UnicodeDecodeError is a ValueError
        raise _malformed(request, f"the body cannot be read as form fields: {type(error).__name__}") from None
    fields: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(value, str) or not _is_text(name) or not _is_text(value):
            raise _malformed(request, f"field {ascii(str(name)[:40])} must be UTF-8 text")
        fields.setdefault(name, value)
    return fields


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _malformed(request: web.Request, reason: str) -> Open311Error:
    log.warning("%s %s refused with 400: %s", request.method, ascii(request.path), reason)
    return Open311Error(400, reason)


def _number(text: str, most: float) -> float:
    """A coordinate typed as text: a finite number from -`most` to `most`, else a 400 that says so."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not -most <= number <= most:
        raise Open311Error(400, "lat and long must be numbers: lat from -90 to 90, long from -180 to 180")
    return number
