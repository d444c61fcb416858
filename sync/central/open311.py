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
filtered, ordered and limited by the store in SQL.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Callable
from xml.etree import ElementTree as ET

from aiohttp import web

from ..database import stamp
from ..thread import StoreThread
from .config import CentralConfig
from .service import open311_services
from .store import CentralStore, utc_stamp

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
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
    if fmt == "json":
        return web.json_response(rows, status=status)
    top = ET.Element(root)
    for row in rows:
        _xml(top, item, row)
    body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="utf-8")
    return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")


def _format(request: web.Request) -> str:
    fmt = request.match_info["fmt"]
    if fmt not in FORMATS:
        raise Open311Error(400, f"format must be json or xml, not {fmt!r}")
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
        raise Open311Error(404, f"service_code {request.match_info['code']!r} was not found")
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
        "agency_responsible": agency,
        "service_notice": "",
        "requested_datetime": row["created_at"],
        "updated_datetime": row["updated_at"],
        "expected_datetime": None,
        "address": str(answers.get(fields.get("address", ""), "") or ""),
        "address_id": None,
        "zipcode": None,
        "lat": answers.get("lat"),
        "long": answers.get("long"),
        "media_url": None,
    }


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
        rows = await _store(request).call(lambda s: s.service_requests(codes, refs=refs, limit=LIST_LIMIT))
    else:
        start = _when(query["start_date"], "start_date") if query.get("start_date") else \
            stamp(settings.clock() - dt.timedelta(days=LIST_DAYS))
        end = _when(query["end_date"], "end_date") if query.get("end_date") else None
        statuses = _statuses(query["status"]) if query.get("status") else ()
        if query.get("service_code"):
            wanted = {code.strip() for code in query["service_code"].split(",")}
            codes = [code for code in codes if code in wanted]
        rows = await _store(request).call(lambda s: s.service_requests(
            codes, start=start, end=end, statuses=statuses, limit=LIST_LIMIT))
    services = settings.services
    return render(fmt, "service_requests", "request",
                  [_as_request(r, services[r["service"]], settings.agency) for r in rows])


@_handler
async def one_request(request: web.Request, fmt: str) -> web.Response:
    settings = request.app[open311_key]
    ref = request.match_info["id"].upper()
    row = await _store(request).call(lambda s: s.submission(ref))
    if row is None or row["service"] not in settings.services:
        raise Open311Error(404, f"service_request_id {ref!r} was not found")
    return render(fmt, "service_requests", "request",
                  [_as_request(row, settings.services[row["service"]], settings.agency)])


@_handler
async def create_request(request: web.Request, fmt: str) -> web.Response:
    settings = request.app[open311_key]
    form = await request.post()
    key = str(form.get("api_key", ""))
    if not key:
        raise Open311Error(400, "api_key is required")
    if not settings.api_key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise Open311Error(403, "Invalid api_key received -- can't proceed with create_request.")
    code = str(form.get("service_code", ""))
    if not code:
        raise Open311Error(400, "service_code is required")
    service = settings.services.get(code)
    if service is None:
        raise Open311Error(404, f"service_code {code!r} was not found")
    lat, long_ = form.get("lat"), form.get("long")
    address = str(form.get("address_string") or form.get("address_id") or "").strip()
    answers: dict = {}
    if lat and long_:
        try:
            answers["lat"], answers["long"] = float(lat), float(long_)
        except ValueError:
            raise Open311Error(400, "lat and long must be numbers") from None
        address = address or f"{answers['lat']:.6f},{answers['long']:.6f}"
    if not address:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    fields = service["fields"]
    description = str(form.get("description", "")).strip()
    if "description" in fields:
        if not description:
            raise Open311Error(400, "description is required")
        answers[fields["description"]] = description[:1000]
    if "address" in fields:
        answers[fields["address"]] = address[:200]
    for attribute in service["attributes"]:
        value = str(form.get(f"attribute[{attribute['code']}]", "")).strip()
        if not value and attribute["required"]:
            raise Open311Error(400, f"attribute[{attribute['code']}] is required")
        allowed = {v["key"] for v in attribute["values"]}
        if value and allowed and value not in allowed:
            raise Open311Error(400, f"attribute[{attribute['code']}] must be one of {', '.join(sorted(allowed))}")
        if value:
            answers[attribute["code"]] = value[:200]
    phone = str(form.get("phone", "")).strip()[:32]
    row = await _store(request).call(lambda s: s.add_direct(service["service_code"], answers, phone, "open311"))
    return render(fmt, "service_requests", "request",
                  [{"service_request_id": row["ref"], "service_notice": "", "account_id": None}])
