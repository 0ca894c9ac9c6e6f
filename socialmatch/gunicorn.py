"""gunicorn settings: ``gunicorn -c python:socialmatch.gunicorn socialmatch.wsgi:application``.

Each worker loads the people map (``matching.people_map``: who people nearby may show, and
everyone's friendships) before it takes its first request; loaded on first use instead, the first
request each worker got waited for it (3.2 s at 1,000,000 people: ``bench_serving``'s
``people_map_load_seconds``).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def post_worker_init(worker: Any) -> None:
    from django.db import close_old_connections

    from matching.people_map import people_map

    try:
        people_map.current()
    except Exception:  # noqa: BLE001 - the first request loads it instead
        logger.exception("could not load the people map at start; the first request will")
    finally:
        close_old_connections()
