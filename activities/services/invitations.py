"""Invitations: the organiser invites recommended people, the invitee answers, pending ones expire.

Every step is an ``activity_event`` for the interaction log (invite sent, accepted, declined),
with the rank the recommender gave and its model version, so training and A/B measurement see
what was shown and what happened.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from activities import errors
from activities.errors import (
    ActivityPermissionDenied,
    InvitationClosed,
    InvitationLimitReached,
)
from activities.models import Activity, Invitation, Participation, Recommendation, WaitlistEntry
from activities.services.common import blocked_with, can_moderate, emit, notify
from activities.services.participation import add_participant, check_may_join, lock_open_activity
from users.models import Notification, User
from users.selectors import display_name

INVITED_MESSAGE = "{organiser} invites you to {title}."
ACCEPTED_MESSAGE = "{name} accepted your invitation to {title}."
DECLINED_MESSAGE = "{name} declined your invitation to {title}."
LIMIT_WINDOW = dt.timedelta(days=1)


def invitations_sent_today(*, organiser: User, now: dt.datetime | None = None) -> int:
    """Invitations the organiser sent in the last 24 hours (the window the daily limit counts)."""
    now = now or timezone.now()
    return Invitation.objects.filter(invited_by=organiser, created_at__gt=now - LIMIT_WINDOW).count()


def _eligible(recommendations: list[Recommendation], activity: Activity) -> tuple[list[Recommendation], set[int]]:
    """Split stored recommendations into people who can be invited now and those who cannot
    (invited before, joined or waiting meanwhile, hidden, suspended, or blocked with the organiser)."""
    ids = [r.user_id for r in recommendations]
    taken = set(Invitation.objects.filter(activity=activity, invitee_id__in=ids).values_list("invitee_id", flat=True))
    taken |= set(Participation.objects.filter(activity=activity, user_id__in=ids).values_list("user_id", flat=True))
    taken |= set(WaitlistEntry.objects.filter(activity=activity, user_id__in=ids).values_list("user_id", flat=True))
    taken |= set(
        User.objects.filter(pk__in=ids)
        .exclude(is_active=True, is_hidden=False, is_suspended=False).values_list("pk", flat=True)
    )
    taken |= {uid for uid in ids if blocked_with(uid, activity.organiser_id)}
    return [r for r in recommendations if r.user_id not in taken], taken


def invitations_send(
    *, actor: User, activity: Activity, user_ids: list[int] | None = None, top: int | None = None,
) -> list[Invitation]:
    """Invite chosen recommended people (``user_ids``) or the best ``top`` still invitable.

    1. Only the organiser invites (not staff: an invitation speaks for the organiser); the
       activity must be published and not started. Its row is locked, then the organiser's, so
       two calls at once cannot both pass the daily limit.
    2. Chosen people must be among the stored recommendations and still invitable, else a 400
       naming them; ``top`` skips those who are not.
    3. Refuse (429) if this call would exceed ``INVITATIONS_PER_ORGANISER_PER_DAY`` over the
       last 24 hours, saying how many are left.
    4. Create the invitations with the recommender's score and reasons, log "invite_sent" with
       rank and model version, and notify each invitee. All or nothing.
    """
    if (user_ids is None) == (top is None):
        raise ValidationError({"user_ids": [errors.CHOOSE_ONE], "top": [errors.CHOOSE_ONE]})
    if actor.pk != activity.organiser_id:
        raise ActivityPermissionDenied(errors.ONLY_ORGANISER_INVITES)
    limit = int(settings.INVITATIONS_PER_ORGANISER_PER_DAY)
    now = timezone.now()
    with transaction.atomic():
        activity = lock_open_activity(activity.pk)
        User.objects.select_for_update().filter(pk=actor.pk).first()
        recommendations = list(activity.recommendations.order_by("rank"))
        invitable, taken = _eligible(recommendations, activity)
        if user_ids is not None:
            wanted = list(dict.fromkeys(user_ids))
            by_user = {r.user_id: r for r in invitable}
            bad = [uid for uid in wanted if uid not in by_user]
            if bad:
                raise ValidationError({"user_ids": [errors.NOT_RECOMMENDED.format(ids=", ".join(map(str, bad)))]})
            chosen = [by_user[uid] for uid in wanted]
        else:
            chosen = invitable[:top]
            if not chosen:
                raise ValidationError({"top": [errors.NOTHING_TO_INVITE]})
        remaining = max(0, limit - invitations_sent_today(organiser=actor, now=now))
        if len(chosen) > remaining:
            raise InvitationLimitReached(errors.DAILY_LIMIT.format(limit=limit, remaining=remaining))
        invitations = Invitation.objects.bulk_create([
            Invitation(activity=activity, invitee_id=r.user_id, invited_by=actor, score=r.score,
                       reasons=r.reasons)
            for r in chosen
        ])
        message = INVITED_MESSAGE.format(organiser=display_name(actor.pk), title=activity.title)
        for invitation, rec in zip(invitations, chosen, strict=True):
            emit("invite_sent", actor_id=actor.pk, activity_id=activity.pk, target_user_id=rec.user_id,
                 position=rec.rank - 1, model_version=activity.recommendation_model_version,
                 variant=activity.recommendation_ranker, surface="invite")
            notify(rec.user_id, Notification.Kind.INVITATION, message,
                   {"activity_id": activity.pk, "invitation_id": invitation.pk})
    return invitations


def _lock_invitation(actor: User, invitation: Invitation) -> tuple[Activity, Invitation]:
    """Lock the activity first (the order joins use, so no deadlock), then the invitation; check
    the actor is the invitee and the invitation is still pending."""
    if actor.pk != invitation.invitee_id:
        raise ActivityPermissionDenied(errors.ONLY_INVITEE)
    activity = Activity.objects.select_for_update().get(pk=invitation.activity_id)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != Invitation.Status.PENDING:
        if invitation.status == Invitation.Status.EXPIRED:
            raise InvitationClosed(errors.INVITATION_EXPIRED)
        raise InvitationClosed(errors.ALREADY_ANSWERED.format(status=invitation.get_status_display().lower()))
    return activity, invitation


def invitation_accept(*, actor: User, invitation: Invitation) -> Participation:
    """The invitee accepts: they join under the same capacity rule as everyone else.

    A full activity raises ActivityFull and leaves the invitation pending (a place may free up);
    a started one expires the invitation and raises InvitationClosed; a cancelled one raises
    InvitationClosed.
    """
    expired = False
    with transaction.atomic():
        activity, invitation = _lock_invitation(actor, invitation)
        if activity.starts_at <= timezone.now() and activity.status == Activity.Status.PUBLISHED:
            invitation.status = Invitation.Status.EXPIRED
            invitation.save(update_fields=["status"])
            expired = True
        else:
            activity = lock_open_activity(activity.pk)
            check_may_join(actor, activity)
            participation, _ = add_participant(
                activity, actor, surface="invite", full_message=errors.FULL_FOR_INVITATION
            )
            invitation.status = Invitation.Status.ACCEPTED
            invitation.responded_at = timezone.now()
            invitation.save(update_fields=["status", "responded_at"])
            emit("invite_accepted", actor_id=actor.pk, activity_id=activity.pk,
                 target_user_id=activity.organiser_id, model_version=activity.recommendation_model_version,
                 variant=activity.recommendation_ranker, surface="invite")
            notify(activity.organiser_id, Notification.Kind.INVITATION_ANSWERED,
                   ACCEPTED_MESSAGE.format(name=display_name(actor.pk), title=activity.title),
                   {"activity_id": activity.pk, "invitation_id": invitation.pk})
    if expired:  # committed above: the expiry stands even though the answer is refused
        raise InvitationClosed(errors.INVITATION_EXPIRED)
    return participation


def invitation_decline(*, actor: User, invitation: Invitation) -> Invitation:
    with transaction.atomic():
        activity, invitation = _lock_invitation(actor, invitation)
        invitation.status = Invitation.Status.DECLINED
        invitation.responded_at = timezone.now()
        invitation.save(update_fields=["status", "responded_at"])
        emit("invite_declined", actor_id=actor.pk, activity_id=activity.pk, target_user_id=activity.organiser_id,
             model_version=activity.recommendation_model_version, variant=activity.recommendation_ranker,
             surface="invite")
        notify(activity.organiser_id, Notification.Kind.INVITATION_ANSWERED,
               DECLINED_MESSAGE.format(name=display_name(actor.pk), title=activity.title),
               {"activity_id": activity.pk, "invitation_id": invitation.pk})
    return invitation


def invitation_cancel(*, actor: User, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation (organiser or staff)."""
    with transaction.atomic():
        activity = Activity.objects.select_for_update().get(pk=invitation.activity_id)
        if not (actor.pk == activity.organiser_id or can_moderate(actor)):
            raise ActivityPermissionDenied(errors.ONLY_ORGANISER_OR_STAFF_CANCELS_INVITATION)
        invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if invitation.status != Invitation.Status.PENDING:
            raise InvitationClosed(errors.ALREADY_ANSWERED.format(status=invitation.get_status_display().lower()))
        invitation.status = Invitation.Status.CANCELLED
        invitation.responded_at = timezone.now()
        invitation.save(update_fields=["status", "responded_at"])
    return invitation


def invitations_expire(*, now: dt.datetime | None = None) -> int:
    """Expire every pending invitation of an activity that has started (Celery beat, each minute).

    One conditional UPDATE: idempotent, and an invitation answered meanwhile is no longer
    pending so it is left alone. Returns how many expired.
    """
    now = now or timezone.now()
    with transaction.atomic():
        return Invitation.objects.filter(
            status=Invitation.Status.PENDING, activity__starts_at__lte=now,
        ).update(status=Invitation.Status.EXPIRED)


__all__ = [
    "invitations_send", "invitation_accept", "invitation_decline", "invitation_cancel", "invitations_expire",
    "invitations_sent_today",
]
