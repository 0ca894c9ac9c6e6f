"""Domain errors of activities, with the messages people read (the tests assert on them).

Views map them to HTTP: ``ActivityPermissionDenied`` 403, ``ActivityFull`` / ``ActivityClosed`` /
``InvitationClosed`` / ``ActivityConflict`` 409, ``InvitationLimitReached`` 429. Bad field values
are Django ``ValidationError``\\ s with a message per field (400).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

# Permissions.
ONLY_ORGANISER = "Only the organiser (or staff) may change this activity."
ONLY_ORGANISER_INVITES = "Only the organiser may invite people to this activity."
ONLY_ORGANISER_SEES_RECOMMENDATIONS = "Only the organiser (or staff) may see these recommendations."
ONLY_INVITEE = "Only the invited person may answer this invitation."
ONLY_ORGANISER_OR_STAFF_CANCELS_INVITATION = "Only the organiser (or staff) may cancel this invitation."
ONLY_STAFF_REMOVES = "Only staff may remove someone else from an activity."
SUSPENDED = "Your account is suspended."
BLOCKED = "You cannot take part in this activity."

# Validation (400, per field).
START_IN_PAST = "The start must be in the future."
END_BEFORE_START = "The end must be after the start."
CAPACITY_BELOW_PARTICIPANTS = "Capacity cannot be below the {count} people who already joined."
UNKNOWN_FIELDS = "These fields cannot be changed: {names}."
NOT_RECOMMENDED = "Not among this activity's current recommendations: {ids}."
NOTHING_TO_INVITE = "There is nobody left to invite among the recommendations."
CHOOSE_ONE = "Give either user_ids or top, not both and not neither."

# State conflicts (409).
FULL = "This activity is full ({capacity} places). You can join the waitlist."
FULL_FOR_INVITATION = (
    "This activity is full ({capacity} places). Your invitation stays open in case a place frees up."
)
HAS_PLACES = "There are places left: join the activity instead of the waitlist."
NOT_OPEN = "This activity is not open: it is {status}."
STARTED = "This activity has already started."
ORGANISER_JOINS = "You organise this activity; you take part already."
NOT_PARTICIPANT = "You have not joined this activity."
ALREADY_JOINED = "You have already joined this activity."
NOT_WAITING = "You are not on the waitlist of this activity."
ALREADY_ANSWERED = "This invitation was already {status}."
INVITATION_EXPIRED = "This invitation expired when the activity started."
CANNOT_CHANGE = "A {status} activity can no longer be changed."
CANNOT_CANCEL = "A {status} activity cannot be cancelled."

# Quotas (429).
DAILY_LIMIT = "You can send {limit} invitations a day; {remaining} left for now."


class ActivityError(Exception):
    """A request that cannot be done in the activity's present state; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ActivityPermissionDenied(PermissionDenied):
    """The actor may not do this (also a Django ``PermissionDenied``)."""


class ActivityFull(ActivityError):
    pass


class ActivityClosed(ActivityError):
    """Cancelled, completed, draft or started: no joining, inviting or answering."""


class ActivityConflict(ActivityError):
    """The request contradicts the present state (leaving what one never joined ...)."""


class InvitationClosed(ActivityError):
    """The invitation is no longer pending (answered, expired or cancelled)."""


class InvitationLimitReached(ActivityError):
    pass
