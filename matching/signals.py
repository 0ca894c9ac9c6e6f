"""Changes in lower apps that make a person's embedding stale schedule a (debounced) refresh."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from users.models import Availability, Connection, Profile


def _schedule(user_id: int) -> None:
    from matching.services.embeddings import user_embedding_refresh_schedule

    user_embedding_refresh_schedule(user_id=user_id)


@receiver(post_save, sender=Profile, dispatch_uid="matching-profile-changed")
def profile_changed(sender: type, instance: Profile, **kwargs: Any) -> None:
    _schedule(instance.user_id)


@receiver(post_save, sender=Availability, dispatch_uid="matching-availability-changed")
@receiver(post_delete, sender=Availability, dispatch_uid="matching-availability-deleted")
def availability_changed(sender: type, instance: Availability, **kwargs: Any) -> None:
    _schedule(instance.user_id)


@receiver(post_save, sender=Connection, dispatch_uid="matching-connection-changed")
def connection_changed(sender: type, instance: Connection, **kwargs: Any) -> None:
    if instance.status == Connection.Status.ACCEPTED:
        _schedule(instance.from_user_id)
        _schedule(instance.to_user_id)
