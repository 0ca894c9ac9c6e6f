"""Distillation and quantisation, measured: ``compress_model DIR`` or ``compress_model --active``.

``DIR`` (an LBSN directory): hold out friendships, train a teacher on the rest, distil a student,
quantise both, and print size, target-tower speed, retrieval recall@20 and head AUC side by side.
``--active``: register, from the active version, a quantised variant (same weights, int8 dense
layers when loaded) and a distilled student, as new versions that can be activated like any.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Distil and quantise a model and report size, latency and quality side by side."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", nargs="?", type=Path, help="LBSN dataset directory")
        parser.add_argument("--active", action="store_true", help="register compressed versions of the active model")
        parser.add_argument("--holdout", type=float, default=0.2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=None, help="teacher training epochs")
        parser.add_argument("--student-epochs", type=int, default=8)
        parser.add_argument("--json", type=Path, help="also write the report as JSON here")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["active"] == bool(options["directory"]):
            raise CommandError("give either an LBSN directory or --active")
        if options["active"]:
            self._register(options)
            return
        report = self._report(options)
        columns = ("size_mb", "users_per_second", "recall@20", "pair_auc")
        self.stdout.write(f"{'model':<14}" + "".join(f"{c:>18}" for c in columns))
        for name, row in report["models"].items():
            self.stdout.write(f"{name:<14}" + "".join(f"{row[c]:>18.4f}" for c in columns))
        if options["json"]:
            options["json"].write_text(json.dumps(report, indent=2))

    def _report(self, options: dict[str, Any]) -> dict[str, Any]:
        import time

        import torch

        from matching.lbsn import read_lbsn, unique_friend_pairs
        from matching.ml.evaluate import split_edges
        from matching.ml.features import user_features
        from matching.ml.inputs import UserInputs
        from matching.ml.lbsn_data import city_from_lbsn, dataset_now
        from matching.ml.lifecycle import compression_report
        from matching.ml.model import default_model_config
        from matching.ml.pairs import PairFeaturizer
        from matching.ml.train import TrainConfig, TrainingData, train

        started = time.perf_counter()
        torch.set_num_threads(max(1, torch.get_num_threads()))
        try:
            dataset = read_lbsn(options["directory"])
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        friends = unique_friend_pairs(dataset)
        known, held_out = split_edges(friends, options["holdout"], options["seed"], None)
        city = city_from_lbsn(dataset, friend_pairs=known, splits=("train", "tune"))
        now = dataset_now(dataset)
        features = user_features(city, now)
        config = default_model_config(city.n_users, city.n_venues)
        inputs = UserInputs.build(city, features, config)
        featurizer = PairFeaturizer(city, features)

        def build_featurizer(edges: np.ndarray) -> PairFeaturizer:
            sub = city_from_lbsn(dataset, friend_pairs=edges, splits=("train", "tune"))
            return PairFeaturizer(sub, user_features(sub, now))

        train_config = TrainConfig(seed=options["seed"])
        if options["epochs"]:
            train_config.epochs = options["epochs"]
        self.stdout.write(f"{city.n_users} users, {len(known)} known friendships, {len(held_out)} held out; training the teacher")
        data = TrainingData(inputs=inputs, positives=known, pairs=featurizer, lon=city.lon, lat=city.lat, friend_edges=known)
        teacher = train(config, train_config, data, build_featurizer).model.eval()
        models = compression_report(teacher, inputs, featurizer, known, held_out, student_epochs=options["student_epochs"],
                                    seed=options["seed"], log=self.stdout.write)
        return {"models": models, "users": city.n_users, "held_out": int(len(held_out)),
                "seconds": time.perf_counter() - started}

    def _register(self, options: dict[str, Any]) -> None:
        from django.utils import timezone

        from matching.feature_store import load_city
        from matching.ml.features import user_features
        from matching.ml.inputs import UserInputs
        from matching.ml.lifecycle import distill_student
        from matching.ml.model import ModelConfig
        from matching.ml.pairs import PairFeaturizer
        from matching.models import ModelVersion
        from matching.services.registry import model_version_create, model_version_load
        from matching.services.training import positive_pairs, training_city

        active = ModelVersion.objects.filter(is_active=True).first()
        if active is None:
            raise CommandError("no active model version to compress")
        teacher = model_version_load(active)
        quantised = model_version_create(
            model=teacher, config={**active.config, "serving": {"quantise": "dynamic-int8"}},
            metrics=active.metrics, curves=active.curves, parent=active, minor=True,
        )
        self.stdout.write(f"{quantised.name}: {active.name} with int8 dense layers when loaded")
        city = training_city(load_city())[0]
        features = user_features(city, timezone.now().timestamp())
        inputs = UserInputs.build(city, features, ModelConfig.from_dict(active.config["model"]))
        student = distill_student(teacher, inputs, positive_pairs(city), PairFeaturizer(city, features),
                                  epochs=options["student_epochs"], seed=options["seed"])
        version = model_version_create(
            model=student, config={**active.config, "model": student.config.to_dict(), "distilled_from": active.name},
            metrics={"teacher": active.name}, curves={}, parent=active,
        )
        self.stdout.write(f"{version.name}: a student distilled from {active.name} (not active; activate it to serve it)")
