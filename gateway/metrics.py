"""The gateway's Prometheus metrics: `GET /metrics`, in the text format, with no sign-in and no personal data.

Every label is a word from a short, fixed list (a screen kind, a service, a
channel, an outbox state, a result, a limit's name): never a phone, a
reference, a name or a village. Each app has a registry of its own, so that
several apps in one process (the tests, `serve` with its embedded central
backend) never mix their counts.

Two kinds of figures, so that `serve --workers N` (each worker answering
`/metrics` for all of them) counts everything once:

- What a process sees happen is counted by it, in counters: a hop's latency
  by the kind of screen it answers with (`Answer`, returned by
  `ussd.ussd_turn`; a retried hop answered again from the stored session is
  `repeat`), the sessions it starts and ends, the SMS its sender handed to
  the provider, the items its sync rounds pushed, the requests its rate
  limits refused (since the process started). With workers, `serve` sets
  PROMETHEUS_MULTIPROC_DIR and prometheus-client keeps these in files there,
  one per process, summed at scrape (those of a dead worker too).
- What the store knows is read at scrape time, in one transaction of the
  store: submissions by service and channel (every channel submits through
  the store), SMS that reached a final state (delivered, failed, expired),
  sessions dropped (not ended, idle past `ussd.resume_minutes`: each network
  session once, so a dropped dial that was later resumed counts as dropped
  and its resumption as a new start), outbox messages by state, the sync
  lag and the last sync that worked, submissions held by the daily limit.
  The counted ones are totals kept in the store's meta table: a scrape
  counts the half-open window of store time since the last scrape (by any
  worker, on any machine), adds it to the totals and moves the marks on, in
  the same transaction, under a row lock; so each window is counted by
  exactly one scrape, and every worker and machine answers the same totals
  (aggregate them with `max`, not `sum`). On a shared store the window ends
  SHARED_SETTLE before now, so that a hop still committing in another
  process is not left behind the marks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import AsyncIterator, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from flows import Engine
from flows.engine import RESUME
from sync.limits import RateLimiter
from sync.store import Store

from .resources import config_key, limits_key, store_key

HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; the network gives a hop 10-15 s, and a good one takes a few milliseconds."""
FINAL_SMS = {"delivered": "delivered", "failed": "failed", "dead": "failed", "expired": "expired"}
"""Outbox states an SMS ends in, and the result it counts as: given up after its attempts is failed too."""
SYNC_RESULTS = ("accepted", "duplicate", "rejected")
PROCESS_LIMITS = ("ussd_sessions", "sms", "wrong_callback_keys")
"""Rate limits counted in memory by each process (the daily limit on submissions is counted in the store)."""
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client keeps every worker's counters, when `serve --workers N` set it."""
COUNTED = "metrics_counted"
"""Meta key of the store's counted figures: their totals, and the marks where the next window starts."""
SCRAPE_LOCK = "metrics_scrape"
"""Meta key written first by every scrape: its row lock lets one scrape at a time count a window."""
SHARED_SETTLE = dt.timedelta(seconds=10)
"""How far behind now a window ends on a shared store: a hop's transaction takes milliseconds, so any
commit stamped before the window's end has landed by the time it is counted."""


class Answer(str):
    """A hop's answer (`CON ...`/`END ...`) with what the metrics count of it: the kind of screen it shows,
    whether the hop began a session and whether it ended one."""

    kind: str
    started: bool
    ended: bool

    def __new__(cls, body: str, kind: str, *, started: bool = False, ended: bool = False) -> Answer:
        answer = super().__new__(cls, body)
        answer.kind, answer.started, answer.ended = kind, started, ended
        return answer


def screen_kind(engine: Engine, session: dict) -> str:
    """The kind of the screen `session` shows (menu, input, confirm, view, notice, end); the resume offer is a
    menu."""
    if session["flow"] == RESUME:
        return "menu"
    return engine.flows[session["flow"]].screens[session["screen"]].kind


