"""The training process's malloc thresholds (matching/ml/allocator.py), read back from glibc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matching.ml import allocator

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: report where glibc puts a 16 MiB block, and what stays mapped once it is
# freed at the top of the heap, with or without allocator.for_batch_work().
PROBE = """
import ctypes, json, sys
from matching.ml import allocator

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
tuned = allocator.for_batch_work() if sys.argv[1] == "tuned" else None
before = libc.mallinfo2()
block = libc.malloc(16 << 20)
ctypes.memset(block, 1, 16 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"tuned": tuned, "mapped": during.hblkhd - before.hblkhd, "kept": after.keepcost}))
"""


def probe(mode: str, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k not in (*allocator.ENVIRONMENT, "GLIBC_TUNABLES")} | env
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environment, cwd=ROOT,
                          check=True, timeout=60)
    return json.loads(done.stdout)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def test_defaults_map_a_large_block_and_give_it_back():
    seen = probe("defaults")
    assert seen["mapped"] >= 16 << 20  # its own mapping, unmapped again when freed
    assert seen["kept"] < 16 << 20


def test_for_batch_work_keeps_large_blocks_in_the_heap_and_mapped_once_freed():
    seen = probe("tuned")
    assert seen["tuned"] is True
    assert seen["mapped"] == 0
    assert seen["kept"] >= 16 << 20  # freed at the heap's top, under the trim threshold: kept


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_the_operators_own_thresholds_are_left_alone(env):
    seen = probe("tuned", **env)
    assert seen["tuned"] is False
    assert seen["mapped"] >= 16 << 20
