"""Writing outputs without ever leaving a half-written file or silently replacing one."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from caffe2torch.errors import InputError


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
