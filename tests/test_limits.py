"""The rate limiter every limit is built on: counts per key per window, tells once, forgets, stays bounded."""

from sync.limits import RateLimiter


class Tick:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_limits_allow_up_to_the_limit_then_refuse_telling_once():
    clock = Tick()
    limiter = RateLimiter("sessions", 3, 60, clock=clock)
    assert [limiter.hit("a").allowed for _ in range(3)] == [True, True, True]
    first, second = limiter.hit("a"), limiter.hit("a")
    assert (first.allowed, first.first_refusal, first.retry_after) == (False, True, 60)
    assert (second.allowed, second.first_refusal) == (False, False)
    assert limiter.hit("b").allowed and limiter.refused == 2


def test_limits_a_new_window_starts_afresh():
    clock = Tick()
    limiter = RateLimiter("sessions", 1, 60, clock=clock)
    assert limiter.hit("a").allowed and not limiter.hit("a").allowed
    clock.now = 59.5
    assert limiter.peek("a").retry_after == 0.5
    clock.now = 60
    assert limiter.peek("a").allowed and limiter.hit("a").allowed
    assert limiter.hit("a").first_refusal


def test_limits_forget_and_zero_turns_off():
    limiter = RateLimiter("logins", 1, 60, clock=Tick())
    limiter.hit("a")
    limiter.forget("a")
    assert limiter.hit("a").allowed
    off = RateLimiter("off", 0, 60)
    assert all(off.hit("a").allowed for _ in range(100)) and len(off) == 0


def test_limits_memory_is_bounded_by_max_keys():
    clock = Tick()
    limiter = RateLimiter("spray", 1, 60, max_keys=100, clock=clock)
    for n in range(10_000):
        limiter.hit(f"k{n}")
    assert len(limiter) <= 101
    clock.now = 61
    limiter.hit("late")
    assert len(limiter) == 1
