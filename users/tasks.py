from __future__ import annotations

from celery import shared_task

from users.services import profile_location_refresh


@shared_task(bind=True, max_retries=3, acks_late=True)
def profile_location_refresh_task(self: object, user_id: int) -> dict[str, object]:
    """Recompute a person's current location from their location history (idempotent)."""
    profile = profile_location_refresh(user_id=user_id)
    # The result backend is readable by every worker: it gets no coordinates.
    return {"user_id": user_id, "updated": profile is not None}
