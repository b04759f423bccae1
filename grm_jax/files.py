"""Writing files so that none is ever half-written or wrongly private: a temporary file in the target folder,
fsync, the mode every new file gets (0666 less the umask; ``mkstemp`` alone would leave 0600), then
``os.replace`` onto the target. An interrupted write leaves the old file, or none, and no temporary behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def default_mode() -> int:
    """0666 & ~umask: the mode ``open(path, 'w')`` gives a new file. (Reads the umask by setting it back.)"""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_with(path: str | os.PathLike, write_fn: Callable[[str], None], suffix: str = ".tmp") -> None:
    """``write_fn(tmp_path)`` writes a temporary file next to ``path``, which then replaces ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_with` of a UTF-8 text with ``\\n`` line ends."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    atomic_write_with(path, write)
