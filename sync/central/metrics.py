"""The central backend's Prometheus metrics: `GET /metrics`, in the text format, with no sign-in and no personal
data.

Labels are words from short, fixed lists (an ingest result, a status, a
door): never a reference, a phone, a gateway or a village. The app has a
registry of its own, so a gateway and its embedded central backend in one
process never mix their counts. Ingest results and staff changes are
counted where they happen (`ingested`, `staff_changed`), and so is each
refusal of a rate limit (the limiter's `on_refused`); the requests still open are read from the store
at scrape time. With `central serve --workers N`, PROMETHEUS_MULTIPROC_DIR
is set and the counters of every worker are kept in files there and summed
at scrape, so any worker answers for all of them.
"""

from __future__ import annotations

import os
from typing import Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..limits import RateLimiter
from ..protocol import STATUSES
from .keys import central_store_key

CLOSED = frozenset({"resolved", "rejected"})
"""Statuses a request leaves the queue with; every other one is still open."""
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


class CentralMetrics:
    """One central app's registry and what it counts; `doors` are the rate limiters whose refusals it counts,
    by door."""

    def __init__(self, doors: Mapping[str, RateLimiter]) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter("kentongan_central_ingested", "Submissions in gateways' batches, by result",
                                ["result"], registry=registry)
        self.staff_changes = Counter("kentongan_central_staff_changes", "Status changes made by staff (API and "
                                     "office pages), by the status set", ["status"], registry=registry)
        self.limited = Counter("kentongan_central_rate_limited", "Requests refused with 429, by door",
                               ["door"], registry=registry)
        for status in STATUSES:
            self.staff_changes.labels(status)
        for door, limiter in doors.items():  # each refusal counted as it happens
            limiter.on_refused = self.limited.labels(door).inc
        self.help = {metric._name: metric._documentation
                     for metric in (self.ingested, self.staff_changes, self.limited)}

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


def setup_metrics(app: web.Application, doors: Mapping[str, RateLimiter]) -> None:
    """Give `app` its metrics and `GET /metrics`; `doors` are the rate limiters, by door."""
    app[metrics_key] = CentralMetrics(doors)
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
    open_requests = await request.app[central_store_key].read(_open_requests)
    return web.Response(body=metrics.exposition(open_requests), headers={"Content-Type": CONTENT_TYPE_LATEST})
