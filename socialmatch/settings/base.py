"""Settings shared by every environment. Environment variables are read only through ``env``."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from socialmatch.settings.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("SECRET_KEY", "dev-only-secret-key-change-me-in-production-0123456789abcdef")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.gis",
    "rest_framework",
    "rest_framework_gis",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "users",
    "activities",
    "matching",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "socialmatch.web.middleware.CityTimeZoneMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Sessions are read from Redis and written through to the database: a signed-in request (every
# API call) reads its session without a query, and sessions outlive a Redis restart.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

ROOT_URLCONF = "socialmatch.urls"
WSGI_APPLICATION = "socialmatch.wsgi.application"
ASGI_APPLICATION = "socialmatch.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "socialmatch.web.context_processors.notifications",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgis://postgres:postgres@127.0.0.1:5432/socialmatch")
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "users.User"
# Django's ModelBackend, reading each request's signed-in user through a prepared statement;
# Django's own stays listed, so that sessions signed in through it before still find it.
AUTHENTICATION_BACKENDS = ["users.backends.PreparedModelBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "web:home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))

# Redis serves three roles on separate logical databases so that flushing the cache never drops
# queued tasks: cache (REDIS_URL), Celery broker and result backend.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/1")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "socialmatch"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "PARSER_CLASS": "redis.connection._HiredisParser",
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 15 * 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 20 * 60, minimum=1)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Long batches queued many at once (activity recommendations recomputed for a new model) go here,
# so that quick tasks (impression flushes, one person's refresh) never wait behind them.
CELERY_BULK_QUEUE = env_str("CELERY_BULK_QUEUE", "bulk")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Parts of the system that must answer for GET /health/ to return 200.
HEALTH_REQUIRED = env_list("HEALTH_REQUIRED", ["database", "postgis", "redis", "celery"])
HEALTH_CELERY_TIMEOUT = 1.0

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {"nearby": env_str("NEARBY_THROTTLE", "60/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "socialmatch API",
    "DESCRIPTION": "People nearby who are actually like you, and activities to do together.",
    "VERSION": "1.0.0",
}

# GDAL 3.6 (Debian 12) cannot sandbox file access; we never open user-supplied GDAL sources.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # FAISS logs every CPU-feature probe at INFO on import.
    "loggers": {"faiss.loader": {"level": "WARNING"}},
}

# Vendored front-end libraries (OpenLayers for the admin map); no CDN at run time.
STATICFILES_DIRS = [BASE_DIR / "static"]

# Weather and traffic for the context features. No source exists in this deployment, so the
# default answers neutral conditions everywhere; point this at a class with the same
# ``conditions(lon, lat, when)`` method to plug a real one in.
MATCHING_CONDITIONS_PROVIDER = env_str("MATCHING_CONDITIONS_PROVIDER", "matching.ml.features.NeutralConditions")

# People nearby: positions are snapped to this grid before any distance is computed (privacy).
# The fusion of distance, similarity and the other objectives is a RankingConfig (admin); the
# default, stored by a migration, is seed 000 section 5.1's 0.6 distance + 0.4 similarity.
NEARBY_GRID_METRES = env_int("NEARBY_GRID_METRES", 100, minimum=100)
# Seconds between an answer's impressions entering the Redis buffer and being written (under a
# running worker; matching.services.impressions).
IMPRESSIONS_FLUSH_SECONDS = env_float("IMPRESSIONS_FLUSH_SECONDS", 2.0)
# Someone a person passed on is left out of their nearby list for this many days.
NEARBY_PASS_DAYS = env_int("NEARBY_PASS_DAYS", 30, minimum=0)
# A person's own nearby searches whose query point moves too fast or too widely are refused
# (HTTP 429): distance buckets seen from many query points would trilaterate others' cells.
# Refused: more than NEARBY_MOVE_MAX_KM from the previous query point within
# NEARBY_MOVE_JUMP_SECONDS, or more than NEARBY_MOVE_MAX_CELLS distinct squares of
# NEARBY_MOVE_CELL_KM within NEARBY_MOVE_WINDOW_SECONDS.
NEARBY_MOVE_MAX_KM = env_float("NEARBY_MOVE_MAX_KM", 20.0)
NEARBY_MOVE_JUMP_SECONDS = env_int("NEARBY_MOVE_JUMP_SECONDS", 60, minimum=1)
NEARBY_MOVE_CELL_KM = env_float("NEARBY_MOVE_CELL_KM", 1.0)
NEARBY_MOVE_MAX_CELLS = env_int("NEARBY_MOVE_MAX_CELLS", 8, minimum=1)
NEARBY_MOVE_WINDOW_SECONDS = env_int("NEARBY_MOVE_WINDOW_SECONDS", 60, minimum=1)

# Keeping the model good (matching.services.lifecycle). The nightly retraining activates its
# candidate only if its recall@20 on the gate slice is at most MODEL_GATE_MARGIN below the
# active version's; the hourly incremental update fine-tunes the ranking head at this rate.
MODEL_GATE_MARGIN = env_float("MODEL_GATE_MARGIN", 0.01)
MODEL_GATE_K = env_int("MODEL_GATE_K", 20, minimum=1)
MODEL_RETRAIN_EPOCHS = env_int("MODEL_RETRAIN_EPOCHS", 1, minimum=1)
MODEL_INCREMENTAL_LR = env_float("MODEL_INCREMENTAL_LR", 1e-3)

# Activities. An organiser may send this many invitations in any 24 hours.
INVITATIONS_PER_ORGANISER_PER_DAY = env_int("INVITATIONS_PER_ORGANISER_PER_DAY", 50, minimum=1)
# Participant recommendation (seed 000 section 5.2): how many are stored per activity, how many
# eligible people nearest the place are scored at most, how many the ranking head re-ranks, how
# long a burst of joins waits before one recomputation, and the fusion of closeness and likeness.
ACTIVITY_RECOMMENDATION_LIMIT = env_int("ACTIVITY_RECOMMENDATION_LIMIT", 50, minimum=1)
ACTIVITY_RECOMMENDATION_CANDIDATES = env_int("ACTIVITY_RECOMMENDATION_CANDIDATES", 2000, minimum=10)
ACTIVITY_RECOMMENDATION_RERANK = env_int("ACTIVITY_RECOMMENDATION_RERANK", 200, minimum=1)
ACTIVITY_RECOMMENDATION_DEBOUNCE_SECONDS = env_int("ACTIVITY_RECOMMENDATION_DEBOUNCE_SECONDS", 60, minimum=0)
ACTIVITY_RECOMMENDATION_WEIGHTS = (0.4, 0.6)  # (distance, similarity)
# Weekly availability slots are in the city's local time; activities start at UTC instants. The
# generated city uses UTC-5 without daylight saving ("Etc/GMT+5": the sign is POSIX's).
AVAILABILITY_TIME_ZONE = env_str("AVAILABILITY_TIME_ZONE", "Etc/GMT+5")
try:
    ZoneInfo(AVAILABILITY_TIME_ZONE)
except (ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"AVAILABILITY_TIME_ZONE={AVAILABILITY_TIME_ZONE!r} is not a time zone") from None

# Celery beat (the database scheduler installs these entries when beat starts): pending invitations
# expire when their activity starts, swept every minute; the model retrains nightly behind the
# evaluation gate and its ranking head is updated hourly.
CELERY_BEAT_SCHEDULE = {
    # Normally the first answer into an empty buffer schedules the flush; this sweep catches a
    # lost task (matching.services.impressions).
    "matching-impressions-sweep": {
        "task": "matching.tasks.impressions_flush_task",
        "schedule": 60.0,
    },
    "activities-expire-invitations": {
        "task": "activities.tasks.invitations_expire_task",
        "schedule": 60.0,
    },
    "model-retrain-nightly": {
        "task": "matching.tasks.model_retrain_scheduled_task",
        "schedule": crontab(hour=3, minute=15),
    },
    "model-update-hourly": {
        "task": "matching.tasks.model_update_incremental_task",
        "schedule": crontab(minute=40),
    },
}
