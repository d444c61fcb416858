"""The central backend's Prometheus metrics: `GET /metrics`, in the text format, with no sign-in and no personal
data.

Labels are words from short, fixed lists (an ingest result, a status, a
door): never a reference, a phone, a gateway or a village. The app has a
registry of its own, so a gateway and its embedded central backend in one
process never mix their counts. Ingest results and staff changes are
counted where they happen (`ingested`, `staff_changed`); the refusals of the
rate limits are read from the limiters the app holds, and the requests still
open from the store, at scrape time.
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

from ..protocol import STATUSES
from .keys import central_store_key

CLOSED = frozenset({"resolved", "rejected"})
"""Statuses a request leaves the queue with; every other one is still open."""


class CentralMetrics:
    """One central app's registry and what it counts; `refusals` gives the rate limits' refusals per door."""

    def __init__(self, refusals: Callable[[], dict[str, int]]) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter("kentongan_central_ingested", "Submissions in gateways' batches, by result",
                                ["result"], registry=registry)
        self.staff_changes = Counter("kentongan_central_staff_changes", "Status changes made by staff (API and "
                                     "office pages), by the status set", ["status"], registry=registry)
        self.open = Gauge("kentongan_central_requests_open", "Requests not yet resolved or rejected",
                          registry=registry)
        for status in STATUSES:
            self.staff_changes.labels(status)
        registry.register(_Refusals(refusals))


class _Refusals:
    def __init__(self, refusals: Callable[[], dict[str, int]]) -> None:
        self.refusals = refusals

    def collect(self):
        family = CounterMetricFamily("kentongan_central_rate_limited", "Requests refused with 429, by door",
                                     labels=["door"])
        for door, count in self.refusals().items():
            family.add_metric([door], count)
        yield family


metrics_key = web.AppKey("central_metrics", CentralMetrics)


def setup_metrics(app: web.Application, refusals: Callable[[], dict[str, int]]) -> None:
    """Give `app` its metrics and `GET /metrics`."""
    app[metrics_key] = CentralMetrics(refusals)
    app.router.add_get("/metrics", metrics_page)


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
    metrics.open.set(await request.app[central_store_key].read(_open_requests))
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
