"""Writes about activities. Keyword-only arguments; ``actor`` is checked here, not only in views.

Public services (the API and the web pages call these, never the ORM):

- activities: ``activity_create``, ``activity_update``, ``activity_publish``, ``activity_cancel``;
  staff curation ``activities_set_featured``, ``activities_cancel``.
- participation: ``participation_join``, ``participation_leave``, ``waitlist_join``,
  ``waitlist_leave``.
- invitations: ``invitations_send``, ``invitation_accept``, ``invitation_decline``,
  ``invitation_cancel``, ``invitations_expire``.
- recommendations: ``activity_recommendations_store`` (called by ``matching``'s recommender).

Errors are in ``activities.errors``.
"""

from __future__ import annotations

from activities.services.activities import (
    activities_cancel,
    activities_set_featured,
    activity_cancel,
    activity_create,
    activity_publish,
    activity_update,
)
from activities.services.invitations import (
    invitation_accept,
    invitation_cancel,
    invitation_decline,
    invitations_expire,
    invitations_send,
    invitations_sent_today,
)
from activities.services.participation import (
    participation_join,
    participation_leave,
    waitlist_join,
    waitlist_leave,
)
from activities.services.recommendations import RankedCandidate, activity_recommendations_store

__all__ = [
    "RankedCandidate", "activities_cancel", "activities_set_featured", "activity_cancel", "activity_create",
    "activity_publish", "activity_recommendations_store", "activity_update", "invitation_accept",
    "invitation_cancel", "invitation_decline", "invitations_expire", "invitations_send",
    "invitations_sent_today", "participation_join", "participation_leave", "waitlist_join", "waitlist_leave",
]
