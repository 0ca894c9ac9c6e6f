"""The test suite: real PostGIS and Redis, fast password hashing, Redis databases of its own.

The broker and cache default to Redis databases 14 and 15 so a demo worker running on the same
machine (databases 0 and 1) never takes a test's tasks.
"""

from __future__ import annotations

from socialmatch.settings.base import *  # noqa: F403
from socialmatch.settings.base import BASE_DIR, CACHES
from socialmatch.settings.env import env_str

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/15")
CACHES["default"]["LOCATION"] = REDIS_URL
CACHES["default"]["KEY_PREFIX"] = env_str("CACHE_KEY_PREFIX", "socialmatch-test")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
MEDIA_ROOT = BASE_DIR / "var" / "test-media"
# A test flushes the impression buffer itself; a worker started by another test (the flush
# task goes to its queue) must not take a test's entries first, so scheduled flushes wait.
IMPRESSIONS_FLUSH_SECONDS = 60.0