class GatewayMetrics:
    """One app's registry: what this process counts, and how a scrape adds what the store knows."""

    def __init__(self, wrong_keys: RateLimiter) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.hops = Histogram("kentongan_hop_seconds", "Seconds from a USSD hop's arrival to its answer, by the "
                              "kind of screen answered", ["kind", "channel"], buckets=HOP_BUCKETS, registry=registry)
        self.sessions = Counter("kentongan_sessions", "USSD sessions started, completed (ended with END) and "
                                "dropped (idle past the resume window without ending)", ["outcome"],
                                registry=registry)
        self.sms = Counter("kentongan_sms", "SMS taken by the provider (sent), and SMS that ended delivered, "
                           "failed (by a delivery report or after their attempts) or expired", ["result"],
                           registry=registry)
        self.sync = Counter("kentongan_sync_items", "Submissions pushed by sync rounds, by the central backend's "
                            "answer", ["result"], registry=registry)
        self.limited = Counter("kentongan_rate_limited", "Requests refused or held by a rate limit, by limit "
                               "(submissions_per_day is the store's count; the others since each process started)",
                               ["limit"], registry=registry)
        for outcome in ("started", "completed"):
            self.sessions.labels(outcome)
        self.sms.labels("sent")
        for result in SYNC_RESULTS:
            self.sync.labels(result)
        for limit in PROCESS_LIMITS:
            self.limited.labels(limit)
        self.count_refusals(wrong_keys, "wrong_callback_keys")
        self.help = {metric._name: metric._documentation
                     for metric in (self.hops, self.sessions, self.sms, self.sync, self.limited)}
        self.settle = dt.timedelta(0)

    def observe(self, answer: str, seconds: float) -> None:
        """Count one answered hop."""
        kind = answer.kind if isinstance(answer, Answer) else "repeat"
        self.hops.labels(kind, "ussd").observe(seconds)
        if isinstance(answer, Answer) and answer.started:
            self.sessions.labels("started").inc()
        if isinstance(answer, Answer) and answer.ended:
            self.sessions.labels("completed").inc()

    def sms_sent(self) -> None:
        """The provider took one SMS (the sender's `on_accepted`)."""
        self.sms.labels("sent").inc()

    def sync_round(self, summary) -> None:
        """Count the items of one sync round (the syncer's `on_round`)."""
        for result in SYNC_RESULTS:
            if getattr(summary, result):
                self.sync.labels(result).inc(getattr(summary, result))

    def count_refusals(self, limiter: RateLimiter, limit: str) -> None:
        """Count each refusal of `limiter` as it happens, under `limit`: another worker's scrape sees it at once."""
        limiter.on_refused = self.limited.labels(limit).inc

    def exposition(self, read: dict) -> bytes:
        """The text format: this process's counters (all workers' with PROMETHEUS_MULTIPROC_DIR set) merged with
        the store's figures in `read` (from `read_store`)."""
        path = os.environ.get(MULTIPROCESS)
        if path:
            from prometheus_client.multiprocess import MultiProcessCollector

            counted = [family for family in MultiProcessCollector(None, path).collect()
                       if not family.name.startswith("kentongan_central_")]
            for family in counted:  # the files keep no help text
                family.documentation = self.help.get(family.name, family.documentation)
        else:
            counted = list(self.registry.collect())
        return generate_latest(_Families(merged(counted, store_families(read))))


def store_families(read: dict) -> list[Metric]:
    """The store's figures as metric families; counted ones share their family with this process's counters."""
    submissions = CounterMetricFamily("kentongan_submissions", "Submissions stored, by service and channel",
                                      labels=["service", "channel"])
    for (service, channel), count in sorted(read["submissions"].items()):
        submissions.add_metric([service, channel], count)
    sms = CounterMetricFamily("kentongan_sms", "", labels=["result"])
    for result in ("delivered", "failed", "expired"):
        sms.add_metric([result], read["final_sms"].get(result, 0))
    sessions = CounterMetricFamily("kentongan_sessions", "", labels=["outcome"])
    sessions.add_metric(["dropped"], read["dropped"])
    limited = CounterMetricFamily("kentongan_rate_limited", "", labels=["limit"])
    limited.add_metric(["submissions_per_day"], read["held_submissions"])
    outbox = GaugeMetricFamily("kentongan_outbox_messages", "SMS in the outbox, by state", labels=["state"])
    for state, count in read["outbox"].items():
        outbox.add_metric([state], count)
    lag = GaugeMetricFamily("kentongan_sync_lag_seconds", "Age of the oldest submission waiting to sync "
                            "(0 when none waits)", value=read["lag"])
    success = GaugeMetricFamily("kentongan_sync_last_success_timestamp_seconds", "When a sync round last "
                                "worked (Unix time; 0 never)", value=read["last_success"])
    return [submissions, sms, sessions, limited, outbox, lag, success]


def merged(counted: Iterable[Metric], more: Iterable[Metric]) -> list[Metric]:
    """`counted` with the samples of each family of `more` added to the family of the same name (one family per
    name, as the text format requires), or added as a family of its own."""
    families = {family.name: family for family in counted}
    for family in more:
        if family.name in families:
            families[family.name].samples.extend(family.samples)
        else:
            families[family.name] = family
    return list(families.values())


