"""Per-person request budgets counted in Redis, one atomic round trip a request."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import cache
from rest_framework.throttling import UserRateThrottle

# A sliding window log in a sorted set (score: the request's time): drop what left the window,
# refuse when the rest fill the budget (and say when the oldest leaves), else log this request.
_SLIDING_WINDOW = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, oldest[2]}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {1, '0'}
"""


class RedisUserRateThrottle(UserRateThrottle):
    """DRF's ``UserRateThrottle`` (the same rates, keys and sliding window), with its history in
    a Redis sorted set checked and updated by one script: one round trip instead of a read and a
    write of a pickled list, and two requests of the same person at the same moment can no
    longer both read the same history and both pass."""

    _script: Any = None

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        if RedisUserRateThrottle._script is None:
            RedisUserRateThrottle._script = cache.client.get_client().register_script(_SLIDING_WINDOW)
        self.now = self.timer()
        allowed, oldest = self._script(
            keys=[cache.make_key(f"throttle-log:{self.key}")],
            args=[repr(self.now), self.duration, self.num_requests, uuid.uuid4().hex],
        )
        self._oldest = float(oldest)
        return bool(allowed)

    def wait(self) -> float | None:
        """Seconds until the oldest request in the window leaves it (and a place frees up)."""
        return max(self.duration - (self.now - self._oldest), 0.0)
