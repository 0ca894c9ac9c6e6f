"""Production: secrets must come from the environment; HTTPS-only cookies."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from socialmatch.settings.base import *  # noqa: F403
from socialmatch.settings.base import SECRET_KEY

if SECRET_KEY.startswith("dev-only-"):
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
