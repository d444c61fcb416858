"""Retention in a running gateway: what villagers told is erased once it is at the centre and old enough."""


import pytest

from conftest import PHONE, Gateway, MovableClock, eventually, make_config
from gateway.resources import store_key


pytestmark = pytest.mark.backends


async def test_retention_serve_erases_acknowledged_submissions_past_the_retention(tmp_path, backend):
    clock = MovableClock()
    config = make_config(tmp_path / "var", privacy__retention_days=30, **backend)
    gw = await Gateway(config, clock).start()
    try:
        screens = await gw.dial("s", "1", "1", "Gang Melati Tujuh Belas", "Jalan berlubang", "1")
        assert screens[-1].startswith("END ")
        store = gw.app[store_key]
        [row] = await store.call(lambda s: s.recent_submissions(PHONE, 1))
        ref = row["ref"]
        made = await store.call(lambda s: s.submission(ref))
        await store.call(lambda s: s.mark_synced([{"id": made["id"], "result": "accepted"}]))
    finally:
        await gw.stop()

    clock.advance(days=31)
    gw = await Gateway(config, clock).start()  # housekeeping runs as serve starts, then hourly
    try:
        store = gw.app[store_key]

        async def erased():
            return (await store.call(lambda s: s.submission(ref)))["answers"] == {}

        await eventually(erased)
        kept = await store.call(lambda s: s.submission(ref))
        assert (kept["service"], kept["status"], kept["phone"]) == ("report", "received", "")
        status = await gw.dial("t", "4", "2", ref)
        assert f"{ref} Laporan masalah: Diterima" in status[-1]  # the villager can still ask
    finally:
        await gw.stop()
