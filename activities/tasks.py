from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, max_retries=3, acks_late=True)
def invitations_expire_task(self: object) -> int:
    """Expire pending invitations of activities that have started (Celery beat, every minute)."""
    from activities.services import invitations_expire

    return invitations_expire()
