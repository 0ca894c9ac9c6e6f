"""The migrations describe the models: a model change without its migration fails here, not on
the first deployment that runs ``migrate``."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_every_model_change_has_its_migration() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exit:  # --check exits 1 when a migration is missing
        pytest.fail(f"models and migrations differ (exit {exit.code}):\n{out.getvalue()}")
