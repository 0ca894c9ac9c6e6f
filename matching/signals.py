"""Changes in lower apps that make a person's embedding stale schedule a (debounced) refresh."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from activities.models import Participation
from activities.signals import activity_event, recommendations_stale
from users.models import Availability, Connection, LocationPing, Profile, User
from users.signals import discovery_changed


def _schedule(user_id: int) -> None:
    from matching.services.embeddings import user_embedding_refresh_schedule

    user_embedding_refresh_schedule(user_id=user_id)


@receiver(post_save, sender=Profile, dispatch_uid="matching-profile-changed")
def profile_changed(sender: type, instance: Profile, **kwargs: Any) -> None:
    _schedule(instance.user_id)
    _moved_or_shown([instance.user_id])


# Who people nearby may show, and where: each web process's in-memory map follows these.


def _moved_or_shown(user_ids: list[int]) -> None:
    from matching.people_map import people_changed

    people_changed(user_ids)


@receiver(post_delete, sender=Profile, dispatch_uid="matching-profile-deleted")
@receiver(post_save, sender=User, dispatch_uid="matching-user-changed")
@receiver(post_delete, sender=User, dispatch_uid="matching-user-deleted")
def user_or_profile_changed(sender: type, instance: User | Profile, **kwargs: Any) -> None:
    if kwargs.get("update_fields") and set(kwargs["update_fields"]) <= {"last_login", "password"}:
        return  # signing in changes nothing people nearby show
    _moved_or_shown([instance.pk if isinstance(instance, User) else instance.user_id])


@receiver(post_save, sender=LocationPing, dispatch_uid="matching-ping-saved")
@receiver(post_save, sender=Participation, dispatch_uid="matching-participation-saved")
@receiver(post_save, sender="matching.Interaction", dispatch_uid="matching-visit-saved")
def activity_since_the_set(sender: type, instance: object, **kwargs: Any) -> None:
    """This process reads who did anything since the embedding set again on its next request."""
    if getattr(instance, "kind", "visit") != "visit":
        return
    from matching.services.nearby import recently_active

    recently_active.touch()


@receiver(discovery_changed, dispatch_uid="matching-discovery-changed")
def discovery_changed_in_bulk(sender: type, user_ids: list[int], **kwargs: Any) -> None:
    _moved_or_shown(list(user_ids))


@receiver(post_save, sender=Availability, dispatch_uid="matching-availability-changed")
@receiver(post_delete, sender=Availability, dispatch_uid="matching-availability-deleted")
def availability_changed(sender: type, instance: Availability, **kwargs: Any) -> None:
    _schedule(instance.user_id)


@receiver(post_save, sender=Connection, dispatch_uid="matching-connection-changed")
def connection_changed(sender: type, instance: Connection, **kwargs: Any) -> None:
    if instance.status == Connection.Status.ACCEPTED:
        _schedule(instance.from_user_id)
        _schedule(instance.to_user_id)
    _moved_or_shown([instance.from_user_id, instance.to_user_id])  # their friendships, in the people map


@receiver(post_delete, sender=Connection, dispatch_uid="matching-connection-deleted")
def connection_deleted(sender: type, instance: Connection, **kwargs: Any) -> None:
    _moved_or_shown([instance.from_user_id, instance.to_user_id])


# Activities: their events go to the interaction log (in the sender's transaction), and a change
# of what the recommendations depend on schedules a recomputation.


@receiver(activity_event, dispatch_uid="matching-activity-event")
def activity_event_logged(
    sender: type, kind: str, actor_id: int, activity_id: int, target_user_id: int | None = None,
    position: int | None = None, model_version: str = "", variant: str = "", surface: str = "", **kwargs: Any,
) -> None:
    from django.utils import timezone

    from matching.models import Interaction

    Interaction.objects.create(
        actor_id=actor_id, kind=kind, target_activity_id=activity_id, target_user_id=target_user_id,
        position=position, surface=surface, model_version=model_version or "", variant=variant or "",
        occurred_at=timezone.now(),
    )


@receiver(recommendations_stale, dispatch_uid="matching-recommendations-stale")
def recommendations_stale_received(sender: type, activity_id: int, reason: str, **kwargs: Any) -> None:
    """Publishing or changing an activity recomputes at once; joins and leaves wait out the window."""
    from django.conf import settings

    from matching.services.activity_recommendations import activity_recommendations_schedule

    immediate = reason in ("published", "changed")
    countdown = 0 if immediate else int(settings.ACTIVITY_RECOMMENDATION_DEBOUNCE_SECONDS)
    activity_recommendations_schedule(activity_id=activity_id, countdown=countdown)
