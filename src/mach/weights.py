"""A repetition's weights after each epoch, as verified NumPy files: what evaluation and prediction load.

    ckpt/r03/weights/epoch-007.npz    w0, b0, w1, b1, ... float32 (the network of mach.model.MachNet)
    ckpt/r03/weights.json             {"epochs": {"7": sha256, ...}, "policy": ..., "reason": ...}

Training writes one file per epoch (the TensorFlow checkpoints beside them add Adam's state, for
--resume, and are kept more sparingly). Reading them needs NumPy only, so predict.py starts without
TensorFlow. A file is listed in weights.json only once complete, and checked against its sha256 when read.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from mach.files import read_json_checked, save_npz_atomic, sha256_file, write_json_atomic

MANIFEST = "weights.json"
# keep_epoch_weights="auto" keeps every epoch while the run's files stay under both budgets, and at
# most AUTO_MAX_EPOCHS of them: past that, every n-th epoch and the last.
AUTO_MAX_BYTES = 4 * 2**30
AUTO_MAX_DISK_SHARE = 0.10
AUTO_MAX_EPOCHS = 10


def epoch_file(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / "weights" / f"epoch-{epoch:03d}.npz"


def keep_policy(
    setting: str, bytes_per_epoch: int, epochs: int, free_bytes: int
) -> tuple[str, str]:
    """("all", "last" or "every N", why) for keep_epoch_weights=setting; bytes_per_epoch covers all
    repetitions.

    auto keeps at most AUTO_MAX_EPOCHS epochs: small data trains many short epochs (enough for 100
    optimiser steps: 50 epochs of two steps at 333 rows), and writing each one's weights took up to
    twice as long as training them (experiments/training-floor)."""
    total = bytes_per_epoch * epochs
    size = f"{epochs} epochs x {bytes_per_epoch / 2**20:.1f} MiB = {total / 2**30:.2f} GiB"
    if setting != "auto":
        return setting, f"keep_epoch_weights={setting} ({size} for all epochs)"
    budget = min(AUTO_MAX_BYTES, AUTO_MAX_DISK_SHARE * free_bytes)
    every = math.ceil(epochs / AUTO_MAX_EPOCHS)
    if every == 1 and total <= budget:
        return "all", f"keep_epoch_weights=auto: all epochs fit ({size})"
    kept = sum(is_kept(f"every {every}", e, epochs) for e in range(1, epochs + 1))
    if every > 1 and kept * bytes_per_epoch <= budget:
        return f"every {every}", (
            f"keep_epoch_weights=auto: {kept} of {epochs} epochs, every {every} and the last "
            f"({kept * bytes_per_epoch / 2**30:.2f} GiB; all would be {size})"
        )
    return "last", (
        f"keep_epoch_weights=auto: all epochs would take {size}, over the budget of "
        f"{budget / 2**30:.2f} GiB (4 GiB and 10% of the free disk); only the last epoch is kept"
    )


def is_kept(policy: str, epoch: int, epochs: int) -> bool:
    """Whether training writes the weights after `epoch` (1-based) of `epochs` under policy ("last"
    writes each epoch and drops the one before, so an unfinished run has its latest)."""
    if policy.startswith("every "):
        return epoch % int(policy.split()[1]) == 0 or epoch == epochs
    return True


def read_manifest(ckpt_dir: Path) -> dict:
    path = ckpt_dir / MANIFEST
    if not path.exists():
        return {"epochs": {}}
    return read_json_checked(
        path, "run the same train.py command again: it rewrites it from the last checkpoint"
    )


def saved_epochs(ckpt_dir: Path) -> list[int]:
    return sorted(int(e) for e in read_manifest(ckpt_dir)["epochs"])


def save_epoch(
    ckpt_dir: Path, epoch: int, arrays: list[np.ndarray], policy: str, reason: str
) -> None:
    """Write the weights after `epoch`; with policy "last", drop the earlier epochs' files after."""
    path = epoch_file(ckpt_dir, epoch)
    save_npz_atomic(path, **{f"{'wb'[i % 2]}{i // 2}": a for i, a in enumerate(arrays)})
    manifest = read_manifest(ckpt_dir)
    manifest["epochs"][str(epoch)] = sha256_file(path)
    manifest.update(policy=policy, reason=reason)
    old = [int(e) for e in manifest["epochs"] if int(e) != epoch] if policy == "last" else []
    for e in old:
        del manifest["epochs"][str(e)]
    write_json_atomic(ckpt_dir / MANIFEST, manifest)
    for e in old:
        epoch_file(ckpt_dir, e).unlink(missing_ok=True)


