from __future__ import annotations

from celery import shared_task

# Services import lazily: the web process imports this module, and the matcher pulls in PyTorch.


@shared_task(bind=True, max_retries=0, acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def model_train_task(self: object, mode: str = "listwise", epochs: int | None = None,
                     warm_start: bool = False, activate: bool = False) -> dict[str, object]:
    """Train a new model version from the database (the admin's "start training")."""
    from matching.services.training import model_train

    version = model_train(mode=mode, epochs=epochs, warm_start=warm_start, activate=activate)
    return {"version": version.name, "active": version.is_active}


@shared_task(bind=True, max_retries=3, acks_late=True)
def embeddings_rebuild_task(self: object, version_id: int | None = None) -> dict[str, object]:
    """Recompute every user's embeddings for a version (default: the active one)."""
    from matching.models import ModelVersion
    from matching.services.embeddings import embeddings_rebuild_start

    version = ModelVersion.objects.get(pk=version_id) if version_id else ModelVersion.objects.get(is_active=True)
    embedding_set = embeddings_rebuild_start(version=version)
    return {"set": embedding_set.pk, "chunks": embedding_set.chunks_total}


@shared_task(bind=True, max_retries=3, acks_late=True)
def embeddings_chunk_task(self: object, set_id: int, start: int, end: int) -> int:
    from matching.services.embeddings import embeddings_chunk

    embeddings_chunk(set_id=set_id, start=start, end=end)
    return end - start


@shared_task(bind=True, max_retries=0, acks_late=True)
def embeddings_finish_task(self: object, set_id: int) -> dict[str, object]:
    from matching.services.embeddings import embeddings_finish

    embedding_set = embeddings_finish(set_id=set_id)
    return {"set": embedding_set.pk, "status": embedding_set.status, "users": embedding_set.users}


@shared_task(bind=True, max_retries=3, acks_late=True)
def user_embedding_refresh_task(self: object, user_id: int) -> bool:
    """Debounced refresh of one person's embeddings after their profile, location or friends changed."""
    from matching.services.embeddings import user_embedding_refresh

    return user_embedding_refresh(user_id=user_id)


@shared_task(bind=True, max_retries=0, acks_late=True)
def audience_build_task(self: object, audience_id: int) -> dict[str, object]:
    """Score everyone against an audience's seeds and store the ranked members."""
    from matching.services.audiences import audience_build

    audience = audience_build(audience_id=audience_id)
    return {"audience": audience.pk, "status": audience.status}


@shared_task(bind=True, max_retries=0, acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def model_retrain_scheduled_task(self: object) -> dict[str, object]:
    """Nightly (beat): warm-started retraining behind the evaluation gate."""
    from matching.services.lifecycle import model_retrain_scheduled

    version = model_retrain_scheduled()
    return {"version": version.name, "active": version.is_active, "notes": version.notes}


@shared_task(bind=True, max_retries=0, acks_late=True, soft_time_limit=3600, time_limit=3600 + 120)
def model_update_incremental_task(self: object) -> dict[str, object]:
    """Hourly (beat): fine-tune the ranking head on the labels since the active version."""
    from matching.services.lifecycle import model_update_incremental

    version = model_update_incremental()
    return {"version": version.name if version else None}


@shared_task(bind=True, max_retries=3, acks_late=True)
def activity_recommendations_task(self: object, activity_id: int) -> dict[str, object] | None:
    """Recompute and store an activity's recommended participants (debounced by the scheduler)."""
    from matching.services.activity_recommendations import activity_recommendations_refresh

    run = activity_recommendations_refresh(activity_id=activity_id)
    if run is None:
        return None
    return {"activity": run.activity_id, "ranker": run.ranker, "stored": run.stored, "seconds": round(run.seconds, 3)}


@shared_task(bind=True, max_retries=0, acks_late=True, ignore_result=True)
def impressions_flush_task(self: object) -> int:
    """Write the buffered impressions (scheduled by the first answer into an empty buffer, and
    every minute by beat)."""
    from matching.services.impressions import impressions_flush

    return impressions_flush()
