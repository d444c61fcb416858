"""Open311 GeoReport v2 at the central backend, checked with a third-party client (georeport)."""

import asyncio
import datetime as dt
import json
import sqlite3

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from georeport import GeoReport

from conftest import free_port
from flows import Engine
from gateway.catalogue import open311_services
from gateway.config import data_root
from sync.central import create_central_app
from sync.central_store import DATABASE_NAME, CentralStore

API_KEY = "open311-key"
STAFF = "staff"


@pytest.fixture(scope="module")
def services():
    root = data_root()
    engine = Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")
    return open311_services(engine, ("report",))


@pytest.fixture
async def central(tmp_path, services):
    port = free_port()
    app = create_central_app(tmp_path, {"desa-1": "secret"}, STAFF, services=services, open311_api_key=API_KEY,
                             ref_prefix="Z", agency="Dinas PU Kabupaten")
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


async def test_open311_list_filters_and_default_window(central, tmp_path):
    refs = []
    for category in ("road", "garbage", "water"):
        refs.append(json.loads((await post(central, **{"attribute[category]": category}))[2])[0]
                    ["service_request_id"])
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=120)).isoformat(timespec="milliseconds")
    with sqlite3.connect(tmp_path / DATABASE_NAME) as conn:
        conn.execute("UPDATE submissions SET created_at = ? WHERE ref = ?", [old, refs[0]])
    listed = await asyncio.to_thread(client(central, "json").get_service_requests)
    assert sorted(r["service_request_id"] for r in listed) == sorted(refs[1:])
    old_too = await asyncio.to_thread(client(central, "json").get_service_requests,
                                      start_date=(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200))
                                      .strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert len(old_too) == 3
    by_id = await asyncio.to_thread(client(central, "json").get_service_requests,
                                    service_request_id=f"{refs[0]},{refs[2]}")
    assert sorted(r["service_request_id"] for r in by_id) == sorted([refs[0], refs[2]])
    future = await asyncio.to_thread(client(central, "json").get_service_requests, start_date="2099-01-01T00:00:00Z")
    assert future == []


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


async def test_open311_hides_services_with_personal_data(central, tmp_path):
    store = CentralStore.open(tmp_path)
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
