"""Shared fixtures: named people, and a real Celery worker process for the tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.gis.geos import Point
from django.test import Client

from users.factories import ProfileFactory, UserFactory
from users.models import User

REPO = Path(__file__).resolve().parent.parent
LBSN_DIR = REPO.parent / "shared" / "data" / "lbsn"


def make_person(username: str, lon: float, lat: float, **profile: object) -> User:
    user = UserFactory(username=username)
    ProfileFactory(user=user, location=Point(lon, lat, srid=4326), **profile)
    return user


@pytest.fixture
def fresh_serving(tmp_path: Path, settings: object) -> None:
    """Model files and embedding sets in a private folder, an empty Redis, no set served."""
    from django.core.cache import cache

    from matching.serving import store

    settings.MEDIA_ROOT = tmp_path  # type: ignore[attr-defined]
    cache.clear()
    store.reset()


@pytest.fixture(autouse=True)
def fresh_people_map() -> None:
    """Each test's people nearby come from its own database: the process's map is read again
    on first use (the map follows changes within a test through its change log)."""
    from matching.people_map import people_map
    from matching.services.nearby import recently_active

    people_map.reset()
    recently_active.reset()


@pytest.fixture(autouse=True)
def fresh_arm_cache() -> None:
    """Each web process keeps the ranking default and running experiments for two seconds;
    every test starts from what its own database and Redis say."""
    from matching.services.experiments import arm_cache_reset

    arm_cache_reset()


@pytest.fixture
def alice(db: None) -> User:
    return make_person("alice", -79.9959, 40.4406, interests=["sports", "music", "reading"])


@pytest.fixture
def bob(db: None) -> User:
    return make_person("bob", -79.9900, 40.4420, interests=["sports", "gaming"])


@pytest.fixture
def carol(db: None) -> User:
    return make_person("carol", -80.0100, 40.4500, interests=["art", "reading"])


@pytest.fixture
def staff(db: None) -> User:
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


def client_for(user: User) -> Client:
    """A test client signed in as ``user``."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(staff: User) -> Client:
    return client_for(staff)


@pytest.fixture
def lbsn_dir() -> Path:
    path = LBSN_DIR / "yelp-small"
    if not path.is_dir():
        pytest.fail(f"the shared LBSN sample is missing at {path}")
    return path


def _die_with_parent() -> None:
    """In the worker process: receive SIGTERM when the test process dies, however it dies."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` process against the test database and the test broker.

    Tests that use it must be ``transaction=True`` so that the worker sees their rows.
    """
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "socialmatch.settings.test",
        "DATABASE_URL": (
            f"postgis://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "REDIS_URL": settings.REDIS_URL,
        # Tasks the worker sends itself (a chord's chunks, bulk recomputations) go to the same
        # private queue.
        "CELERY_TASK_DEFAULT_QUEUE": f"test-{os.getpid()}",
        "CELERY_BULK_QUEUE": f"test-{os.getpid()}",
    }
    from socialmatch.celery import app

    # A queue of this session's own: a worker left over from another run (or another checkout
    # on this machine) never takes these tasks.
    queue = f"test-{os.getpid()}"
    app.conf.task_default_queue = queue
    settings.CELERY_BULK_QUEUE = queue
    app.control.purge()
    log = open(REPO / "var" / "test-worker.log", "wb") if (REPO / "var").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "socialmatch", "worker", "--pool=solo", "-Q", queue,
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", f"{queue}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the Celery worker exited with {proc.returncode} at start")
        if app.control.ping(timeout=0.5, destination=[f"{queue}@{socket.gethostname()}"]):
            break
    else:
        proc.terminate()
        pytest.fail("the Celery worker did not answer a ping within 60 s")
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
