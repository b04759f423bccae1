"""XLA options the training entry point sets before JAX starts its backend.

``prefer_memory_scheduler()`` sets XLA's CPU scheduler to order programs for the least memory
(``--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`` in ``$XLA_FLAGS``) instead of its default, the
concurrency-optimised scheduler. That scheduler runs every operation as soon as its inputs exist, so the backward
pass's recomputations (the GELU and attention backward passes of grm_jax/models/) would run right after the forward
pass and their results stay alive until used. Measured on GRM-B/256 float32 (benchmarks/README.md, "What the backward
pass keeps"): peak resident memory per added sample 440 → 99 MB, the step's time unchanged; the computed values
are the same (the schedule orders the operations, it does not change them).

The option replaces ``--xla_cpu_enable_concurrency_optimized_scheduler=false``, which jaxlib 0.10 still reads but
lists as deprecated (XLA aborts the process on a flag it no longer knows). With jaxlib 0.10.2 the two compile the
same program: the optimised train step of GRM-B/256 and of the tiny GRM has the same text either way, and XLA's temp
at GRM-B/256 batch 4 is 1211 MB with either, against 2011 MB with the default scheduler.

It changes nothing where ``$XLA_FLAGS`` already names the option or the deprecated one (the user's choice wins), and
it must run before JAX's first computation: XLA reads ``$XLA_FLAGS`` once, when the backend starts.
"""

from __future__ import annotations

import os
import warnings

MEMORY_SCHEDULER_FLAG = "--xla_cpu_scheduler_type"
MEMORY_SCHEDULER = "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
DEPRECATED_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def with_flag(flags: str, flag: str, value: str, aliases: tuple[str, ...] = ()) -> str:
    """``flags`` (an ``$XLA_FLAGS`` string) with ``flag=value`` appended, unless ``flags`` already sets ``flag`` or
    one of ``aliases`` (other flags that choose the same thing)."""
    names = {item.split("=", 1)[0] for item in flags.split()}
    return flags if names & {flag, *aliases} else " ".join(filter(None, [flags, f"{flag}={value}"]))


def prefer_memory_scheduler() -> bool:
    """Append ``--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`` to ``$XLA_FLAGS`` (module docstring);
    True if it did. False where the user's ``$XLA_FLAGS`` already sets it or the deprecated
    ``--xla_cpu_enable_concurrency_optimized_scheduler``, and False with a warning where JAX's backend has already
    started in this process (an entry point called from a program that computed before: the flag would not apply, so
    ``$XLA_FLAGS`` is left as it is)."""
    from jax._src import xla_bridge

    current = os.environ.get("XLA_FLAGS", "")
    updated = with_flag(current, MEMORY_SCHEDULER_FLAG, MEMORY_SCHEDULER, aliases=(DEPRECATED_SCHEDULER_FLAG,))
    if updated == current:
        return False
    if xla_bridge.backends_are_initialized():
        warnings.warn(f"{MEMORY_SCHEDULER_FLAG}={MEMORY_SCHEDULER} not set: JAX's backend has already started in this "
                      "process (XLA reads $XLA_FLAGS once, when it starts); the train step keeps XLA's default CPU "
                      "scheduler", stacklevel=2)
        return False
    os.environ["XLA_FLAGS"] = updated
    return True
