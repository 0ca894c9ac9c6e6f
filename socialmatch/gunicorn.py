"""gunicorn settings: ``gunicorn -c python:socialmatch.gunicorn socialmatch.wsgi:application``.

Before a worker takes its first request it loads what every nearby request reads: the people
map (``matching.people_map``: who people nearby may show, and everyone's friendships; loaded on
first use instead, the first request each worker got waited for it, 3.2 s at 1,000,000 people:
``bench_serving``'s ``people_map_load_seconds``) and the serving set with its ranking model.

Then it freezes the garbage collector's view of everything alive (``gc.freeze``). A worker holds
about 270,000 objects once Django, DRF, PyTorch and the model are imported, nearly all of them
there for the process's life, and every full collection walked them all: 62 to 70 ms with the
GIL held, about once in a hundred requests, while every request of the worker's threads waited
(one of the two causes of the bursts of slow requests at 150 requests/s in docs/BENCHMARKS.md,
Serving, eighth session). Frozen, they are never scanned again; a full collection walks what
requests leave behind (0.07 ms). Objects made later (a reloaded map, a newly published model)
are collected as usual.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

logger = logging.getLogger(__name__)


def post_worker_init(worker: Any) -> None:
    from django.db import close_old_connections

    from matching.people_map import people_map
    from matching.serving import store

    try:
        people_map.current()
        serving = store.current()
        if serving is not None:
            serving.ranking_model()
    except Exception:  # noqa: BLE001 - the first request loads them instead
        logger.exception("could not load the people map or the serving set at start; the first request will")
    finally:
        close_old_connections()
    gc.collect()
    gc.freeze()
