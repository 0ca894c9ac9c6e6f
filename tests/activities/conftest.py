from __future__ import annotations

import pytest
from django.core.cache import cache

from matching.serving import store


@pytest.fixture(autouse=True)
def no_served_model_and_no_pending_marks() -> None:
    """Rules ranker (nothing published in Redis) and no debounce marks left by another test."""
    cache.clear()
    store.reset()
