"""Train the matcher on the database and record a model version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.ml.train import MODES
from matching.models import ModelVersion
from matching.services.registry import ModelVersionError, model_version_load
from matching.services.training import model_train


class Command(BaseCommand):
    help = "Train towers and ranking head on everyone in the database; save (and optionally activate) a version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mode", choices=MODES, default="listwise")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--folds", type=int, help="cross-fitting folds for the ranking head (default 3)")
        parser.add_argument("--warm-start", action="store_true", help="start from the active version")
        parser.add_argument("--activate", action="store_true", help="make the new version active")
        parser.add_argument("--if-none", action="store_true", help="do nothing when a version is already active")

    def handle(self, *args: Any, **options: Any) -> None:
        active = ModelVersion.objects.filter(is_active=True).first() if options["if_none"] else None
        if active is not None:
            try:  # the database may have outlived the files (a new checkout beside an old database)
                model_version_load(active)
            except ModelVersionError as exc:
                self.stdout.write(f"the active version cannot be loaded ({exc}); training a new one")
            else:
                self.stdout.write("an active model version exists; not training")
                return
        if options["epochs"] is not None and options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        if options["folds"] is not None and options["folds"] < 1:
            raise CommandError("--folds must be at least 1")
        try:
            version = model_train(
                mode=options["mode"], epochs=options["epochs"], warm_start=options["warm_start"],
                activate=options["activate"], seed=options["seed"], progress=options["verbosity"] > 1,
                folds=options["folds"],
            )
        except ModelVersionError as exc:
            raise CommandError(str(exc)) from exc
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in version.metrics.items() if isinstance(v, float))
        self.stdout.write(f"{version.name}{' (active)' if version.is_active else ''}: {metrics}")
