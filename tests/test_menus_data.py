"""Flows are data: a category added to menus/report.yaml and the catalogs works by USSD, SMS and Open311.

No Python changes: the test copies the shipped menus and catalogs to a
temporary folder, adds a sixth problem category there, and points a real
gateway and a real central backend at the copy.
"""

import json
import re
import shutil

import aiohttp

from conftest import PHONE, Gateway, make_config, served
from gateway.central import central_config
from gateway.config import data_root
from gateway.resources import engine_key, store_key
from sync.central import create_central_app

BRIDGE = {  # lang: (menu label, SMS word)
    "id": ("Jembatan rusak", "JEMBATAN"),
    "en": ("Broken bridge", "BRIDGE"),
    "sw": ("Daraja bovu", "DARAJA"),
}


def menus_with_a_bridge(folder):
    shutil.copytree(data_root() / "menus", folder / "menus")
    shutil.copytree(data_root() / "locale", folder / "locale", ignore=shutil.ignore_patterns("*.mo"))
    report = folder / "menus" / "report.yaml"
    text = report.read_text()
    water = "      - {label: report.category.water, value: water, sms_word: sms.category.water}\n"
    assert water in text
    report.write_text(text.replace(water, water + "      - {label: report.category.bridge, value: bridge, "
                                                   "sms_word: sms.category.bridge}\n"))
    for lang, (label, word) in BRIDGE.items():
        with open(folder / "locale" / lang / "LC_MESSAGES" / "messages.po", "a") as po:
            po.write(f'\nmsgid "report.category.bridge"\nmsgstr "{label}"\n'
                     f'\nmsgid "sms.category.bridge"\nmsgstr "{word}"\n')


async def test_menus_data_new_category_works_by_ussd_sms_and_open311(tmp_path):
    menus_with_a_bridge(tmp_path)
    config = make_config(tmp_path / "var", ussd__menus_dir=str(tmp_path / "menus"),
                         language__locale_dir=str(tmp_path / "locale"), central__open311_api_key="k")
    gw = await Gateway(config).start()
    try:
        # USSD: the new category is on the screen, before "other", and makes a submission.
        screens = await gw.dial("s", "1", "5", "Sungai Kidul", "Jembatan kayu patah", "1")
        assert "5. Jembatan rusak\n6. Lainnya" in screens[1]
        ref = re.search(r"Kode: (\w+)\.", screens[-1]).group(1)
        by_ussd = await gw.app[store_key].call(lambda store: store.submission(ref))
        assert by_ussd["answers"]["category"] == "bridge"

        # SMS: its word, in every language, picks it.
        for n, (lang, (_, word)) in enumerate(BRIDGE.items()):
            keyword = gw.app[engine_key].catalog.text(lang, "sms.keyword.report")
            status, _, _ = await gw.post("/sms/africastalking/inbound", {
                "from": PHONE, "to": "21525", "text": f"{keyword} {word.lower()} Sungai Kidul: papan lepas", "id": f"m{n}"})
            assert status == 200
        found = await gw.app[store_key].call(lambda store: [
            r for r in store.outbox.messages(PHONE) if r["kind"] == "confirmation"])
        refs = [re.search(r"\b(K\w{5})\b", row["body"]).group(1) for row in found[1:]]
        categories = await gw.app[store_key].call(
            lambda store: [store.submission(r)["answers"]["category"] for r in refs])
        assert categories == ["bridge"] * 3

        # Open311: the service lists it, and a request in it is accepted.
        central = create_central_app(central_config(config, gw.app[engine_key]))
        async with served(central) as url, aiohttp.ClientSession() as http:
            base = f"{url}/open311/v2"
            async with http.get(f"{base}/services/report.json") as response:
                definition = await response.json()
            category = next(a for a in definition["attributes"] if a["code"] == "category")
            assert {"key": "bridge", "name": "Broken bridge"} in category["values"]
            form = {"api_key": "k", "service_code": "report", "address_string": "Sungai Kidul",
                    "description": "Jembatan kayu patah", "attribute[category]": "bridge"}
            async with http.post(f"{base}/requests.json", data=form) as response:
                assert response.status == 200, await response.text()
                made = json.loads(await response.text())
            assert made[0]["service_request_id"].startswith("Z")
    finally:
        await gw.stop()