def recover(ckpt_dir: Path, epoch: int, arrays_of, policy: tuple[str, str], log) -> None:
    """After a resume from the full checkpoint of `epoch`: weights.json lists the intact files of the
    epochs up to it (later ones are trained again), and the weights of `epoch` itself, re-written from
    the checkpoint (arrays_of()) when they are missing or damaged, or weights.json is."""
    try:
        listed = read_manifest(ckpt_dir)["epochs"]
    except ValueError:
        listed = {}
        log(
            f"repaired={ckpt_dir / MANIFEST} (it was damaged; the epochs before {epoch} are dropped)"
        )
    kept = {
        e: digest
        for e, digest in listed.items()
        if int(e) <= epoch
        and epoch_file(ckpt_dir, int(e)).is_file()
        and sha256_file(epoch_file(ckpt_dir, int(e))) == digest
    }
    damaged = sorted(int(e) for e in listed if int(e) <= epoch and e not in kept)
    if damaged:
        log(f"dropped_epoch_weights={damaged} dir={ckpt_dir} (missing or damaged files)")
    write_json_atomic(
        ckpt_dir / MANIFEST, {"epochs": kept, "policy": policy[0], "reason": policy[1]}
    )
    if str(epoch) not in kept:
        save_epoch(ckpt_dir, epoch, arrays_of(), *policy)


# Files this process has checked: (path, size, mtime_ns) -> sha256. An evaluation in chunks loads
# each group of repetitions once per chunk; the checksums are computed once.
_VERIFIED: dict[tuple, str] = {}


def load_epoch(ckpt_dir: Path, epoch: int, fix: str) -> list[np.ndarray]:
    """[w0, b0, w1, b1, ...] float32 after `epoch`, checked against weights.json; errors say `fix`."""
    manifest = read_manifest(ckpt_dir)
    path = epoch_file(ckpt_dir, epoch)
    expected = manifest["epochs"].get(str(epoch))
    if expected is None or not path.is_file():
        raise FileNotFoundError(f"no weights of epoch {epoch} at {path}; {fix}")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    if _VERIFIED[key] != expected:
        raise ValueError(
            f"{path} does not match its checksum in {ckpt_dir / MANIFEST} (damaged after training); {fix}"
        )
    with np.load(path) as saved:
        n = len(saved.files) // 2
        return [saved[f"{kind}{layer}"] for layer in range(n) for kind in "wb"]


def remove_all(ckpt_dir: Path) -> None:
    shutil.rmtree(ckpt_dir / "weights", ignore_errors=True)
    (ckpt_dir / MANIFEST).unlink(missing_ok=True)


def resolve_epoch(cfg, R: int, epoch: int | None) -> tuple[int, str]:
    """The epoch to evaluate for repetitions 0..R-1, and a note when the run is unfinished.

    epoch None: the last epoch (cfg.epochs) when every repetition has it, else the latest epoch they
    all share when they stand at the same one (an unfinished run, said so); repetitions at different
    epochs are refused rather than merged. A given epoch must exist for all of them; if not, the
    error says why (not trained that far, or not kept and by which setting).
    """
    saved = {r: saved_epochs(cfg.ckpt_dir(r)) for r in range(R)}
    untrained = [r for r, epochs in saved.items() if not epochs]
    if untrained:
        nothing = len(untrained) == R and not cfg.run_dir().exists()
        why = " (no model was trained with these settings" if nothing else " ("
        raise FileNotFoundError(
            f"repetitions {_list(untrained)} of {cfg.run_dir()} have no trained epoch{why}"
            f"{'; ' if nothing else ''}`python evaluate.py --dataset {cfg.name} --list` lists the "
            f"runs); train them with `python train.py --dataset {cfg.name} --repetitions "
            f"{_list(untrained, ',')}` and the same --set options"
        )
    if epoch is not None:
        missing = [r for r, epochs in saved.items() if epoch not in epochs]
        if missing:
            raise FileNotFoundError(_why_missing(cfg, missing[0], epoch, saved[missing[0]]))
        return epoch, "" if epoch == cfg.epochs else f"epoch {epoch} of {cfg.epochs}"
    latest = {r: epochs[-1] for r, epochs in saved.items()}
    if all(e >= cfg.epochs for e in latest.values()):
        return cfg.epochs, ""
    if len(set(latest.values())) > 1:
        common = set.intersection(*(set(e) for e in saved.values()))
        hint = (
            f"; or evaluate epoch {max(common)}, which all have, with --epoch {max(common)}"
            if common
            else ""
        )
        raise ValueError(
            f"the run {cfg.run_dir()} is unfinished and its repetitions stand at different epochs "
            f"({', '.join(f'r{r:02d}: {e}' for r, e in latest.items())} of {cfg.epochs}), which are "
            f"not merged: finish it with `python train.py --dataset {cfg.name}` and the same --set "
            f"options{hint}"
        )
    epoch = next(iter(latest.values()))
    return epoch, f"epoch {epoch} of {cfg.epochs}: training is unfinished"


def _list(rs: list[int], sep: str = ", ") -> str:
    return sep.join(map(str, rs))


def _why_missing(cfg, r: int, epoch: int, epochs: list[int]) -> str:
    where = f"repetition r={r} of {cfg.run_dir()} has no weights of epoch {epoch}"
    if epoch > max(epochs):
        return f"{where}: it is trained to epoch {max(epochs)} of {cfg.epochs}"
    reason = read_manifest(cfg.ckpt_dir(r)).get("reason", "")
    return (
        f"{where}; it kept epochs {', '.join(map(str, epochs))} ({reason}); train with --set "
        "keep_epoch_weights=all --overwrite to keep every epoch"
    )
