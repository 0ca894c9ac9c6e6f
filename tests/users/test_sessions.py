"""Sessions: read from Redis on every signed-in request, kept in the database too."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import client_for, make_person
from users.models import User

pytestmark = pytest.mark.django_db
URL = "/api/v1/matches/nearby/"


def test_a_signed_in_request_reads_its_session_without_a_query() -> None:
    client = client_for(make_person("me", -79.99, 40.44))
    client.get(URL)  # the session is in the cache from the sign-in on
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL).status_code == 200
    assert not [q for q in queries.captured_queries if "django_session" in q["sql"]]


def test_sessions_outlive_the_cache() -> None:
    client = client_for(make_person("me", -79.99, 40.44))
    cache.clear()  # Redis restarted: it keeps nothing on disk here
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL).status_code == 200  # still signed in, from the database
    assert [q for q in queries.captured_queries if "django_session" in q["sql"]]


def test_the_signed_in_user_is_read_by_a_prepared_statement_as_the_orm_reads_them(alice: User) -> None:
    from django.contrib.auth.backends import ModelBackend

    from users.backends import PreparedModelBackend

    ours, django = PreparedModelBackend().get_user(alice.pk), ModelBackend().get_user(alice.pk)
    assert ours is not None and ours._state.adding is False
    assert {f.attname: getattr(ours, f.attname) for f in User._meta.concrete_fields} == {
        f.attname: getattr(django, f.attname) for f in User._meta.concrete_fields}
    assert PreparedModelBackend().get_user(10**9) is None and PreparedModelBackend().get_user("x") is None
    alice.is_active = False
    alice.save()
    assert PreparedModelBackend().get_user(alice.pk) is None  # as ModelBackend: inactive people are nobody
