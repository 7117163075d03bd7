"""Small file helpers: atomic writes, checksums, transparent .gz reading."""

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np


def open_bytes(path: Path) -> io.BufferedIOBase:
    """Open a file to read bytes, gunzipped when it is gzip-compressed (by content, not name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def open_text(path: Path) -> io.TextIOBase:
    """Open a UTF-8 text file to read, gunzipped as by open_bytes; a byte-order mark is dropped."""
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", newline=None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


# Leftovers of a process that died while writing: `.NAME.tmp-PID`, `.NAME.old-PID`.
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(\d+)$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_leftovers(directory: Path) -> list[Path]:
    """Remove the half-written files and directories that dead processes left in directory."""
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and int(match[2]) != os.getpid() and not pid_alive(int(match[2])):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(entry)
    return removed


def _write_atomic(path: Path, write) -> None:
    """write(file object) into a temporary file that replaces path only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        # A full disk or a crash leaves nothing behind; on a read-only disk there is nothing to remove.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.save(f, array))


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.savez(f, **arrays))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a completely written directory into place, replacing an older one."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_json_checked(path: Path, fix: str):
    """JSON written by this project; a damaged file is a ValueError naming it and the fix."""
    try:
        return read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged ({err.__class__.__name__}: {err}); {fix}") from None
