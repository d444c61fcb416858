"""`GET /metrics` on the gateway and the central backend: Prometheus text that the official parser reads, counting
what really happened (a USSD report, its SMS sent and delivered, a sync round, a refused session, a staff change),
with no personal data, and no sign-in."""

import re

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PHONE, Gateway, eventually, free_port, served, sms_config
from gateway.resources import load_engine, syncer_key
from sync.central import CentralConfig, create_central_app

SECRET = "metrics-sync-secret"
STAFF = "staff-token"


def samples(text: str) -> dict[tuple, float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(url: str) -> tuple[str, dict]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    return text, samples(text)


async def test_metrics_count_what_happened_and_show_no_personal_data(tmp_path, standin, clock):
    port = free_port()
    config = sms_config(tmp_path / "var", standin, gateway__id="desa-1", sync__secret=SECRET,
                        sync__interval_seconds=86400, limits__ussd_sessions_per_hour=2,
                        central__url=f"http://127.0.0.1:{port}")
    central = CentralConfig(data_dir=tmp_path / "central", staff_token=STAFF, forms=load_engine(config).forms("en"),
                            gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"})
    async with served(create_central_app(central), port) as central_url:
        gateway = await Gateway(config, clock).start()
        try:
            await _walk(gateway, standin, central_url)
        finally:
            await gateway.stop()


async def _walk(gateway, standin, central_url):
    syncer = gateway.app[syncer_key]

    end = (await gateway.dial("s-report", "1", "1", "Dusun Kidul", "Jalan berlubang", "1"))[-1]
    ref = re.search(r"Kode: (\w+)\.", end).group(1)
    await gateway.hop("s-report", "1*1*Dusun Kidul*Jalan berlubang*1")  # a retry: answered again, counted apart
    await gateway.dial("s-left", "1")  # left on the category menu
    refused = await gateway.hop("s-third", "")  # the third session within the hour
    assert refused.startswith("END ")
    await eventually(lambda: standin.accepted)
    status, body, _ = await gateway.post("/sms/africastalking/delivery", {
        "id": standin.accepted[0]["id"], "status": "Success", "phoneNumber": PHONE, "networkCode": "51010",
        "retryCount": "0"})
    assert (status, body) == (200, "OK")
    summary = await syncer.round()
    assert summary.accepted == 1
    async with aiohttp.ClientSession() as http, http.patch(
            f"{central_url}/api/v1/submissions/{ref}", json={"status": "in_progress", "note": "Tim berangkat"},
            headers={"Authorization": f"Bearer {STAFF}"}) as response:
        assert response.status == 200, await response.text()
    gateway.advance(minutes=6)  # past ussd.resume_minutes: the session left on the menu is dropped

    async def delivered():
        return value((await scrape(gateway.url))[1], "kentongan_sms_total", result="delivered") == 1

    await eventually(delivered)
    text, seen = await scrape(gateway.url)
    assert value(seen, "kentongan_hop_seconds_count", kind="menu", channel="ussd") == 4  # main, category; twice
    assert value(seen, "kentongan_hop_seconds_count", kind="input", channel="ussd") == 2
    assert value(seen, "kentongan_hop_seconds_count", kind="confirm", channel="ussd") == 1
    assert value(seen, "kentongan_hop_seconds_count", kind="end", channel="ussd") == 1
    assert value(seen, "kentongan_hop_seconds_count", kind="refused", channel="ussd") == 1
    assert value(seen, "kentongan_hop_seconds_count", kind="repeat", channel="ussd") == 1
    assert {outcome: value(seen, "kentongan_sessions_total", outcome=outcome)
            for outcome in ("started", "completed", "dropped")} == {"started": 2, "completed": 1, "dropped": 1}
    assert value(seen, "kentongan_submissions_total", service="report", channel="ussd") == 1
    assert value(seen, "kentongan_sms_total", result="sent") == 1
    assert value(seen, "kentongan_outbox_messages", state="delivered") == 1
    assert value(seen, "kentongan_outbox_messages", state="queued") == 0
    assert value(seen, "kentongan_sync_items_total", result="accepted") == 1
    assert value(seen, "kentongan_sync_lag_seconds") == 0
    assert value(seen, "kentongan_sync_last_success_timestamp_seconds") > 0
    assert value(seen, "kentongan_rate_limited_total", limit="ussd_sessions") == 1
    assert value(seen, "kentongan_rate_limited_total", limit="sms") == 0
    _no_personal_data(text, ref)

    text, seen = await scrape(central_url)
    assert value(seen, "kentongan_central_ingested_total", result="accepted") == 1
    assert value(seen, "kentongan_central_staff_changes_total", status="in_progress") == 1
    assert value(seen, "kentongan_central_staff_changes_total", status="resolved") == 0
    assert value(seen, "kentongan_central_requests_open") == 1
    assert value(seen, "kentongan_central_rate_limited_total", door="sync") == 0
    _no_personal_data(text, ref)


def _no_personal_data(text: str, ref: str) -> None:
    digits = PHONE.lstrip("+")
    assert ref not in text
    assert not any(digits[at:at + 6] in text for at in range(len(digits) - 5))
    assert "Dusun" not in text and "Jalan" not in text


async def test_metrics_count_pending_sync_as_lag(gateway):
    await gateway.dial("s", "1", "1", "Dusun Kidul", "Jalan berlubang", "1")
    gateway.advance(minutes=10)  # no central backend: the report waits
    _, seen = await scrape(gateway.url)
    assert value(seen, "kentongan_sync_lag_seconds") >= 600
    assert value(seen, "kentongan_sync_last_success_timestamp_seconds") == 0


def test_metrics_each_refusal_of_a_limiter_moves_its_counter_as_it_happens():
    from prometheus_client.parser import text_string_to_metric_families

    from gateway.metrics import GatewayMetrics
    from sync.central.metrics import CentralMetrics
    from sync.limits import RateLimiter

    wrong_keys, sync = RateLimiter("wrong keys", 1, 60), RateLimiter("sync", 2, 60)
    gateway, central = GatewayMetrics(wrong_keys), CentralMetrics({"sync": sync})
    for _ in range(3):
        wrong_keys.hit("192.0.2.1")
        sync.hit("192.0.2.1")

    def counted(registry, name, **labels):
        text = generate_latest(registry).decode()
        return next(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                    if sample.name == name and sample.labels == labels)

    assert counted(gateway.registry, "kentongan_rate_limited_total", limit="wrong_callback_keys") == 2
    assert counted(central.registry, "kentongan_central_rate_limited_total", door="sync") == 1
