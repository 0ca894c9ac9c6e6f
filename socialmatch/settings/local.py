"""Developer machine and the demo: debug on unless the environment says otherwise."""

from __future__ import annotations

from socialmatch.settings.base import *  # noqa: F403
from socialmatch.settings.env import env_bool

DEBUG = env_bool("DEBUG", True)
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
