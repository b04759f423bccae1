"""What every command-line entry point shares: absl flags defined per call, and one-line errors.

Each entry point's ``main(argv=None) -> int`` runs :func:`call` (or :func:`dispatch`, for subcommands): its flags
are defined on a fresh :class:`absl.flags.FlagValues` and parsed from ``argv`` (``sys.argv`` when ``None``, the
program name first), so that ``main`` can be called from Python, again and with other arguments, in one process.
Positional arguments are passed on to the command. An ordinary mistake prints one ``error:`` line:

* Flag errors, including an unknown ``--config.a.b`` key (named, with the nearest valid keys), exit 2.
* ``app.UsageError`` from a command exits 2; files that cannot be read, bad values, stale results and the other
  errors below (:data:`USER_ERRORS`) exit 1. ``GRM_JAX_TRACEBACK=1`` shows the whole traceback instead.
* ``--help`` (``-h``) prints the module docstring and the flags (with a config, every ``--config.*`` override
  and its default too) and exits 0.
"""

from __future__ import annotations

import difflib
import os
import pathlib
import re
import sys
import types
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from grm_jax.config import load_config_file
from grm_jax.errors import CheckpointError, StaleResultsError

EXIT_ERROR, EXIT_USAGE = 1, 2
TRACEBACK_ENV = "GRM_JAX_TRACEBACK"
#: Errors that mean bad input rather than a bug: their message is the whole report.
USER_ERRORS = (OSError, ValueError, LookupError, FloatingPointError, CheckpointError, StaleResultsError)
#: What asks for the help text instead of running the command.
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
#: The repository root, where ``configs/`` is: default config files are found from any working directory.
ROOT = pathlib.Path(__file__).resolve().parents[1]

Define = Callable[[flags.FlagValues], None]
Body = Callable[[flags.FlagValues, list[str]], "int | None"]


class Exit(Exception):
    """Stops a command with an exit status, its message already printed; :func:`call` returns the status."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def call(argv: list[str] | None, define: Define, body: Body, doc: str | None, *, config: str | None = None,
         verbosity: bool = False) -> int:
    """One command run like ``app.run`` but callable again in the same process: the flags that ``define(fv)``
    defines on a fresh :class:`absl.flags.FlagValues`, parsed from ``argv`` (``sys.argv`` if ``None``, the program
    name first), then ``body(fv, args)`` with the positional arguments (the program name first). ``config``: a
    default config file (relative to the repository root), for an ml_collections ``--config`` flag and its
    ``--config.*`` overrides; ``verbosity``: a ``--verbosity`` (``-v``) flag for absl logging, warnings only unless
    given. Returns the exit status: ``body``'s (``None`` is 0), 0 after ``--help`` (``doc`` and the flags), 2 after
    a flag error or :class:`absl.app.UsageError`, 1 after one of :data:`USER_ERRORS`; errors as one ``error:``
    line."""
    argv = list(sys.argv if argv is None else argv)
    try:
        fv, args = parse(argv, define, doc, config=config, verbosity=verbosity)
        if verbosity:
            _start_logging(fv.verbosity)
        return _guarded(body, fv, args)
    except Exit as stop:
        return stop.code


def dispatch(argv: list[str] | None, commands: dict[str, Callable[[list[str]], int]], doc: str | None) -> int:
    """A command with subcommands: ``argv[1]`` names one of ``commands``, each a ``main(argv)``, which runs on
    the rest of ``argv`` with the program name ``"PROG NAME"``. ``--help`` before any name prints ``doc`` (exit 0);
    no name or an unknown one is one ``error:`` line (exit 2)."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in commands:
        return commands[argv[1]]([f"{argv[0]} {argv[1]}", *argv[2:]])
    if len(argv) > 1 and argv[1] in HELP_FLAGS:
        print((doc or "").rstrip())
        return 0
    problem = f"unknown command {argv[1]!r}" if len(argv) > 1 else "missing command"
    print(f"error: {problem} (one of: {', '.join(commands)}; see --help)", file=sys.stderr)
    return EXIT_USAGE


def parse(argv: list[str], define: Define, doc: str | None, *, config: str | None = None,
          verbosity: bool = False) -> tuple[flags.FlagValues, list[str]]:
    """``(flag values, positional arguments)`` of :func:`call`; raises :class:`Exit` after ``--help`` (0) and after
    a flag error (2, one line)."""
    fv = flags.FlagValues()
    define(fv)
    if verbosity:
        flags.DEFINE_integer("verbosity", -1, "absl logging verbosity: -1 warnings, 0 info, 1 debug", short_name="v",
                             flag_values=fv)
    if config is not None:
        _define_config(fv, argv, config)
        doc = (doc or "") + config_help(config)
    if any(arg in HELP_FLAGS for arg in _before_dashes(argv[1:])):
        print(help_text(fv, doc))
        raise Exit(0)
    try:
        args = fv(argv)
        if config is not None:  # ml_collections defers some override errors to the first access
            fv["config"].value.get("model")
    except Exception as err:  # noqa: BLE001 - flag and config-override errors of every kind
        _usage_error(err, argv, config)
    return fv, args


