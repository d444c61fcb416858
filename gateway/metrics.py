"""The gateway's Prometheus metrics: `GET /metrics`, in the text format, with no sign-in and no personal data.

Every label is a word from a short, fixed list (a screen kind, a service, a
channel, an outbox state, a result, a limit's name): never a phone, a
reference, a name or a village. Each app has a registry of its own, so that
several apps in one process (the tests, `serve` with its embedded central
backend) never mix their counts.

What the hop counts itself: its latency by the kind of screen it answers
with (`Answer`, returned by `ussd.ussd_turn`; a retried hop answered again
from the stored session is `repeat`), and the sessions it starts and ends.
What the store knows is read at scrape time in one call of the store's
thread, counting only what changed since the previous scrape (half-open
windows of store time, so nothing is counted twice): submissions by service
and channel (every channel submits through the store), outbox messages by
state, SMS that reached a final state (delivered, failed, expired), sessions
dropped (not ended, idle past `ussd.resume_minutes`: each network session
once, so a dropped dial that was later resumed counts as dropped and its
resumption as a new start), the sync lag and the last sync that worked.
The rest is read from what the app holds: SMS the provider took (the
sender), items the sync rounds pushed (the syncer), and requests the rate
limits refused (`Limits`, persisted across restarts, and the wrong callback
keys).
"""

from __future__ import annotations

import datetime as dt
from typing import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from flows import Engine
from flows.engine import RESUME
from sync.limits import RateLimiter
from sync.store import Store

from .resources import config_key, limits_key, sender_key, store_key, syncer_key

HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; the network gives a hop 10-15 s, and a good one takes a few milliseconds."""
FINAL_SMS = {"delivered": "delivered", "failed": "failed", "dead": "failed", "expired": "expired"}
"""Outbox states an SMS ends in, and the result it counts as: given up after its attempts is failed too."""
SYNC_RESULTS = ("accepted", "duplicate", "rejected")


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
    """One app's registry and what it counts."""

    def __init__(self, wrong_keys: RateLimiter) -> None:
        self.wrong_keys = wrong_keys
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.hops = Histogram("kentongan_hop_seconds", "Seconds from a USSD hop's arrival to its answer, by the "
                              "kind of screen answered", ["kind", "channel"], buckets=HOP_BUCKETS, registry=registry)
        self.sessions = Counter("kentongan_sessions", "USSD sessions started, completed (ended with END) and "
                                "dropped (idle past the resume window without ending)", ["outcome"],
                                registry=registry)
        self.submissions = Counter("kentongan_submissions", "Submissions stored, by service and channel",
                                   ["service", "channel"], registry=registry)
        self.outbox = Gauge("kentongan_outbox_messages", "SMS in the outbox, by state", ["state"], registry=registry)
        self.sync_lag = Gauge("kentongan_sync_lag_seconds", "Age of the oldest submission waiting to sync "
                              "(0 when none waits)", registry=registry)
        self.sync_last_success = Gauge("kentongan_sync_last_success_timestamp_seconds", "When a sync round last "
                                       "worked (Unix time; 0 never)", registry=registry)
        for outcome in ("started", "completed", "dropped"):
            self.sessions.labels(outcome)
        self.held = _Held()
        registry.register(self.held)
        self.marks: dict[str, str] = {}

    def observe(self, answer: str, seconds: float) -> None:
        """Count one answered hop."""
        kind = answer.kind if isinstance(answer, Answer) else "repeat"
        self.hops.labels(kind, "ussd").observe(seconds)
        if isinstance(answer, Answer) and answer.started:
            self.sessions.labels("started").inc()
        if isinstance(answer, Answer) and answer.ended:
            self.sessions.labels("completed").inc()

    def apply(self, read: dict) -> None:
        """What `read_store` found: the gauges set, the counters moved on by what is new."""
        for (service, channel), count in read["submissions"].items():
            self.submissions.labels(service, channel).inc(count)
        for state, count in read["outbox"].items():
            self.outbox.labels(state).set(count)
        for state, count in read["final_sms"].items():
            self.held.sms[FINAL_SMS[state]] += count
        self.sessions.labels("dropped").inc(read["dropped"])
        self.sync_lag.set(read["lag"])
        self.sync_last_success.set(read["last_success"])
        self.held.counts = read["limited"]
        self.marks = read["marks"]


