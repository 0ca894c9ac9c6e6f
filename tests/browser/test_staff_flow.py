"""Flow 3 in a real browser: staff builds a look-alike audience (on a real worker) and activates a model."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from playwright.sync_api import expect

from matching.models import Audience, ModelVersion
from matching.serving import store
from matching.services.training import model_train
from tests.browser.conftest import shot
from tests.matching.test_refresh import served_city
from users.models import User

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


def test_staff_builds_an_audience_and_activates_a_model_version(page, celery_worker_process) -> None:  # type: ignore[no-untyped-def]
    cache.clear()
    store.reset()
    served_city()  # two friend groups, a trained active v1 and its embeddings
    second = model_train(epochs=1, folds=1, activate=False)
    assert second.name == "v2"
    User.objects.create_superuser("root", "root@example.org", "a-long-pass-2026")
    group = list(User.objects.filter(profile__interests__contains=["sports"]).order_by("pk")[:3])

    page.goto("/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("a-long-pass-2026")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#dashboard")).to_contain_text("Active model")
    expect(page.locator("#dashboard")).to_contain_text("v1")
    expect(page.get_by_role("img", name="Training curves of model v1")).to_be_visible()
    shot(page, "10-admin-dashboard")

    page.goto("/admin/users/user/")
    for user in group:
        page.locator(f"input[name='_selected_action'][value='{user.pk}']").check()
    page.locator("select[name='action']").select_option("build_audience")
    page.get_by_role("button", name="Go").click()
    page.get_by_label("Name").fill("Like our sporty seeds")
    page.get_by_label("Target size").fill("5")
    shot(page, "11-admin-audience-form")
    page.get_by_role("button", name="Build the audience").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Building audience")
    # The page refreshes itself until the worker has finished.
    expect(page.locator(".field-status")).to_contain_text("Ready", timeout=60_000)
    expect(page.get_by_role("link", name="download")).to_be_visible()
    shot(page, "12-admin-audience-ready")
    audience = Audience.objects.get()
    members = list(audience.members.order_by("rank").values_list("user_id", flat=True))
    assert len(members) == 5 and not set(members) & {u.pk for u in group}
    sporty = set(User.objects.filter(profile__interests__contains=["sports"]).values_list("pk", flat=True))
    assert members[0] in sporty  # the seeds' own group ranks first

    page.goto("/admin/matching/modelversion/")
    page.locator(f"input[name='_selected_action'][value='{second.pk}']").check()
    page.locator("select[name='action']").select_option("activate")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Model v2 is now active.")
    shot(page, "13-admin-model-activated")
    assert ModelVersion.objects.get(is_active=True).name == "v2"
    page.goto("/admin/")
    expect(page.locator("#dashboard")).to_contain_text(re.compile(r"Active model\s*v2"))
