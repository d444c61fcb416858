"""Open311 GeoReport v2 at the central backend, checked with a third-party client (georeport)."""

import asyncio
import dataclasses
import datetime as dt
import json

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from georeport import GeoReport

from conftest import MovableClock, free_port, make_config
from flows import Engine
from gateway.central import central_config
from gateway.config import data_root
from sync.central import CentralConfig, CentralStore, create_central_app
from sync.central.service import open311_services

API_KEY = "open311-key"
STAFF = "staff"

pytestmark = pytest.mark.central_backends


@pytest.fixture(scope="module")
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


@pytest.fixture
def clock():
    return MovableClock()


@pytest.fixture
async def central(tmp_path, engine, clock, central_db):
    config = make_config(tmp_path, gateway__id="desa-1", sync__secret="secret", central__staff_token=STAFF,
                         central__open311_api_key=API_KEY, central__ref_prefix="Z",
                         central__agency="Dinas PU Kabupaten")
    app = create_central_app(dataclasses.replace(central_config(config, engine), clock=clock,
                                                 database_url=central_db))
    port = free_port()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def client(central, fmt):
    return GeoReport(central + "/open311/v2", api_key=API_KEY, output_format=fmt)


async def post(central, fmt="json", **form):
    data = {"api_key": API_KEY, "service_code": "report", "attribute[category]": "streetlight",
            "description": "Lampu mati sejak minggu lalu", "address_string": "Jl. Merdeka 5, Sukamaju", **form}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{central}/open311/v2/requests.{fmt}", data=data) as response:
            return response.status, response.headers["Content-Type"], await response.text()


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_open311_service_list(central, fmt):
    services = await asyncio.to_thread(client(central, fmt).get_service_list)
    service = services[0] if isinstance(services, list) else services
    assert service["service_code"] == "report" and service["service_name"] == "Problem report"
    assert str(service["metadata"]).lower() == "true" and service["type"] == "realtime"
    assert "Broken streetlight" in service["keywords"] and service["group"] == "Problem report"
    assert set(service) == {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_open311_service_definition(central, fmt):
    definition = await asyncio.to_thread(client(central, fmt).get_service_definition, "report")
    assert definition["service_code"] == "report"
    attributes = definition["attributes"]
    attribute = attributes[0] if fmt == "json" else attributes["attribute"]
    assert attribute["code"] == "category" and attribute["datatype"] == "singlevaluelist"
    assert str(attribute["required"]).lower() == "true" and str(attribute["order"]) == "1"
    values = attribute["values"] if fmt == "json" else attribute["values"]["value"]
    assert {"key": "road", "name": "Damaged road"} in values and len(values) == 5


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_open311_post_then_get(central, fmt, tmp_path):
    status, kind, body = await post(central, fmt)
    assert status == 200
    if fmt == "json":
        assert kind.startswith("application/json")
        created = json.loads(body)[0]
    else:
        assert kind.startswith("text/xml")
        created = xmltodict.parse(body)["service_requests"]["request"]
    ref = created["service_request_id"]
    assert ref.startswith("Z") and 6 <= len(ref) <= 8 and "service_notice" in created

    got = await asyncio.to_thread(client(central, fmt).get_service_request, ref)
    assert got["service_request_id"] == ref and got["status"] == "open"
    assert got["service_code"] == "report" and got["service_name"] == "Problem report"
    assert got["description"] == "Lampu mati sejak minggu lalu"
    assert got["address"] == "Jl. Merdeka 5, Sukamaju" and got["agency_responsible"] == "Dinas PU Kabupaten"
    requested = dt.datetime.fromisoformat(got["requested_datetime"])
    assert requested.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - requested) < dt.timedelta(minutes=1)
    assert set(got) == {"service_request_id", "status", "status_notes", "service_name", "service_code", "description",
                        "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                        "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url"}

    async with aiohttp.ClientSession() as http:
        async with http.patch(f"{central}/api/v1/submissions/{ref}", json={"status": "resolved", "note": "Diganti."},
                              headers={"Authorization": f"Bearer {STAFF}"}) as response:
            assert response.status == 200
    closed = await asyncio.to_thread(client(central, fmt).get_service_requests, status="closed")
    closed = closed if isinstance(closed, list) else [closed]
    assert [(r["service_request_id"], r["status"], r["status_notes"]) for r in closed] == [(ref, "closed", "Diganti.")]
    assert await asyncio.to_thread(client(central, "json").get_service_requests, status="open") == []


async def test_open311_lat_long_location(central):
    status, _, body = await post(central, address_string="", lat="-6.914744", long="107.609810")
    ref = json.loads(body)[0]["service_request_id"]
    got = await asyncio.to_thread(client(central, "json").get_service_request, ref)
    assert (got["lat"], got["long"]) == (-6.914744, 107.60981) and got["address"] == "-6.914744,107.609810"


def created(body):
    return json.loads(body)[0]["service_request_id"]


async def staff_patch(central, ref, status):
    async with aiohttp.ClientSession() as http:
        async with http.patch(f"{central}/api/v1/submissions/{ref}", json={"status": status},
                              headers={"Authorization": f"Bearer {STAFF}"}) as response:
            assert response.status == 200


async def test_open311_list_filters_and_default_window(central, clock):
    clock.advance(days=-120)
    refs = [created((await post(central, **{"attribute[category]": "road"}))[2])]
    clock.advance(days=120)
    for category in ("garbage", "water"):
        refs.append(created((await post(central, **{"attribute[category]": category}))[2]))
    listed = await asyncio.to_thread(client(central, "json").get_service_requests)
    assert [r["service_request_id"] for r in listed] == [refs[2], refs[1]]  # newest first
    old_too = await asyncio.to_thread(client(central, "json").get_service_requests,
                                      start_date=(clock() - dt.timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert len(old_too) == 3
    by_id = await asyncio.to_thread(client(central, "json").get_service_requests,
                                    service_request_id=f"{refs[0]},{refs[2].lower()}")
    assert sorted(r["service_request_id"] for r in by_id) == sorted([refs[0], refs[2]])
    future = await asyncio.to_thread(client(central, "json").get_service_requests, start_date="2099-01-01T00:00:00Z")
    assert future == []


async def test_open311_list_filters_by_status_service_and_end_date(central, clock):
    refs = []
    for _ in range(4):
        refs.append(created((await post(central))[2]))
        clock.advance(hours=1)
    await staff_patch(central, refs[0], "resolved")
    await staff_patch(central, refs[1], "rejected")
    await staff_patch(central, refs[2], "in_progress")
    reader = client(central, "json")

    async def listed(**query):
        return [r["service_request_id"] for r in await asyncio.to_thread(reader.get_service_requests, **query)]

    assert await listed(status="open") == [refs[3], refs[2]]
    assert await listed(status="closed") == [refs[1], refs[0]]
    assert await listed(status="open,closed") == refs[::-1]
    assert await listed(service_code="report") == refs[::-1]
    assert await listed(service_code="voter") == []
    before_third = (clock() - dt.timedelta(hours=2, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await listed(end_date=before_third) == [refs[1], refs[0]]
    assert await listed(end_date=before_third, status="closed", service_code="report,voter") == [refs[1], refs[0]]
    async with aiohttp.ClientSession() as http:
        async with http.get(central + "/open311/v2/requests.json?end_date=soon") as response:
            assert response.status == 400 and "end_date must be a W3C datetime" in await response.text()
        async with http.get(central + "/api/v1/submissions", params={"village": "jl. merdeka 5, SUKAMAJU"},
                            headers={"Authorization": f"Bearer {STAFF}"}) as response:
            assert len((await response.json())["submissions"]) == 4  # the answer with the address role


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_open311_bad_api_key_is_403_in_the_error_format(central, fmt):
    status, kind, body = await post(central, fmt, api_key="wrong")
    assert status == 403
    if fmt == "json":
        assert json.loads(body) == [
            {"code": 403, "description": "Invalid api_key received -- can't proceed with create_request."}]
    else:
        error = xmltodict.parse(body)["errors"]["error"]
        assert error == {"code": "403",
                         "description": "Invalid api_key received -- can't proceed with create_request."}


@pytest.mark.parametrize("form, status, description", [
    ({"service_code": "pothole"}, 404, "service_code 'pothole' was not found"),
    ({"service_code": "voter"}, 404, "service_code 'voter' was not found"),
    ({"address_string": ""}, 400, "a location is required"),
    ({"attribute[category]": ""}, 400, "attribute[category] is required"),
    ({"attribute[category]": "volcano"}, 400, "attribute[category] must be one of"),
    ({"description": ""}, 400, "description is required"),
    ({"api_key": ""}, 400, "api_key is required"),
    ({"lat": "north", "long": "1", "address_string": ""}, 400, "lat and long must be numbers"),
])
async def test_open311_bad_requests_are_refused_with_reason(central, form, status, description):
    got, _, body = await post(central, "json", **form)
    error = json.loads(body)[0]
    assert (got, error["code"]) == (status, status) and description in error["description"]


async def test_open311_unknowns_are_404_or_400(central):
    async with aiohttp.ClientSession() as http:
        for path, status in (("/services/pothole.json", 404), ("/requests/ZNOPE1.xml", 404),
                             ("/services.yaml", 400), ("/requests.json?status=pending", 400)):
            async with http.get(central + "/open311/v2" + path) as response:
                assert response.status == status, path
                body = await response.text()
                assert ("<errors>" in body) if path.endswith(".xml") else body.startswith("[{\"code\"")


async def test_open311_hides_services_with_personal_data(central, tmp_path, central_db):
    store = CentralStore.open(tmp_path, database_url=central_db)
    store.ingest("desa-1", [{"id": "01KB0000000000000000000000", "ref": "K7ABCDE", "service": "voter",
                             "channel": "ussd", "answers": {"nik": "3201234567890123", "name": "Siti Aminah",
                                                            "village": "Sukamaju"},
                             "phone": "+6281234567890", "language": "id",
                             "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}])
    store.close()
    assert await asyncio.to_thread(client(central, "json").get_service_requests) == []
    async with aiohttp.ClientSession() as http:
        async with http.get(central + "/open311/v2/requests/K7ABCDE.json") as response:
            assert response.status == 404


def test_open311_services_must_be_forms(tmp_path, engine):
    with pytest.raises(ValueError, match="central.open311_services: 'pothole' is not a flow that makes submissions"):
        create_central_app(CentralConfig(tmp_path, STAFF, engine.forms("en"), open311_services=("report", "pothole")))
    with pytest.raises(ValueError, match="'status' is not a flow that makes submissions"):
        create_central_app(CentralConfig(tmp_path, STAFF, engine.forms("en"), open311_services=("status",)))


def test_open311_services_are_made_from_forms_roles():
    form = {"service": "leak", "title": "Water leak", "label": "Report a leak", "address": "where",
            "description": "what",
            "questions": [
                {"answer": "where", "prompt": "Where?", "kind": "text", "role": "address", "choices": []},
                {"answer": "size", "prompt": "How big?", "kind": "choice", "role": None,
                 "choices": [{"value": "drip", "label": "A drip"}, {"value": "flood", "label": "A flood"}]},
                {"answer": "what", "prompt": "What?", "kind": "text", "role": "description", "choices": []},
                {"answer": "pipe", "prompt": "Pipe number?", "kind": "text", "role": None, "choices": []}]}
    service = open311_services({"leak": form}, ("leak",))["leak"]
    assert (service["service_name"], service["description"], service["keywords"]) == (
        "Water leak", "Report a leak", "A drip, A flood")
    assert service["fields"] == {"address": "where", "description": "what"}
    assert [(a["code"], a["datatype"], a["order"]) for a in service["attributes"]] == [
        ("size", "singlevaluelist", 1), ("pipe", "string", 2)]


async def test_open311_a_request_in_review_is_open_and_its_reason_is_not_shown(central):
    ref = created((await post(central))[2])
    await staff_patch(central, ref, "review")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{central}/open311/v2/requests/{ref}.json") as response:
            shown = (await response.json())[0]
        async with http.get(f"{central}/open311/v2/requests.json?status=open") as response:
            listed = [r["service_request_id"] for r in await response.json()]
    assert shown["status"] == "open" and "review_reason" not in shown and listed == [ref]
