"""The central backend's Prometheus metrics: `GET /metrics`, in the text format, with no sign-in and no personal
data.

Labels are words from short, fixed lists (an ingest result, a status, a
door): never a reference, a phone, a gateway or a village. The app has a
registry of its own, so a gateway and its embedded central backend in one
process never mix their counts. Ingest results and staff changes are
counted where they happen (`ingested`, `staff_changed`); the refusals of the
rate limits are counted in memory by the limiters, and moved into counters
as every response leaves; the requests still open are read from the store
at scrape time. With `central serve --workers N`, PROMETHEUS_MULTIPROC_DIR
is set and the counters of every worker are kept in files there and summed
at scrape, so any worker answers for all of them.
"""

from __future__ import annotations

import os
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..protocol import STATUSES
from .keys import central_store_key

CLOSED = frozenset({"resolved", "rejected"})
"""Statuses a request leaves the queue with; every other one is still open."""
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


class CentralMetrics:
    """One central app's registry and what it counts; `refusals` gives the rate limits' refusals per door."""

    def __init__(self, refusals: Callable[[], dict[str, int]]) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter("kentongan_central_ingested", "Submissions in gateways' batches, by result",
                                ["result"], registry=registry)
        self.staff_changes = Counter("kentongan_central_staff_changes", "Status changes made by staff (API and "
                                     "office pages), by the status set", ["status"], registry=registry)
        self.limited = Counter("kentongan_central_rate_limited", "Requests refused with 429, by door",
                               ["door"], registry=registry)
        for status in STATUSES:
            self.staff_changes.labels(status)
        self.refusals = refusals
        self.seen: dict[str, int] = {}
        self.help = {metric._name: metric._documentation
                     for metric in (self.ingested, self.staff_changes, self.limited)}
        self.catch_up()

    def catch_up(self) -> None:
        """Move the refusal counters on by what the limiters refused since the last look."""
        for door, count in self.refusals().items():
            new = count - self.seen.get(door, 0)
            if new > 0 or door not in self.seen:
                self.limited.labels(door).inc(max(0, new))
                self.seen[door] = count

    def exposition(self, open_requests: int) -> bytes:
        path = os.environ.get(MULTIPROCESS)
        if path:
            from prometheus_client.multiprocess import MultiProcessCollector

            families = [family for family in MultiProcessCollector(None, path).collect()
                        if family.name.startswith("kentongan_central_")]
            for family in families:  # the files keep no help text
                family.documentation = self.help.get(family.name, family.documentation)
        else:
            families = list(self.registry.collect())
        families.append(GaugeMetricFamily("kentongan_central_requests_open", "Requests not yet resolved or "
                                          "rejected", value=open_requests))
        return generate_latest(_Families(families))


class _Families:
    """Families already gathered, in the shape `generate_latest` reads."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return self.families


metrics_key = web.AppKey("central_metrics", CentralMetrics)


def setup_metrics(app: web.Application, refusals: Callable[[], dict[str, int]]) -> None:
    """Give `app` its metrics and `GET /metrics`."""
    app[metrics_key] = CentralMetrics(refusals)
    app.on_response_prepare.append(_catch_up)
    app.router.add_get("/metrics", metrics_page)


async def _catch_up(request: web.Request, response: web.StreamResponse) -> None:
    request.app[metrics_key].catch_up()


def ingested(app: web.Application, results: list[dict]) -> None:
    """Count a batch's per-item results (accepted, duplicate, held, rejected...)."""
    for item in results:
        app[metrics_key].ingested.labels(item["result"]).inc()


def staff_changed(app: web.Application, status: str, count: int = 1) -> None:
    """Count `count` requests a staff member set to `status`."""
    if count:
        app[metrics_key].staff_changes.labels(status).inc(count)


def _open_requests(store) -> int:
    still = [status for status in STATUSES if status not in CLOSED]
    return store.db.execute(f"SELECT count(*) FROM submissions WHERE status IN ({', '.join('?' * len(still))})",
                            still).fetchone()[0]


async def metrics_page(request: web.Request) -> web.Response:
    """The Prometheus text format, after one read of the store for the requests still open."""
    metrics = request.app[metrics_key]
    metrics.catch_up()
    open_requests = await request.app[central_store_key].read(_open_requests)
    return web.Response(body=metrics.exposition(open_requests), headers={"Content-Type": CONTENT_TYPE_LATEST})