class _Held:
    """Counts kept as plain numbers, set at scrape time: SMS by result, sync items, rate-limit refusals."""

    def __init__(self) -> None:
        self.sms = {"sent": 0, "delivered": 0, "failed": 0, "expired": 0}
        self.sync: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def collect(self):
        sms = CounterMetricFamily("kentongan_sms", "SMS taken by the provider (sent), and SMS that ended delivered, "
                                  "failed (by a delivery report or after their attempts) or expired", labels=["result"])
        for result, count in self.sms.items():
            sms.add_metric([result], count)
        yield sms
        sync = CounterMetricFamily("kentongan_sync_items", "Submissions pushed by sync rounds, by the central "
                                   "backend's answer", labels=["result"])
        for result in SYNC_RESULTS:
            sync.add_metric([result], self.sync.get(result, 0))
        yield sync
        limited = CounterMetricFamily("kentongan_rate_limited", "Requests refused or held by a rate limit, by "
                                      "limit (persisted across restarts, except wrong_callback_keys)",
                                      labels=["limit"])
        for limit, count in self.counts.items():
            limited.add_metric([limit], count)
        yield limited


def read_store(store: Store, marks: dict[str, str], resume_window: dt.timedelta) -> dict:
    """In the store's thread: the store's figures, the counted ones only for the window since `marks`."""
    now = store.clock()
    stamp, cut = store.stamp(now), store.stamp(now - resume_window)
    figures = store.figures_between(marks, stamp, cut, tuple(FINAL_SMS))
    success = store.meta("sync_last_success")
    oldest = figures.pop("oldest_pending")
    return {**figures, "outbox": store.outbox.counts(),
            "lag": (now - dt.datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0,
            "last_success": dt.datetime.fromisoformat(success).timestamp() if success else 0.0,
            "held_submissions": int(store.meta("held_submissions") or 0),
            "marks": {"submissions": stamp, "sms": stamp, "dropped": cut}}


def start_marks(store: Store, resume_window: dt.timedelta) -> dict[str, str]:
    """The marks a starting app counts from: now (what happened before the start is not this process's)."""
    now = store.clock()
    return {"submissions": store.stamp(now), "sms": store.stamp(now), "dropped": store.stamp(now - resume_window)}


metrics_key = web.AppKey("metrics", GatewayMetrics)


def setup_metrics(app: web.Application, wrong_keys: RateLimiter) -> None:
    """Give `app` its metrics and `GET /metrics`; the marks are taken once the store is open. `wrong_keys` is
    the limiter of wrong callback keys."""
    app[metrics_key] = GatewayMetrics(wrong_keys)
    app.cleanup_ctx.append(_marks_context)
    app.router.add_get("/metrics", metrics_page)


async def _marks_context(app: web.Application) -> AsyncIterator[None]:
    app[metrics_key].marks = await app[store_key].call(start_marks, _resume_window(app))
    yield


def _resume_window(app: web.Application) -> dt.timedelta:
    return dt.timedelta(minutes=app[config_key]["ussd.resume_minutes"])


async def metrics_page(request: web.Request) -> web.Response:
    """The Prometheus text format, after one call of the store's thread for what the store knows."""
    app = request.app
    metrics = app[metrics_key]
    read = await app[store_key].call(read_store, metrics.marks, _resume_window(app))
    limits = app[limits_key].counts()
    read["limited"] = {"ussd_sessions": limits["refused_ussd_sessions"], "sms": limits["refused_sms"],
                       "submissions_per_day": read.pop("held_submissions"),
                       "wrong_callback_keys": metrics.wrong_keys.refused}
    metrics.apply(read)
    metrics.held.sms["sent"] = app[sender_key].accepted
    syncer = app.get(syncer_key)
    metrics.held.sync = dict(syncer.results) if syncer is not None else {}
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
