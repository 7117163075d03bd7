"""Small file helpers: atomic writes, checksums, transparent .gz reading."""

import gzip
import hashlib
import io
import json
import os
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


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


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
