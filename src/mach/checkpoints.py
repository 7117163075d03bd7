"""A repetition's checkpoint directory on disk: its complete epochs, leftovers of killed saves, and a lock.

TensorFlow's `checkpoint` state file is only an index: when it is missing or garbled the ckpt-N files are
still intact, so the latest complete epoch is found from the files themselves.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path

from mach.files import pid_alive, write_text_atomic

_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_CKPT_DATA = re.compile(r"^ckpt-(\d+)\.data-(\d+)-of-(\d+)$")


def complete_epochs(ckpt_dir: Path) -> list[int]:
    """Epochs N whose ckpt-N.index and every ckpt-N.data-*-of-M shard exist, ascending."""
    if not ckpt_dir.is_dir():
        return []
    names = os.listdir(ckpt_dir)
    data: dict[int, tuple[set[int], int]] = {}
    for name in names:
        match = _CKPT_DATA.match(name)
        if match:
            shards, total = data.setdefault(int(match[1]), (set(), int(match[3])))
            shards.add(int(match[2]))
    epochs = []
    for name in names:
        match = _CKPT_INDEX.match(name)
        # A full disk can leave an empty index beside complete data files: that epoch is not saved.
        if match and int(match[1]) in data and (ckpt_dir / name).stat().st_size > 0:
            shards, total = data[int(match[1])]
            if len(shards) == total:
                epochs.append(int(match[1]))
    return sorted(epochs)


def checkpoint_prefix(ckpt_dir: Path, epoch: int) -> str:
    return str(ckpt_dir / f"ckpt-{epoch}")


def repair_state_file(ckpt_dir: Path, log) -> int | None:
    """Point the `checkpoint` state file at the latest complete epoch; returns it (None: no checkpoint).

    TensorFlow's CheckpointManager treats a missing or garbled state file as "no checkpoint", which
    would make a resumed run start over.
    """
    import tensorflow as tf

    epochs = complete_epochs(ckpt_dir)
    if not epochs:
        return None
    state = None
    try:
        state = tf.train.get_checkpoint_state(str(ckpt_dir))
    except (tf.errors.OpError, ValueError, UnicodeDecodeError):
        pass  # text_format.ParseError is a ValueError
    latest = checkpoint_prefix(ckpt_dir, epochs[-1])
    if state is None or Path(state.model_checkpoint_path).name != Path(latest).name:
        # The state file's text format, as CheckpointManager writes it (paths relative to the directory).
        lines = [f'model_checkpoint_path: "ckpt-{epochs[-1]}"']
        lines += [f'all_model_checkpoint_paths: "ckpt-{e}"' for e in epochs]
        write_text_atomic(ckpt_dir / "checkpoint", "\n".join(lines) + "\n")
        log(
            f"repaired={ckpt_dir / 'checkpoint'} latest=ckpt-{epochs[-1]} (state file was missing or stale)"
        )
    return epochs[-1]


def remove_unfinished_saves(ckpt_dir: Path) -> None:
    """Half-written saves of a killed run (`ckpt-N_temp/`, `checkpoint.tmp...`); they are never read."""
    if ckpt_dir.is_dir():
        for entry in ckpt_dir.iterdir():
            if entry.is_dir() and entry.name.endswith("_temp"):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith("checkpoint.tmp"):
                entry.unlink(missing_ok=True)


def remove_epoch_files(ckpt_dir: Path, epoch: int) -> None:
    """The files of checkpoint ckpt-N, complete or not (a save that failed half-way)."""
    for entry in ckpt_dir.glob(f"ckpt-{epoch}.*"):
        if _CKPT_INDEX.match(entry.name) or _CKPT_DATA.match(entry.name):
            entry.unlink(missing_ok=True)


def recover_interrupted_overwrite(ckpt_dir: Path, log) -> None:
    """Leftovers of an --overwrite run that died: its new directory (`.rNN.new-PID`) goes; an old
    model moved aside (`.rNN.replaced-PID`) comes back when nothing replaced it, else goes."""
    for entry in sorted(ckpt_dir.parent.glob(f".{ckpt_dir.name}.*-*")):
        kind, _, pid = entry.name.rpartition("-")
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        if kind.endswith(".replaced") and not ckpt_dir.exists():
            os.replace(entry, ckpt_dir)
            log(f"restored={ckpt_dir} (an interrupted --overwrite had moved it to {entry.name})")
        elif kind.endswith((".replaced", ".new")):
            shutil.rmtree(entry, ignore_errors=True)
            log(f"removed={entry} (left by an interrupted --overwrite)")


class RepetitionLock:
    """An exclusive lock on one repetition's checkpoints for the life of this process.

    flock locks vanish with their process, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, path: Path, what: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise ValueError(
                f"{what} is being trained by another process (pid {holder}, lock {path}); "
                "wait for it to finish or stop it (train.sh --stop), then run again"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
