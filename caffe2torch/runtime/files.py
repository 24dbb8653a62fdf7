"""Writing results without ever leaving a half-written file or silently replacing one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from caffe2torch.errors import InputError


def write_json(path: str | Path, data: Any, *, force: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` via a temporary file in the same folder and a rename.

    An existing ``path`` is an error unless ``force``.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
