"""Atomic file writes (a reader, or a resumed job, never sees a half-written file), and JSON
objects read back with one clear error for a file that is not one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from wavediff.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside the target, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would.
        os.fchmod(fd, plain_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_file_mode() -> int:
    """The mode a plain open() gives a new file under the current umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON atomically. NaN and infinity are refused (ValueError naming the file and
    the field): Python would write them as bare NaN/Infinity, which no JSON reader accepts."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        found = _non_finite(obj)
        if found is None:  # not a number's fault (a circular reference)
            raise
        raise ValueError(f"{path}: {found[0] or 'the value'} is {found[1]}, which JSON cannot hold") from None
    atomic_write_bytes(path, (text + "\n").encode())


def _non_finite(obj: Any, where: str = "") -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN or infinite float in nested dicts and lists, if any."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in `path`; a ValueError naming the file and `what` it was meant to be otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object")
    return data
