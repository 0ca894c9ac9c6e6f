"""What users tell the apps above them (``matching`` listens; see ``matching/signals.py``).

``users`` never imports ``matching``. Saving or deleting a ``User`` or a ``Profile`` one at a time
is seen through Django's own model signals; changes made in bulk (``QuerySet.update``) send none,
so the services that make them send ``discovery_changed`` with the ``user_ids`` whose standing in
discovery (hidden, suspended, active) may have changed, inside their transaction.
"""

from __future__ import annotations

from django.dispatch import Signal

discovery_changed = Signal()
