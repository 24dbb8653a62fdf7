"""Writing outputs without ever leaving a half-written file, a half-replaced set of files, or silently
replacing one."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

from caffe2torch.errors import InputError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed onto it once fully written (removed on failure).

    An existing ``path`` is an error unless ``force``.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force (force=True from Python) to overwrite it")
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        # 0o666 minus the umask, like any new file (mkstemp would give 0o600).
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any, *, force: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically; an existing ``path`` only with ``force``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    with atomic_output(path, force=force) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def check_output_directory(directory: str | os.PathLike, names: Collection[str], *,
                           force: bool = False) -> Path:
    """Refuse, before any work is done, a directory that cannot receive the file set ``names``.

    Refused: '' (it would silently mean the current directory), an existing file, a mount point, a missing
    or read-only parent (the set is built beside the directory), and a non-empty directory, which only ``force`` lets
    us replace, and only when it holds nothing but ``names``: --force must never delete a user's own
    files (think ``-o .`` or ``-o ~``).  Returns the real path to write (symlinks resolved).
    """
    if os.fspath(directory) == "":
        raise InputError("the output directory is an empty string; give a directory name")
    target = Path(os.path.realpath(directory))
    try:
        if target.exists() and not target.is_dir():
            raise InputError(f"{directory} exists and is not a directory")
        if os.path.ismount(target):  # e.g. a Docker volume: it cannot be renamed
            raise InputError(f"{directory} is a mount point, which cannot be replaced as a whole; "
                             f"write to a folder inside it")
        if not target.parent.is_dir():
            raise InputError(f"{directory}: the folder {target.parent} does not exist")
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {directory}: no permission to create files in {target.parent}")
        present = sorted(os.listdir(target)) if target.exists() else []
    except OSError as error:
        raise InputError(f"cannot write {directory}: {error.strerror or error}") from None
    others = [name for name in present if not _is_ours(name, names)]
    if others:
        raise InputError(f"{directory} holds files caffe2torch did not write ({_listing(others)}); write to a "
                         f"new or empty directory (--force only replaces a previous output)")
    if present and not force:
        raise InputError(f"{directory} already holds {_listing(present)}; use --force (force=True from "
                         f"Python) to replace them")
    return target


def write_file_set(directory: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]], *,
                   force: bool = False, replaceable: Collection[str] = ()) -> dict[str, Path]:
    """Write a set of files into ``directory``, all or none: ``writers`` maps each file name to a function
    that writes the file at the path it is given.

    Everything is written into a temporary directory beside ``directory`` (same filesystem), which then
    takes its place in one atomic rename (a Linux renameat2 exchange when replacing a previous set), so
    that a crash or kill at any moment leaves the previous set or the new one, never a mix.  A previous set
    (``writers``' names, plus ``replaceable`` ones) is replaced only with ``force``; see
    :func:`check_output_directory` for what is refused.  Where the system has no atomic exchange, the old
    directory is renamed away before the new one is renamed in: a kill in between leaves no directory
    (the previous set waits, hidden, beside it until the next run removes it).
    A kill leaves a hidden temporary directory, which the next write to the same place removes.  A replaced
    directory is a new one: a shell that was inside the old one must cd into it again.
    """
    target = check_output_directory(directory, {*writers, *replaceable}, force=force)
    temporary = _temporary_beside(target)
    try:
        _remove_leftovers(target)
        os.mkdir(temporary)  # mode 0o777 minus the umask, like any new directory
        try:
            for name, write in writers.items():
                write(temporary / name)
            _move_into_place(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)  # an unfinished set, or the previous one swapped out
    except OSError as error:
        raise InputError(f"cannot write {directory}: {error.strerror or error}") from None
    return {name: Path(directory) / name for name in writers}


def _move_into_place(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; a previous ``target`` ends up at ``new`` or is removed."""
    if not target.exists():
        os.rename(new, target)
        return
    os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))  # keep the permissions given to the directory
    working_here = _is_working_directory(target)
    if not _exchange(new, target):
        aside = _temporary_beside(target)
        os.rename(target, aside)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    if working_here:
        os.chdir(target)  # follow the new directory rather than stay in the deleted one


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False where this system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's renameat2 (2.28+), or None off Linux or with an older C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _temporary_beside(target: Path) -> Path:
    """A fresh hidden name beside ``target`` that carries our pid, so a later run can tell it is stale."""
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmpdir"


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary directories that killed runs left beside ``target``."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)-[0-9a-f]{{8}}\.tmpdir")
    with os.scandir(target.parent) as entries:
        stale = [entry.path for entry in entries if (match := pattern.fullmatch(entry.name))
                 and entry.is_dir(follow_symlinks=False) and not _process_alive(int(match[1]))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if os.name == "nt" or pid <= 0:  # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _is_ours(name: str, names: Collection[str]) -> bool:
    """One of ``names``, or what an interrupted atomic_output of one of them left (older versions did)."""
    leftover = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp", name)
    return name in names or (leftover is not None and leftover[1] in names)


def _is_working_directory(path: Path) -> bool:
    try:
        return os.path.samefile(os.getcwd(), path)
    except OSError:
        return False


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
