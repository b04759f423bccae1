"""grm_jax.memory: freed heap blocks leave the process's resident memory."""

from __future__ import annotations

import pathlib

import pytest

from grm_jax import memory


def _rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(memory._malloc_trim() is None or not pathlib.Path("/proc/self/status").exists(),
                    reason="glibc and Linux's /proc only")
def test_release_free_memory_returns_freed_heap_blocks():
    # A freed 4 MB block raises glibc's mmap threshold to 4 MB, so the 1 MB blocks then come from the heap; the small
    # blocks between them keep the heap from shrinking when they are freed.
    block = bytearray(4 << 20)
    del block
    big, small = [], []
    for _ in range(300):
        big.append(bytearray(1 << 20))
        small.append(bytearray(4096))  # above pymalloc's 512 bytes: from malloc's heap too
    before = _rss_mb()
    del big
    after_free = _rss_mb()
    memory.release_free_memory()
    released = _rss_mb()
    assert after_free > before - 100  # freed, but still resident (the 300 MB sit inside the heap)
    assert released < after_free - 200  # handed back: at least 200 of the 300 MB
    assert len(small) == 300
