"""Impressions: who each ranked answer showed, at which position, logged off the request's path.

A nearby answer's impressions go to a Redis list as one entry (``impressions_record``: one RPUSH,
about 0.1 ms), and ``impressions_flush`` moves buffered entries into ``matching_interaction`` in
batches of many answers. Writing each answer's 20 rows from the request instead cost 4 to 5 ms
and four round trips (a transaction, its rows, the interaction table's indexes), a quarter of
the request's time in PostgreSQL.

When a flush runs: the answer whose entry finds the buffer empty schedules one
``IMPRESSIONS_FLUSH_SECONDS`` later, so rows reach the database within seconds of being shown;
beat also sweeps every minute, in case that task was lost.

Guarantees:

- At least once. Entries leave the buffer only after the transaction that wrote them has
  committed; a crash between the two writes those entries again on the next flush. One flush
  runs at a time (a Redis lock, renewed every batch; a flush that finds it lost stops without
  trimming). An entry the database refuses (a bug) is set aside in its own list (the newest
  10,000 are kept, /health/ counts them) and logged, so it cannot block the ones behind it.
- A person who deleted their account between being shown and the flush takes their rows with
  them, as the database's cascade would have: rows naming an unknown person are dropped.
- The buffer lives in the cache's Redis database, which keeps nothing on disk here and which
  ``cache.clear()`` empties: a Redis restart or flush loses what waits in the buffer, normally
  the last seconds of impressions, more if no worker has been running (``/health/`` shows the
  backlog). The request used ``synchronous_commit = off`` before, which could lose the last rows
  on a database crash. When Redis cannot be reached, the answer writes its rows itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from matching.models import Interaction

logger = logging.getLogger(__name__)

BUFFER_KEY = "matching:impressions"
FAILED_KEY = "matching:impressions-refused"  # entries the database refused, kept for a look
FAILED_KEEP = 10_000  # the newest refused entries kept
LOCK_KEY = "matching:impressions-flush-lock"
LOCK_SECONDS = 300  # renewed every batch; a crashed flusher's lock expires by itself
FLUSH_MAX_SECONDS = 60.0  # one task's share of a backlog; the rest goes to the next task
FLUSH_BATCH = 2_000  # answers per transaction (about 40,000 rows)


def _redis():  # noqa: ANN202 - redis-py's client
    return cache.client.get_client()


def impressions_record(
    *, actor_id: int, targets: list[int], surface: str, model_version: str, variant: str = "",
    at: datetime | None = None,
) -> None:
    """Log that ``actor_id`` was shown ``targets`` in this order (position = index)."""
    if not targets:
        return
    at = at or timezone.now()
    entry = json.dumps([actor_id, surface, model_version, variant, at.timestamp(), targets])
    try:
        length = _redis().rpush(cache.make_key(BUFFER_KEY), entry)
    except Exception:  # noqa: BLE001 - Redis down: the answer still goes out, its rows written here
        logger.warning("impression buffer unreachable; writing %d impressions directly", len(targets))
        _write([json.loads(entry)])
        return
    if length == 1:
        from matching.tasks import impressions_flush_task

        try:
            impressions_flush_task.apply_async(countdown=settings.IMPRESSIONS_FLUSH_SECONDS)
        except Exception:  # noqa: BLE001 - no broker: beat's sweep (or the next answer) flushes
            logger.warning("cannot schedule the impression flush; beat's sweep will write them", exc_info=True)


# Atomic steps on the lock (Lua runs in Redis as one command): extend it or trim the buffer only
# while it is still ours, and release only our own.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
_TRIM = ("if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('ltrim', KEYS[2], ARGV[2], -1) return 1 end "
         "return 0")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def impressions_flush(*, batch: int = FLUSH_BATCH, max_seconds: float = FLUSH_MAX_SECONDS) -> int:
    """Move buffered impressions into the database; returns the rows written.

    Works batch by batch for at most ``max_seconds`` and then schedules the rest as another task,
    so that a backlog (workers were down for a while) never outlives the lock. Each batch renews
    the lock and trims the buffer only while the lock is still this flush's: if it was lost
    anyway, the flush stops without trimming, so the worst case is a batch written twice, never
    entries dropped unwritten. Returns 0 at once when another flush holds the lock.
    """
    client = _redis()
    key, lock = cache.make_key(BUFFER_KEY), cache.make_key(LOCK_KEY)
    token = uuid.uuid4().hex
    if not client.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return 0
    written, started = 0, time.monotonic()
    try:
        while True:
            if not client.eval(_RENEW, 1, lock, token, LOCK_SECONDS):
                logger.warning("impression flush lost its lock; stopping before trimming")
                return written
            raw = client.lrange(key, 0, batch - 1)
            if not raw:
                return written
            written += _write_or_set_aside(client, raw)
            # Only after the rows committed (at least once), and only while the lock is ours.
            if not client.eval(_TRIM, 2, lock, key, token, len(raw)):
                logger.warning("impression flush lost its lock; %d entries may be written twice", len(raw))
                return written
            if time.monotonic() - started > max_seconds and client.llen(key):
                from matching.tasks import impressions_flush_task

                impressions_flush_task.apply_async()  # the rest in a task of its own
                return written
    finally:
        client.eval(_RELEASE, 1, lock, token)


def _write_or_set_aside(client, raw: list[bytes]) -> int:  # noqa: ANN001 - redis-py's client
    """Write a batch; when the database refuses it, write its entries one by one and move any
    it refuses to ``FAILED_KEY`` (logged), so one bad entry cannot stop every later flush.
    A database that cannot be reached raises, and the batch stays buffered."""
    try:
        return _write([json.loads(item) for item in raw])
    except (OperationalError, InterfaceError):
        raise
    except Exception:  # noqa: BLE001 - find the entry the database or the parser refuses
        logger.exception("an impression batch was refused; writing its %d entries one by one", len(raw))
    written = 0
    for item in raw:
        try:
            written += _write([json.loads(item)])
        except (OperationalError, InterfaceError):
            raise  # the database is unreachable: the batch stays buffered
        except Exception:  # noqa: BLE001 - anything else about this one entry: set it aside
            logger.exception("impression entry refused, kept in %s: %r", FAILED_KEY, item[:200])
            failed = cache.make_key(FAILED_KEY)
            client.rpush(failed, item)
            client.ltrim(failed, -FAILED_KEEP, -1)
    return written


def impressions_pending() -> int:
    """Answers waiting in the buffer (/health/ shows it)."""
    return int(_redis().llen(cache.make_key(BUFFER_KEY)))


def impressions_refused() -> int:
    """Entries the database refused, set aside (/health/ shows it; each is in the log)."""
    return int(_redis().llen(cache.make_key(FAILED_KEY)))


# Impression rows go in by COPY: building 20 model instances an answer for ``bulk_create`` cost
# the worker about 0.7 ms of CPU per answer at full load, a twentieth of the whole machine's.
_COPY_IMPRESSIONS = (
    "COPY matching_interaction (kind, weight, position, surface, model_version, variant, occurred_at,"
    " actor_id, target_user_id) FROM STDIN"
)


def _write(entries: list[list[object]]) -> int:
    """Entries -> Interaction rows, in one transaction; rows naming an unknown person are dropped."""
    people = {int(e[0]) for e in entries} | {int(t) for e in entries for t in e[5]}  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM users_user WHERE id = ANY(%s)", [sorted(people)])
        known = {row[0] for row in cursor.fetchall()}
    kind = Interaction.Kind.IMPRESSION.value
    rows = [
        (kind, 1.0, position, str(surface), str(version), str(variant),
         datetime.fromtimestamp(float(when), tz=UTC), int(actor), int(target))
        for actor, surface, version, variant, when, targets in entries
        if int(actor) in known
        for position, target in enumerate(targets)  # type: ignore[arg-type]
        if int(target) in known
    ]
    # Errors come out as Django's, so that an unreachable database is told from a refused row.
    with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(_COPY_IMPRESSIONS) as copy:
            for row in rows:
                copy.write_row(row)
    return len(rows)
