"""What the absl entry points (``train.py``, ``eval.py``, ``python -m grm_jax.track``, ``python -m grm_jax.export``)
share: an ordinary mistake prints one ``error:`` line and exits non-zero, as the argparse ones do.

* Flag errors, including an unknown ``--config.a.b`` key (named, with the nearest valid keys), exit 2.
* ``app.UsageError`` from ``main`` exits 2; files that cannot be read, bad values, stale results and the other
  errors below (:data:`USER_ERRORS`) exit 1. ``GRM_JAX_TRACEBACK=1`` shows the whole traceback instead.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from grm_jax.config import load_config_file

EXIT_ERROR, EXIT_USAGE = 1, 2
TRACEBACK_ENV = "GRM_JAX_TRACEBACK"
#: Errors that mean bad input rather than a bug: their message is the whole report.
USER_ERRORS = (OSError, ValueError, LookupError, FloatingPointError)


def flatten_keys(config, prefix: str = "") -> list[str]:
    """Every leaf key of a ConfigDict as a dotted path (``model.embed_dim``, ``test.hyper.LASOT``, ...)."""
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys += flatten_keys(value, path + ".") if hasattr(value, "items") else [path]
    return keys


def config_error(argv: list[str], config_flag: str = "config", default: str | None = None) -> str | None:
    """What is wrong with ``--config`` in ``argv``: a config file that does not exist, or the first
    ``--config.path=…`` override that the file does not define (with the nearest keys); ``None`` if neither."""
    spec, overrides = None, []
    for i, arg in enumerate(argv[1:], 1):
        match = re.match(rf"--{config_flag}(=(.*))?$", arg)
        if match:
            spec = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
        match = re.match(rf"--{config_flag}\.([\w.]+)", arg)
        if match:
            overrides.append(match.group(1))
    if default is None and config_flag in flags.FLAGS:
        default = flags.FLAGS[config_flag].default_as_str
    spec = spec or (default.strip("'\"") if isinstance(default, str) else None)
    path = spec.split(":", 1)[0] if spec else None
    if path and not os.path.isfile(path):
        return f"config file {path} does not exist"
    try:
        config = load_config_file(spec) if spec else flags.FLAGS[config_flag].value
        keys = flatten_keys(config)
    except Exception:  # noqa: BLE001 - the original error is reported instead
        return None
    for path in overrides:
        if path not in keys:
            near = difflib.get_close_matches(path, keys, n=3, cutoff=0.5)
            return f"unknown config key {path}" + (f" (nearest: {', '.join(near)})" if near else "")
    return None


def define_config(default: str, help_string: str = "experiment config file", name: str = "config"):
    """``config_flags.DEFINE_config_file`` with the one-line errors: ml_collections reads ``--config.*``
    overrides from ``sys.argv`` already when the flag is defined, where an unknown key would be a traceback."""
    try:
        flag = config_flags.DEFINE_config_file(name, default, help_string)
    except Exception as err:  # noqa: BLE001
        if os.environ.get(TRACEBACK_ENV):
            raise
        _fail(f"{config_error(sys.argv, name, default) or _first_line(err)} (see --help)", EXIT_USAGE)
    main = sys.modules.get("__main__")
    asks_help = any(arg in ("--help", "--helpshort", "--helpfull", "-?") for arg in sys.argv[1:])
    if asks_help and main is not None and main.__doc__:
        main.__doc__ += config_help(default, name)  # absl's --help prints the main module's docstring
    return flag


def config_help(default: str, name: str = "config") -> str:
    """Every key of the default config as an override with its default value, for ``--help``."""
    try:
        config = load_config_file(default)
    except Exception:  # noqa: BLE001 - help without the list rather than no help
        return ""
    lines = [f"\n--{name} FILE[:ARG] selects an experiment config (default {default}); every key can be "
             f"overridden on the command line, e.g. --{name}.train.max_steps=100. Keys and their defaults there:\n"]
    for key in flatten_keys(config):
        value = config
        for part in key.split("."):
            value = value[part]
        lines.append(f"  --{name}.{key}={value!r}")
    return "\n".join(lines) + "\n"


def config_given(name: str = "config") -> bool:
    """Whether the command line chose the model config: ``--config`` or a ``--config.model.*`` override."""
    return flags.FLAGS[name].present or any(arg.startswith(f"--{name}.model.") for arg in sys.argv[1:])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors (exit 2)."""
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - flag and config-override errors of every kind
        if os.environ.get(TRACEBACK_ENV):
            raise
        message = config_error(argv) or _first_line(err)
        _fail(f"{message} (see --help)", EXIT_USAGE)


def run(main: Callable[[list[str]], int | None]) -> None:
    """``app.run(main)`` with the one-line errors of this module."""

    def guarded(argv):
        if "config" in flags.FLAGS:  # ml_collections defers override errors to the first access
            try:
                flags.FLAGS["config"].value.get("model")
            except Exception as err:  # noqa: BLE001
                if os.environ.get(TRACEBACK_ENV):
                    raise
                _fail(f"{config_error(sys.argv) or _first_line(err)} (see --help)", EXIT_USAGE)
        try:
            return main(argv)
        except app.UsageError as err:
            _fail(f"{err} (see --help)", EXIT_USAGE)
        except USER_ERRORS as err:
            if os.environ.get(TRACEBACK_ENV):
                raise
            _fail(f"{_first_line(err)}", EXIT_ERROR)

    app.run(guarded, flags_parser=parse_flags)


def _first_line(err: BaseException) -> str:
    """The error's message on one line: the last line of absl's chained flag errors, else all lines joined; a bare
    ``KeyError`` says which key is missing."""
    if isinstance(err, KeyError) and err.args:
        return f"missing key {err.args[0]!r}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if isinstance(err, flags.Error) else " ".join(lines)


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
