from __future__ import annotations

from celery import shared_task

from matching.services.training import model_train


@shared_task(bind=True, max_retries=0, acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def model_train_task(self: object, mode: str = "listwise", epochs: int | None = None,
                     warm_start: bool = False, activate: bool = False) -> dict[str, object]:
    """Train a new model version from the database (the admin's "start training")."""
    version = model_train(mode=mode, epochs=epochs, warm_start=warm_start, activate=activate)
    return {"version": version.name, "active": version.is_active}
