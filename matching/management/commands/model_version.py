"""List, activate or roll back model versions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.models import ModelVersion
from matching.services.registry import ModelVersionError, model_version_activate, model_version_rollback


class Command(BaseCommand):
    help = "list | activate NAME | rollback"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "activate", "rollback"])
        parser.add_argument("name", nargs="?")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "activate":
                if not options["name"]:
                    raise CommandError("activate needs a version name")
                version = ModelVersion.objects.filter(name=options["name"]).first()
                if version is None:
                    raise CommandError(f"no model version named {options['name']!r}")
                model_version_activate(version=version, note="activated by command")
            elif options["action"] == "rollback":
                model_version_rollback()
        except ModelVersionError as exc:
            raise CommandError(str(exc)) from exc
        for version in ModelVersion.objects.all():
            self.stdout.write(f"{'*' if version.is_active else ' '} {version.name:<8} {version.created_at:%Y-%m-%d %H:%M} {version.notes}")
