"""The persistent compilation cache (``grm_jax/compilation_cache.py``): a second process does not recompile."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from grm_jax import compilation_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]

# One process: enable the cache from $GRM_JAX_CACHE, compile and run the tiny GRM's forward, report what JAX saw.
SCRIPT = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[1])
from grm_jax import compilation_cache
path = compilation_cache.enable()
import jax, jax.numpy as jnp
from grm_jax.config import load_config_file
from grm_jax.models import build_model, example_inputs

hits, logged = [], []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)

class Handler(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())

logger = logging.getLogger("jax._src.compiler")
logger.setLevel(logging.DEBUG)
logger.addHandler(Handler())

config = load_config_file(sys.argv[1] + "/configs/grm.py:tiny")
model = build_model(config)
z, x = example_inputs(config)
variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
variables = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.01, s.dtype), variables)

@jax.jit
def forward(variables, z, x):
    return model.apply(variables, z, x)["pred_boxes"]

box = forward(variables, z, x).block_until_ready()
print(json.dumps(dict(dir=str(path), hits=len(hits),
                      forward_hit=any("cache hit for 'jit_forward'" in m for m in logged),
                      forward_miss=any("CACHE MISS for 'jit_forward'" in m for m in logged),
                      box=box.tolist())))
"""


def _run(cache: pathlib.Path) -> dict:
    env = dict(os.environ, GRM_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache(tmp_path):
    cache = tmp_path / "xla"
    first = _run(cache)
    assert first["dir"] == str(cache)
    assert first["forward_miss"] and not first["forward_hit"]
    entries = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit_forward") for name in entries), entries

    second = _run(cache)
    assert second["forward_hit"] and not second["forward_miss"]
    assert second["hits"] >= 1
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new was compiled and written
    assert second["box"] == first["box"]  # the cached executable computes the same numbers


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    assert compilation_cache.cache_dir() == pathlib.Path(compilation_cache.DEFAULT_DIR).expanduser()
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "c"))
    assert compilation_cache.cache_dir() == tmp_path / "c"
    assert compilation_cache.cache_dir(tmp_path / "d") == tmp_path / "d"  # the argument wins
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.cache_dir() is None
    assert compilation_cache.enable() is None
