"""glibc's malloc thresholds for a process that trains or embeds people in batches.

Every training step allocates and frees the same large buffers again: the in-batch loss's B x B
logits are 4 MiB at B = 1,024; every embedding batch its layers' activations, 8 MiB a layer at
8,192 people. glibc serves a block above its mmap threshold with a fresh
mapping and gives freed memory at the top of its heap back to the kernel beyond its trim
threshold; both thresholds move with what the process has freed, and on yelp-small the loss's
buffer came back as new pages, about 830 page faults a step, 0.7 ms of an 18 ms step
(docs/BENCHMARKS.md, "On the ninth machine"), and batch inference ran 10 to 20% slower than with
the thresholds below. Fixed thresholds keep blocks under 32 MiB in the
heap and up to 128 MiB of freed heap mapped: no faults in the steady state, at the cost of that
much memory held between steps.

``for_batch_work()`` sets them once per process: training (``train_towers``) and batch embedding
(``embed_users``, the re-embedding workers) call it; the web workers, which do neither, keep
glibc's defaults. It leaves glibc alone where the process was started
with ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``, or either threshold in
``GLIBC_TUNABLES`` (the operator's choice), and does nothing off glibc.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")  # in GLIBC_TUNABLES


def operator_chose() -> bool:
    """Whether the process was started with its own thresholds, either way glibc takes them."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in ENVIRONMENT) or any(name in tunables for name in TUNABLES)


@functools.cache
def for_batch_work() -> bool:
    """Fix the thresholds for this process; True when they are now the ones above."""
    if operator_chose():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: raises AttributeError elsewhere)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.warning("mallopt refused the training thresholds; training keeps glibc's defaults")
    return done
