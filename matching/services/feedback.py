"""What people do with the people they are shown: connect, pass, answer a request.

Each action goes through the ``users`` service that owns the rows, then is logged as an
``Interaction`` (with the model version that was serving) for training and A/B measurement.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from matching.models import Interaction
from users.models import Connection, Profile, User
from users.selectors import profile_visible_to
from users.services import UserActionError, connection_request, connection_respond

PASS_UNKNOWN = "This person cannot be shown."


def _serving_version() -> str:
    from matching.serving import store

    serving = store.current()
    return serving.version if serving is not None else ""


def _log(*, actor: User, kind: str, target_user_id: int, surface: str) -> Interaction:
    """Log an action with the arm of any experiment running on its surface (stable per person)."""
    from matching.services.experiments import serving_arm

    arm = serving_arm(surface=surface, user_id=actor.pk)
    return Interaction.objects.create(
        actor=actor, kind=kind, target_user_id=target_user_id, surface=surface,
        model_version=arm.model_version or _serving_version(), variant=arm.variant, occurred_at=timezone.now(),
    )


def match_connect(*, actor: User, target_user_id: int, surface: str = "nearby") -> Connection:
    """Ask to connect; when the other person had already asked, this accepts and is logged so."""
    with transaction.atomic():
        connection = connection_request(actor=actor, to_user_id=target_user_id)
        kind = Interaction.Kind.ACCEPT if connection.status == Connection.Status.ACCEPTED else Interaction.Kind.CONNECT_REQUEST
        _log(actor=actor, kind=kind, target_user_id=target_user_id, surface=surface)
    return connection


def match_pass(*, actor: User, target_user_id: int, surface: str = "nearby") -> Interaction:
    """Not interested: logged, and the nearby list leaves the person out for a while."""
    if target_user_id == actor.pk or not User.objects.filter(pk=target_user_id).exists():
        raise UserActionError(PASS_UNKNOWN)
    return _log(actor=actor, kind=Interaction.Kind.PASS, target_user_id=target_user_id, surface=surface)


def person_view(*, actor: User, user_id: int, surface: str = "nearby") -> Profile:
    """Open someone's profile (a click, for CTR): only people the viewer may see."""
    profile = profile_visible_to(viewer=actor, user_id=user_id)
    if profile is None:
        raise UserActionError(PASS_UNKNOWN)
    if user_id != actor.pk:
        _log(actor=actor, kind=Interaction.Kind.VIEW, target_user_id=user_id, surface=surface)
    return profile


def connection_answer(*, actor: User, connection_id: int, accept: bool) -> Connection:
    """The receiver answers a request; an acceptance is a positive label for training."""
    with transaction.atomic():
        connection = connection_respond(actor=actor, connection_id=connection_id, accept=accept)
        if accept:
            _log(actor=actor, kind=Interaction.Kind.ACCEPT, target_user_id=connection.from_user_id, surface="connections")
    return connection
