"""Handing freed host memory back to the operating system.

glibc's ``malloc`` serves blocks below its mmap threshold from heap arenas, and that threshold grows (up to 32 MB)
each time a larger mmapped block is freed. A GRM train state built on the host and then copied to the devices
leaves its host copy, a few MB per tensor, freed inside those arenas: free for later ``malloc`` calls of the
process, but still resident, so the process's peak grows by the size of the state (GRM-B/256: RSS 3.4 GB with the
state placed, 1.7 GB after :func:`release_free_memory`; benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library: nothing to do)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_memory() -> bool:
    """``malloc_trim(0)``: every arena's free pages go back to the system (``madvise``); the allocation policy and
    every live block stay as they are. True if memory was released; False if none was, or without glibc."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