def help_text(fv: flags.FlagValues, doc: str | None) -> str:
    """``doc`` and every flag of ``fv`` with its help and default (absl's own ``--flagfile`` and ``--undefok`` left
    out)."""
    modules = [fv.module_help(module).strip().split("\n", 1) for module in fv.flags_by_module_dict()
               if module != "absl.flags"]
    return "\n".join([(doc or "").rstrip(), "", "flags:", *(lines[1] for lines in modules if len(lines) > 1)])


def no_arguments(args: list[str]) -> None:
    """A usage error (exit 2) unless ``args`` is the program name alone: for commands that take flags only."""
    if len(args) > 1:
        raise app.UsageError(f"unexpected arguments: {args[1:]}")


def namespace(fv: flags.FlagValues) -> types.SimpleNamespace:
    """The flag values as attributes, a ``-`` in a flag's name as ``_`` (``--dry-run`` → ``.dry_run``), for code
    that reads its options as attributes."""
    return types.SimpleNamespace(**{name.replace("-", "_"): fv[name].value for name in fv})


def fail(message: str, code: int):
    """Prints ``error: message`` and stops the command with exit status ``code`` (raises :class:`Exit`)."""
    print(f"error: {message}", file=sys.stderr)
    raise Exit(code)


def flatten_keys(config, prefix: str = "") -> list[str]:
    """Every leaf key of a ConfigDict as a dotted path (``model.embed_dim``, ``test.hyper.LASOT``, ...)."""
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys += flatten_keys(value, path + ".") if hasattr(value, "items") else [path]
    return keys


def config_error(argv: list[str], default: str, config_flag: str = "config") -> str | None:
    """What is wrong with ``--config`` in ``argv`` (``default`` when absent): a config file that does not exist, or
    the first ``--config.path=…`` override that the file does not define (with the nearest keys); ``None`` if
    neither."""
    spec, overrides = None, []
    for i, arg in enumerate(argv[1:], 1):
        match = re.match(rf"--{config_flag}(=(.*))?$", arg)
        if match:
            spec = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
        match = re.match(rf"--{config_flag}\.([\w.]+)", arg)
        if match:
            overrides.append(match.group(1))
    spec = spec or default
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        return f"config file {path} does not exist"
    try:
        keys = flatten_keys(load_config_file(spec))
    except Exception:  # noqa: BLE001 - the original error is reported instead
        return None
    for path in overrides:
        if path not in keys:
            near = difflib.get_close_matches(path, keys, n=3, cutoff=0.5)
            return f"unknown config key {path}" + (f" (nearest: {', '.join(near)})" if near else "")
    return None


def config_help(default: str, name: str = "config") -> str:
    """Every key of the default config as an override with its default value, for ``--help``."""
    try:
        config = load_config_file(default_config_path(default))
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


def config_given(fv: flags.FlagValues, name: str = "config") -> bool:
    """Whether the command line chose the model config: ``--config`` or a ``--config.model.*`` override (each
    override is a flag of its own, defined by ml_collections while parsing)."""
    return bool(fv[name].present) or any(key.startswith(f"{name}.model.") and fv[key].present for key in fv)


def default_config_path(default: str) -> str:
    """A default config spec (``FILE[:ARG]``, relative to the repository root) with its file made absolute."""
    return str(ROOT / default)


def _define_config(fv: flags.FlagValues, argv: list[str], default: str, name: str = "config") -> None:
    """The ml_collections ``--config`` flag on ``fv``, reading its ``--config.*`` overrides from ``argv``: it
    loads the default file (and applies the overrides) already here, so an unknown key is an error here."""
    try:
        config_flags.DEFINE_config_file(name, default_config_path(default), "experiment config file FILE[:ARG] (see "
                                        "above)", flag_values=fv, sys_argv=argv)
    except Exception as err:  # noqa: BLE001 - config-override errors of every kind
        _usage_error(err, argv, default)


def _usage_error(err: Exception, argv: list[str], config: str | None) -> None:
    """A flag or config-override error as one line naming the unknown config key if there is one (exit 2)."""
    if os.environ.get(TRACEBACK_ENV):
        raise err
    message = config is not None and config_error(argv, default_config_path(config)) or one_line(err)
    fail(f"{message} (see --help)", EXIT_USAGE)


def _start_logging(verbosity: int) -> None:
    """absl logging as ``app.run`` sets it up: absl's handler, on stderr, at ``verbosity``."""
    if not flags.FLAGS.is_parsed():  # absl's handler reads the global flags, which no entry point parses
        flags.FLAGS.mark_as_parsed()
    logging.use_absl_handler()
    logging.set_verbosity(verbosity)


def _guarded(body: Body, fv: flags.FlagValues, args: list[str]) -> int:
    """``body(fv, args)`` with its usage and user errors as one line (see :func:`call`)."""
    try:
        return body(fv, args) or 0
    except app.UsageError as err:
        fail(f"{err} (see --help)", EXIT_USAGE)
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(one_line(err), EXIT_ERROR)


def _before_dashes(args: list[str]) -> list[str]:
    """The arguments before ``--`` (after it, everything is positional)."""
    return args[:args.index("--")] if "--" in args else args


def one_line(err: BaseException) -> str:
    """The error's message on one line: the last line of absl's chained flag errors, else all lines joined; a bare
    ``KeyError`` says which key is missing."""
    if isinstance(err, KeyError) and err.args:
        return f"missing key {err.args[0]!r}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if isinstance(err, flags.Error) else " ".join(lines)
