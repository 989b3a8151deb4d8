"""Every file sensaudit reads is a regular file, and a file parsed whole has a size limit.

A FIFO (named pipe) blocks the reader until someone writes to it, ``/dev/zero`` or
``/dev/urandom`` never end, a terminal waits for typing: given as a config, a model, data or a
report folder's manifest, each one hung the run or read without bound. Opening by name and
checking afterwards would already block on a FIFO, so :func:`check_regular` stats the name
first (after symlinks: a link to a regular file is fine), and :func:`read_capped` opens
with ``O_NONBLOCK`` (which never blocks, even on a FIFO) and checks what it opened with
``fstat`` before reading a byte: the file read is the file checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sensaudit.core.errors import SensauditError

MAX_CONFIG_BYTES = 1 << 20  # a sensaudit config is a few KB; a 1 MiB one is not ours
MAX_MANIFEST_BYTES = 1 << 20  # a list of report file names


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refusal(path: Path, key: str, mode: int) -> str:
    return (f"{path}: {key} is {_kind(mode)}, not a regular file; sensaudit reads only "
            "regular files (write the content to a file)")


def check_regular(path: Path, key: str, error: type[SensauditError]) -> os.stat_result:
    """``path``'s stat if it is a regular file (through symlinks); else ``error`` naming the
    file and ``key`` (the setting or option that named it). Nothing is opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: file not found ({key})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({key}): {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(_refusal(path, key, info.st_mode))
    return info


def read_capped(path: Path, key: str, error: type[SensauditError], limit: int, *,
                follow_symlinks: bool = True) -> bytes:
    """The whole of the regular file ``path``, refused (``error``) if it is anything else or
    larger than ``limit`` bytes. ``follow_symlinks=False`` refuses a symlink too (a file
    sensaudit wrote itself, such as the manifest, is never one). An OSError from opening or
    reading (missing, permissions) is the caller's to word."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(_refusal(path, key, info.st_mode))
        if info.st_size > limit:
            raise error(f"{path}: {key} is {info.st_size:,} bytes; the limit is {limit:,}")
        # A file growing while it is read stops at the limit, too.
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: {key} is larger than {limit:,} bytes")
    return data


def refuse_special(path: Path, key: str, error: type[SensauditError]) -> None:
    """Refuse a FIFO, device or socket at ``path`` without opening it; a regular file, a
    folder or a missing path passes (the reader names those its own way)."""
    try:
        info = os.stat(path)
    except OSError:
        return
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise error(_refusal(path, key, info.st_mode))
