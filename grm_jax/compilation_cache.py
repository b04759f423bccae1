"""JAX's persistent compilation cache for the entry points: a second run of ``eval.py`` does not recompile.

``enable()`` points JAX at a cache directory (``$GRM_JAX_CACHE``, else ``~/.cache/grm_jax/xla``) and lowers the
thresholds that would otherwise skip small programs (JAX caches only programs that took ≥ 1 s to compile by
default; on a CPU the tracker's per-frame program and the tiny model's compile faster than that). Call it before
the first compilation, e.g. first thing in ``main()``. A program is found again when its HLO, the compile options,
the jaxlib version and the device are the same; XLA flags are part of the key.

``GRM_JAX_CACHE=off`` (or ``0``/``none``) disables it. Hits are logged by JAX at DEBUG level
("Persistent compilation cache hit for ...") and counted as the ``/jax/compilation_cache/cache_hits`` monitoring
event.
"""

from __future__ import annotations

import os
import pathlib

import jax

ENV = "GRM_JAX_CACHE"
DEFAULT_DIR = "~/.cache/grm_jax/xla"
_OFF = ("off", "0", "none", "false", "")


def cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The directory ``enable(cache_dir)`` uses: the argument, else ``$GRM_JAX_CACHE``, else the default;
    None when the environment variable switches the cache off."""
    if cache_dir is None:
        value = os.environ.get(ENV)
        if value is not None and value.strip().lower() in _OFF:
            return None
        cache_dir = value or DEFAULT_DIR
    return pathlib.Path(cache_dir).expanduser()


def enable(cache_dir: str | os.PathLike | None = None, min_compile_time_s: float = 0.0,
           min_entry_size_bytes: int = -1) -> pathlib.Path | None:
    """Turn on the persistent compilation cache in ``cache_dir`` (see :func:`cache_dir`); returns the directory,
    or None when disabled. Every program is cached by default: no minimum compile time, and no minimum entry size
    (-1 also stops JAX from substituting a file-system dependent minimum)."""
    path = globals()["cache_dir"](cache_dir)
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir not in (None, str(path)):
        # Already initialised for another directory in this process: start over with the new one.
        from jax._src import compilation_cache as _cc  # private JAX module: touched only in this rare case

        _cc.reset_cache()
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return path
