"""The demo logins: three people, and an organiser's published activity they are free for."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from activities.models import Activity
from users.models import User

pytestmark = pytest.mark.django_db


def test_demo_accounts_are_created_once_with_a_published_activity(capsys) -> None:  # type: ignore[no-untyped-def]
    call_command("demo_accounts")
    call_command("demo_accounts")  # re-running resets, never duplicates
    out = capsys.readouterr().out
    assert "alice" in out and "olivia" in out and "admin" in out
    assert User.objects.get(username="admin").is_staff
    assert User.objects.get(username="alice").check_password("alice-demo-2026")
    activity = Activity.objects.get()
    assert activity.organiser.username == "olivia" and activity.status == "published"
    assert activity.starts_at > activity.created_at
