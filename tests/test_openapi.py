"""The OpenAPI document describes every endpoint, and generating it raises no errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.core.management import call_command


def test_schema_has_every_endpoint_and_no_errors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out), "--validate")
    assert "Errors:   0" in capsys.readouterr().err
    paths = yaml.safe_load(out.read_text())["paths"]
    for path, method in [
        ("/api/v1/matches/nearby/", "get"), ("/api/v1/activities/{activity_id}/join/", "post"),
        ("/api/v1/activities/{activity_id}/waitlist/", "delete"), ("/api/v1/invitations/{invitation_id}/accept/", "post"),
        ("/api/v1/notifications/read/", "post"), ("/api/v1/users/{user_id}/similar/", "get"),
        ("/api/v1/audiences/{audience_id}/export.csv", "get"),
    ]:
        assert "responses" in paths[path][method], path
