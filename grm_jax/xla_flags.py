"""XLA options the training entry point sets before JAX starts its backend.

``prefer_memory_scheduler()`` turns off XLA's concurrency-optimised scheduler for CPU programs
(``--xla_cpu_enable_concurrency_optimized_scheduler=false`` in ``$XLA_FLAGS``), so that XLA orders the train step
for the least memory instead. That scheduler runs every operation as soon as its inputs exist, so the backward pass's
recomputations (the GELU and attention backward passes of grm_jax/models/) would run right after the forward pass
and their results stay alive until used. Measured on GRM-B/256 float32 (benchmarks/README.md, "What the backward
pass keeps"): peak resident memory per added sample 440 → 99 MB, the step's time unchanged; the computed values
are the same (the schedule orders the operations, it does not change them).

It changes nothing where ``$XLA_FLAGS`` already names the option (the user's choice wins), and it must run before
JAX's first computation: XLA reads ``$XLA_FLAGS`` once, when the backend starts.
"""

from __future__ import annotations

import os
import warnings

MEMORY_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def with_flag(flags: str, flag: str, value: str) -> str:
    """``flags`` (an ``$XLA_FLAGS`` string) with ``flag=value`` appended, unless ``flags`` already sets ``flag``."""
    names = {item.split("=", 1)[0] for item in flags.split()}
    return flags if flag in names else " ".join(filter(None, [flags, f"{flag}={value}"]))


def prefer_memory_scheduler() -> bool:
    """Append ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to ``$XLA_FLAGS`` (module docstring);
    True if it did. False where the user's ``$XLA_FLAGS`` already sets the option, and False with a warning where
    JAX's backend has already started in this process (an entry point called from a program that computed before:
    the flag would not apply, so ``$XLA_FLAGS`` is left as it is)."""
    from jax._src import xla_bridge

    current = os.environ.get("XLA_FLAGS", "")
    updated = with_flag(current, MEMORY_SCHEDULER_FLAG, "false")
    if updated == current:
        return False
    if xla_bridge.backends_are_initialized():
        warnings.warn(f"{MEMORY_SCHEDULER_FLAG}=false not set: JAX's backend has already started in this process "
                      "(XLA reads $XLA_FLAGS once, when it starts); the train step keeps XLA's default CPU scheduler",
                      stacklevel=2)
        return False
    os.environ["XLA_FLAGS"] = updated
    return True
