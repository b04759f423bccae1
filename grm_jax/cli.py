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
from grm_jax.errors import CheckpointError

EXIT_ERROR, EXIT_USAGE = 1, 2
TRACEBACK_ENV = "GRM_JAX_TRACEBACK"
#: Errors that mean bad input rather than a bug: their message is the whole report.
USER_ERRORS = (OSError, ValueError, LookupError, FloatingPointError, CheckpointError)
#: What asks for the help text instead of running the command.
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


class Exit(Exception):
    """Stops a command with an exit status, its message already printed; :func:`call` returns the status."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def call(argv: list[str] | None, define: Callable[[flags.FlagValues], None],
         body: Callable[[flags.FlagValues, list[str]], int | None], doc: str | None) -> int:
    """One command run like ``app.run`` but callable again in the same process: the flags that ``define(fv)``
    defines on a fresh :class:`absl.flags.FlagValues`, parsed from ``argv`` (``sys.argv`` if ``None``, the program
    name first), then ``body(fv, args)`` with the positional arguments (the program name first). Returns the exit
    status: ``body``'s (``None`` is 0), 0 after ``--help`` (``doc`` and the flags), 2 after a flag error or
    :class:`absl.app.UsageError`, 1 after one of :data:`USER_ERRORS`; the errors as one ``error:`` line."""
    argv = list(sys.argv if argv is None else argv)
    try:
        fv, args = parse(argv, define, doc)
        return _guarded(body, fv, args)
    except Exit as stop:
        return stop.code


def parse(argv: list[str], define: Callable[[flags.FlagValues], None],
          doc: str | None) -> tuple[flags.FlagValues, list[str]]:
    """``(flag values, positional arguments)`` of :func:`call`; raises :class:`Exit` after ``--help`` (0) and after
    a flag error (2, one line)."""
    fv = flags.FlagValues()
    define(fv)
    if any(arg in HELP_FLAGS for arg in _before_dashes(argv[1:])):
        print(help_text(fv, doc))
        raise Exit(0)
    try:
        return fv, fv(argv)
    except flags.Error as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(f"{_first_line(err)} (see --help)", EXIT_USAGE)


def help_text(fv: flags.FlagValues, doc: str | None) -> str:
    """``doc`` and every flag of ``fv`` with its help and default (absl's own flags such as ``--flagfile`` left
    out)."""
    modules = [fv.module_help(module).strip().split("\n", 1) for module in fv.flags_by_module_dict()
               if module != "absl.flags"]
    return "\n".join([(doc or "").rstrip(), "", "flags:", *(lines[1] for lines in modules if len(lines) > 1)])


def fail(message: str, code: int):
    """Prints ``error: message`` and stops the command with exit status ``code`` (raises :class:`Exit`)."""
    print(f"error: {message}", file=sys.stderr)
    raise Exit(code)


def _guarded(body: Callable[[flags.FlagValues, list[str]], int | None], fv: flags.FlagValues,
             args: list[str]) -> int:
    """``body(fv, args)`` with its usage and user errors as one line (see :func:`call`)."""
    try:
        return body(fv, args) or 0
    except app.UsageError as err:
        fail(f"{err} (see --help)", EXIT_USAGE)
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(_first_line(err), EXIT_ERROR)


def _before_dashes(args: list[str]) -> list[str]:
    """The arguments before ``--`` (after it, everything is positional)."""
    return args[:args.index("--")] if "--" in args else args


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
