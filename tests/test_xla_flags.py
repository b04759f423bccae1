"""grm_jax/xla_flags.py: the memory scheduler option the training entry point sets before JAX starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from grm_jax import xla_flags
from helpers import config_spec

FLAG = xla_flags.MEMORY_SCHEDULER_FLAG
SETTING = f"{FLAG}={xla_flags.MEMORY_SCHEDULER}"
OLD = xla_flags.DEPRECATED_SCHEDULER_FLAG


def test_with_flag_appends_unless_already_set():
    assert xla_flags.with_flag("", FLAG, "x") == f"{FLAG}=x"
    assert xla_flags.with_flag("--xla_force_host_platform_device_count=4", FLAG, "x") == (
        f"--xla_force_host_platform_device_count=4 {FLAG}=x")
    assert xla_flags.with_flag(f"{FLAG}=y --a=1", FLAG, "x") == f"{FLAG}=y --a=1"  # the user's choice
    assert xla_flags.with_flag(f"{OLD}=true", FLAG, "x", aliases=(OLD,)) == f"{OLD}=true"  # or an alias of it


def _run(code: str, xla_flags_env: str | None, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags_env is not None:
        env["XLA_FLAGS"] = xla_flags_env
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
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
    (None, "True", SETTING),
    ("--xla_cpu_use_thunk_runtime=true", "True", f"--xla_cpu_use_thunk_runtime=true {SETTING}"),
    (f"{FLAG}=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED", "False", f"{FLAG}=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"),
    (f"{OLD}=true", "False", f"{OLD}=true"),
])
def test_prefer_memory_scheduler_before_the_backend(given, applied, expected):
    assert _run(CODE, given) == f"{applied} {expected}"


def test_prefer_memory_scheduler_after_the_backend_started_warns_and_changes_nothing():
    code = ("import os, warnings\nimport jax, jax.numpy as jnp\njnp.ones(1).block_until_ready()\n"
            "from grm_jax import xla_flags\nwith warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n    applied = xla_flags.prefer_memory_scheduler()\n"
            "print(applied, repr(os.environ.get('XLA_FLAGS')), 'already started' in str(caught[0].message))\n")
    assert _run(code, None) == "False None True"


STEP_TEMP = """
from grm_jax import xla_flags
xla_flags.prefer_memory_scheduler()
import jax, jax.numpy as jnp
from grm_jax.config import load_config_file
from grm_jax.models import build_model, example_inputs, host_init
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import create_state, make_train_step
config = load_config_file({spec!r})
model = build_model(config)
z, x = example_inputs(config, 2)
variables = host_init(model, z, x, seed=0)
optimizer = make_optimizer(config, variables["params"], 10)
state = create_state(variables["params"], variables["batch_stats"], optimizer)
grid = (config.model.template_size // config.model.patch_size) ** 2
batch = dict(template=z, search=x, template_mask=jnp.ones((2, grid)), search_anno=jnp.full((2, 4), 0.3))
step = jax.jit(make_train_step(model, optimizer, config, 10, axis_name=None))
lowered = step.lower(state, batch, jax.random.PRNGKey(0))
temp = lambda options: lowered.compile(compiler_options=options).memory_analysis().temp_size_in_bytes
print(temp({{}}), temp({{"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"}}))
"""


def test_the_flag_schedules_the_train_step_for_memory():
    """XLA reads the flag and acts on it: the tiny GRM's train step compiled under $XLA_FLAGS as the entry points set
    it needs less temporary memory than the same step compiled with XLA's concurrency-optimised scheduler (with
    jaxlib 0.10.2 at batch 2: 0.78 against 2.68 MB). A flag XLA no longer knows aborts the process instead."""
    memory, concurrency = map(int, _run(STEP_TEMP.format(spec=config_spec("tiny")), None, timeout=300).split())
    assert memory < concurrency, (memory, concurrency)
