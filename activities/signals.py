"""What activities tell the apps above them (``matching`` listens; see ``matching/signals.py``).

``activities`` never imports ``matching``: the interaction log and the recommender live there.

- ``activity_event`` is sent inside the service's transaction, so what a receiver writes (an
  ``Interaction`` row) commits or rolls back with the event itself. Arguments: ``kind`` (an
  ``Interaction.Kind`` value: "invite_sent", "invite_accepted", "invite_declined", "join"),
  ``actor_id``, ``activity_id`` and optionally ``target_user_id``, ``position``,
  ``model_version``, ``surface``.
- ``recommendations_stale`` is sent after the commit when what the recommendations depend on
  changed: ``activity_id`` and ``reason`` ("published", "changed", "joined", "left"). Receivers
  decide how to debounce.
"""

from __future__ import annotations

from django.dispatch import Signal

activity_event = Signal()
recommendations_stale = Signal()
