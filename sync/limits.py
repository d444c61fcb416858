"""Rate limits: at most so many events per key per window, counted in memory, with bounded memory.

One `RateLimiter` per kind of event (new USSD sessions per phone, sign-ins
per address, ...). Keys are whatever identifies the sender: callers pass a
keyed digest or a masked value, never a clear phone number, because keys
live in memory only but may be shown in a debugger or a crash dump.

Windows are fixed (they start at a key's first event), which is cheap and
good enough against floods; a key's count is forgotten when its window
ends. At most `max_keys` keys are remembered: past that the oldest window
is dropped, so a spray of distinct keys costs bounded memory (and is let
through, which the per-address and per-account limits around it catch).
The counts restart with the process: a limit protects a running server,
it is not a quota.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple


class Verdict(NamedTuple):
    """What one event may do: `allowed`; when refused, whether this is the key's `first_refusal` in its
    window (tell the sender once, then stay silent) and the seconds until the window ends."""

    allowed: bool
    first_refusal: bool = False
    retry_after: float = 0.0


@dataclass
class _Window:
    started: float
    count: int = 0
    refused: int = 0


class RateLimiter:
    """At most `limit` events per key per `window` seconds; `limit` 0 turns the limit off."""

    def __init__(self, name: str, limit: int, window: float, *, max_keys: int = 50_000,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.limit, self.window, self.max_keys, self.clock = name, limit, window, max_keys, clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self.refused = 0
        """Events refused since the start, for `status` and the metrics."""
        self.on_refused: Callable[[], None] | None = None
        """Called at each refusal (a metrics counter's `inc`), in the thread that counted it."""

    def hit(self, key: str) -> Verdict:
        """Count one event of `key` and say whether it may go ahead."""
        if self.limit <= 0:
            return Verdict(True)
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window:
            self._windows.pop(key, None)
            window = self._windows[key] = _Window(now)
            self._forget_oldest(now)
        window.count += 1
        if window.count <= self.limit:
            return Verdict(True)
        window.refused += 1
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        return Verdict(False, window.refused == 1, max(0.0, window.started + self.window - now))

    def peek(self, key: str) -> Verdict:
        """Whether an event of `key` would go ahead now, without counting one."""
        window = self._windows.get(key)
        if self.limit <= 0 or window is None or self.clock() - window.started >= self.window \
                or window.count < self.limit:
            return Verdict(True)
        return Verdict(False, False, max(0.0, window.started + self.window - self.clock()))

    def forget(self, key: str) -> None:
        """Start `key` afresh (a successful sign-in clears its failures)."""
        self._windows.pop(key, None)

    def _forget_oldest(self, now: float) -> None:
        # Windows are kept in the order they started: the oldest are at the front.
        while self._windows:
            key, oldest = next(iter(self._windows.items()))
            if now - oldest.started < self.window and len(self._windows) <= self.max_keys:
                break
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)