class _Families:
    """Families already gathered, in the shape `generate_latest` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return self.families


def read_store(store: Store, resume_window: dt.timedelta, settle: dt.timedelta = dt.timedelta(0)) -> dict:
    """In the store's thread: the store's figures; the counted ones are totals, moved on by the window since the
    stored marks, in one transaction (see the module's docstring)."""
    now = store.clock()
    with store.transaction():
        counted = _counted_locked(store, now, resume_window)
        marks = counted["marks"]
        # Marks never go back: a machine whose clock is behind counts an empty window, never one twice.
        until = max(store.stamp(now - settle), marks["submissions"])
        cut = max(store.stamp(now - settle - resume_window), marks["dropped"])
        figures = store.figures_between(marks, until, cut, tuple(FINAL_SMS))
        for (service, channel), count in figures["submissions"].items():
            key = f"{service}|{channel}"
            counted["submissions"][key] = counted["submissions"].get(key, 0) + count
        for state, count in figures["final_sms"].items():
            counted["sms"][FINAL_SMS[state]] = counted["sms"].get(FINAL_SMS[state], 0) + count
        counted["dropped"] += figures["dropped"]
        counted["marks"] = {"submissions": until, "sms": until, "dropped": cut}
        store.set_meta(**{COUNTED: json.dumps(counted, sort_keys=True)})
        success = store.meta("sync_last_success")
        held = int(store.meta("held_submissions") or 0)
        outbox = store.outbox.counts()
    oldest = figures["oldest_pending"]
    return {"submissions": {tuple(key.split("|", 1)): count for key, count in counted["submissions"].items()},
            "final_sms": counted["sms"], "dropped": counted["dropped"], "outbox": outbox,
            "lag": (now - dt.datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0,
            "last_success": dt.datetime.fromisoformat(success).timestamp() if success else 0.0,
            "held_submissions": held}


def start_counting(store: Store, resume_window: dt.timedelta) -> None:
    """Before the first scrape of a new store: count from now. A store counted before keeps its totals and marks,
    so what happened between the last scrape and a restart is counted at the next one."""
    with store.transaction():
        _counted_locked(store, store.clock(), resume_window)


def _counted_locked(store: Store, now: dt.datetime, resume_window: dt.timedelta) -> dict:
    """The counted figures, read after taking the scrape lock (written first, so that on PostgreSQL a second
    scrape waits here for the first to commit, then reads what it wrote); fresh ones from `now` if none."""
    store.set_meta(**{SCRAPE_LOCK: store.stamp(now)})
    stored = store.meta(COUNTED)
    if stored:
        return json.loads(stored)
    counted = {"marks": {"submissions": store.stamp(now), "sms": store.stamp(now),
                         "dropped": store.stamp(now - resume_window)},
               "submissions": {}, "sms": {}, "dropped": 0}
    store.set_meta(**{COUNTED: json.dumps(counted, sort_keys=True)})
    return counted


metrics_key = web.AppKey("metrics", GatewayMetrics)


def setup_metrics(app: web.Application, wrong_keys: RateLimiter) -> None:
    """Give `app` its metrics and `GET /metrics`; counting starts once the store is open. `wrong_keys` is the
    limiter of wrong callback keys."""
    app[metrics_key] = GatewayMetrics(wrong_keys)
    app.cleanup_ctx.append(_counting_context)
    app.router.add_get("/metrics", metrics_page)


async def _counting_context(app: web.Application) -> AsyncIterator[None]:
    if app[config_key]["gateway.database_url"]:
        app[metrics_key].settle = SHARED_SETTLE
    await app[store_key].call(start_counting, _resume_window(app))
    limits = app[limits_key]  # made with the store
    app[metrics_key].count_refusals(limits.ussd_sessions, "ussd_sessions")
    app[metrics_key].count_refusals(limits.sms, "sms")
    yield


def _resume_window(app: web.Application) -> dt.timedelta:
    return dt.timedelta(minutes=app[config_key]["ussd.resume_minutes"])


async def metrics_page(request: web.Request) -> web.Response:
    """The Prometheus text format, after one transaction of the store for what the store knows."""
    app = request.app
    metrics = app[metrics_key]
    read = await app[store_key].call(read_store, _resume_window(app), metrics.settle)
    return web.Response(body=metrics.exposition(read), headers={"Content-Type": CONTENT_TYPE_LATEST})
