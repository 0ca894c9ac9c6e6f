"""POST /api/v1/similarity/ and GET /api/v1/users/{id}/similar/: permissions, rules, bad input."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from matching.serving import SERVING_SET_KEY, store
from tests.conftest import client_for
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_published_model() -> None:
    cache.delete(SERVING_SET_KEY)
    store.reset()


def test_the_seed_user_may_ask_and_rules_answer_without_a_model(alice: User, bob: User) -> None:
    response = client_for(alice).post("/api/v1/similarity/", {"seed_user_id": alice.pk, "target_user_id": bob.pk},
                                      content_type="application/json")
    body = response.json()
    assert response.status_code == 200, body
    # alice: sports, music, reading; bob: sports, gaming -> 1 shared of 4
    assert body["ranker"] == "rules" and body["similarity"] == 0.25 and body["cosine"] is None
    assert body["confidence"] == 0.3 and body["timestamp"]


def test_someone_else_may_not_ask_about_alice(alice: User, bob: User, carol: User) -> None:
    response = client_for(carol).post("/api/v1/similarity/", {"seed_user_id": alice.pk, "target_user_id": bob.pk},
                                      content_type="application/json")
    assert response.status_code == 403


def test_staff_may_ask_and_unknown_ids_are_404(staff: User, alice: User) -> None:
    client = client_for(staff)
    ok = client.post("/api/v1/similarity/", {"seed_user_id": alice.pk, "target_user_id": staff.pk}, content_type="application/json")
    assert ok.status_code == 200
    missing = client.post("/api/v1/similarity/", {"seed_user_id": alice.pk, "target_user_id": 10**9}, content_type="application/json")
    assert missing.status_code == 404


@pytest.mark.parametrize("body", [{}, {"seed_user_id": "x", "target_user_id": 1}, {"seed_user_id": 0, "target_user_id": 1}])
def test_bad_similarity_input_is_a_400_with_field_errors(alice: User, body: dict[str, object]) -> None:
    response = client_for(alice).post("/api/v1/similarity/", body, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) <= {"seed_user_id", "target_user_id"}


def test_similar_users_is_staff_only(alice: User, staff: User) -> None:
    assert client_for(alice).get(f"/api/v1/users/{alice.pk}/similar/").status_code == 403
    body = client_for(staff).get(f"/api/v1/users/{alice.pk}/similar/", {"limit": 5}).json()
    assert body == {"user_id": alice.pk, "model_version": "", "ranker": "rules", "results": []}
    assert client_for(staff).get(f"/api/v1/users/{alice.pk}/similar/", {"limit": 1000}).status_code == 400
    assert client_for(staff).get("/api/v1/users/999999999/similar/").status_code == 404
