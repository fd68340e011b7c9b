"""Files written whole or not at all: a reader (or a crash) sees the old file or the new one,
never half of either. Every file lal writes goes through here: run.json, checkpoints, the
report, pictures, exported folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lal_core.errors import CheckpointError


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)`, fsync, then rename over `path`: readers see the old or the new file whole.

    On any failure (a full disk, say) the temp file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # Normal permissions (mkstemp makes 0600), set after writing: safetensors writes a temp
        # file of its own and renames it over this one.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a new folder beside `out`, fsync its files, then move it into place
    (replacing `out` if it exists): `out` is the old folder or the new one, whole. On any failure
    the new folder is removed and `out` is left as it was."""
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700, safetensors 0600
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~_UMASK)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data
