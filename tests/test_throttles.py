"""socialmatch.throttles: DRF's per-user sliding window, counted in Redis in one atomic step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import cache

from socialmatch.throttles import RedisUserRateThrottle


class ThreePerMinute(RedisUserRateThrottle):
    scope = "test"
    THROTTLE_RATES = {"test": "3/min"}


def _request(user_id: int) -> SimpleNamespace:
    return SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=user_id), META={})


def test_the_budget_slides_with_the_oldest_request() -> None:
    cache.clear()
    clock = [1000.0]
    throttle = ThreePerMinute()
    throttle.timer = lambda: clock[0]  # type: ignore[method-assign]
    for at in (1000.0, 1010.0, 1020.0):
        clock[0] = at
        assert throttle.allow_request(_request(1), None)
    clock[0] = 1030.0
    assert not throttle.allow_request(_request(1), None)
    assert throttle.wait() == pytest.approx(30.0)  # the request at 1000 leaves the window at 1060
    assert throttle.allow_request(_request(2), None)  # another person has their own budget
    clock[0] = 1060.5
    assert throttle.allow_request(_request(1), None)  # one place freed; refused ones never counted
    assert not throttle.allow_request(_request(1), None)
    assert throttle.wait() == pytest.approx(9.5)
