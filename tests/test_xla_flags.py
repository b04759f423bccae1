"""grm_jax/xla_flags.py: the memory scheduler option the training entry point sets before JAX starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from grm_jax import xla_flags

FLAG = xla_flags.MEMORY_SCHEDULER_FLAG


def test_with_flag_appends_unless_already_set():
    assert xla_flags.with_flag("", FLAG, "false") == f"{FLAG}=false"
    assert xla_flags.with_flag("--xla_force_host_platform_device_count=4", FLAG, "false") == (
        f"--xla_force_host_platform_device_count=4 {FLAG}=false")
    assert xla_flags.with_flag(f"{FLAG}=true --a=1", FLAG, "false") == f"{FLAG}=true --a=1"  # the user's choice


def _run(code: str, xla_flags_env: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags_env is not None:
        env["XLA_FLAGS"] = xla_flags_env
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


CODE = """
import os
from grm_jax import xla_flags
applied = xla_flags.prefer_memory_scheduler()
import jax, jax.numpy as jnp
jax.block_until_ready(jnp.ones(3) + 1)  # the backend starts with these flags
print(applied, os.environ.get("XLA_FLAGS", ""))
"""


@pytest.mark.parametrize("given,applied,expected", [
    (None, "True", f"{FLAG}=false"),
    ("--xla_cpu_use_thunk_runtime=true", "True", f"--xla_cpu_use_thunk_runtime=true {FLAG}=false"),
    (f"{FLAG}=true", "False", f"{FLAG}=true"),
])
def test_prefer_memory_scheduler_before_the_backend(given, applied, expected):
    assert _run(CODE, given) == f"{applied} {expected}"


def test_prefer_memory_scheduler_after_the_backend_started_warns_and_changes_nothing():
    code = ("import os, warnings\nimport jax, jax.numpy as jnp\njnp.ones(1).block_until_ready()\n"
            "from grm_jax import xla_flags\nwith warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n    applied = xla_flags.prefer_memory_scheduler()\n"
            "print(applied, repr(os.environ.get('XLA_FLAGS')), 'already started' in str(caught[0].message))\n")
    assert _run(code, None) == "False None True"
