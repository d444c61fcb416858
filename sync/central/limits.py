"""Rate limits at the central backend's open doors: Open311 POST and the sync API, per source address.

A request past its address's limit is answered 429 with a reason and
`Retry-After` before anything else happens: its body is not read, no key or
signature is looked at, the store is not touched. The first refusal of an
address in its window is one WARNING line; the others are only counted, so a
flood cannot fill the log. `/healthz` shows the counts.

The address is `request.remote`: behind a reverse proxy every client has the
proxy's address, and the limits must then be set for all of them together (or
turned off, 0, and enforced at the proxy).
"""

from __future__ import annotations

import logging
import math
from typing import Awaitable, Callable

from aiohttp import web

from ..limits import RateLimiter
from ..protocol import BATCH_PATH, UPDATES_PATH
from .config import CentralConfig

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN311_POST = "/open311/v2/requests.json"
SYNC_PATHS = (BATCH_PATH, UPDATES_PATH)


class RateLimits:
    """The middleware: one limiter per door, keyed by the source address."""

    __middleware_version__ = 1
    """What `web.middleware` would mark: a new-style middleware, called with (request, handler)."""

    def __init__(self, config: CentralConfig):
        self.open311 = RateLimiter("open311 posts", config.open311_posts_per_minute, 60)
        self.sync = RateLimiter("sync", config.sync_per_minute, 60)

    def counts(self) -> dict[str, int]:
        """Requests refused since the start, per door."""
        return {"open311_posts": self.open311.refused, "sync": self.sync.refused}

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        limiter = self._limiter(request)
        if limiter is not None:
            address = request.remote or "unknown"
            verdict = limiter.hit(address)
            if not verdict.allowed:
                raise self._refusal(request, limiter, address, verdict.retry_after, verdict.first_refusal)
        return await handler(request)

    def _limiter(self, request: web.Request) -> RateLimiter | None:
        if request.path in SYNC_PATHS:
            return self.sync
        if request.method == "POST" and request.path == OPEN311_POST:
            return self.open311
        return None

    @staticmethod
    def _refusal(request: web.Request, limiter: RateLimiter, address: str, retry_after: float,
                 first: bool) -> web.HTTPTooManyRequests:
        seconds = max(1, math.ceil(retry_after))
        if first:
            log.warning("%s: more than %d %s requests from %s within %d s; refused with 429 for %d s",
                        request.path, limiter.limit, limiter.name, address, limiter.window, seconds)
        response = web.HTTPTooManyRequests(
            text=f"too many {limiter.name} requests from this address (at most {limiter.limit} a minute); "
                 f"retry in {seconds} s", headers={"Retry-After": str(seconds)})
        response.force_close()  # the body is never read: the connection goes with the answer
        return response
