"""A trained model is never lost, a damaged input never gives a silent wrong number."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_flags, quiet, run_dir_of

from mach.checkpoints import RepetitionLock, complete_epochs
from mach.config import apply_overrides
from mach.data.prepare import prepare_lookups, prepare_tfrecords, with_data_sizes
from mach.training import train_repetitions

# Trains models or runs scripts: left out by `make test-fast`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def preprocess(cfg):
    manifest = prepare_tfrecords(cfg, quiet)
    cfg = with_data_sizes(cfg, manifest)
    prepare_lookups(cfg, quiet)
    return cfg, manifest


def checkpoint_bytes(ckpt_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ckpt_dir.iterdir()) if p.is_file()}


@pytest.fixture
def trained(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=2))
    train_repetitions(cfg, [0, 1], manifest, quiet)
    return cfg, manifest


def test_another_model_in_the_same_run_is_refused_and_deletes_nothing(trained):
    cfg, manifest = trained
    before = checkpoint_bytes(cfg.ckpt_dir(0))
    other = dataclasses.replace(cfg, hidden=(8,), seed=3)
    with pytest.raises(ValueError, match=r"cannot resume .*hidden: trained with \[16\], now \[8\]"):
        train_repetitions(other, [0, 1], manifest, quiet)
    assert checkpoint_bytes(cfg.ckpt_dir(0)) == before


def test_overwrite_keeps_the_old_model_until_the_new_one_saves_an_epoch(trained, monkeypatch):
    cfg, manifest = trained
    before = checkpoint_bytes(cfg.ckpt_dir(0))
    import mach.training

    def broken_step(*args):
        def step(batch):
            raise tf.errors.InvalidArgumentError(
                None, None, "the new setup fails in its first step"
            )

        return step

    monkeypatch.setattr(mach.training, "_make_train_step", broken_step)
    with pytest.raises(tf.errors.InvalidArgumentError):
        train_repetitions(dataclasses.replace(cfg, seed=5), [0], manifest, quiet, overwrite=True)
    assert checkpoint_bytes(cfg.ckpt_dir(0)) == before
    monkeypatch.undo()
    new = dataclasses.replace(cfg, seed=5)
    train_repetitions(new, [0], manifest, quiet, overwrite=True)
    assert checkpoint_bytes(cfg.ckpt_dir(0)) != before
    assert complete_epochs(cfg.ckpt_dir(0)) == [1, 2]
    leftovers = [p.name for p in cfg.ckpt_dir(0).parent.glob(".r00.*") if p.name != ".r00.lock"]
    assert leftovers == []  # neither copy is left behind


def test_resume_leaves_finished_repetitions_alone(trained):
    cfg, manifest = trained
    before = checkpoint_bytes(cfg.ckpt_dir(1))
    messages = []
    summaries = train_repetitions(cfg, [0, 1], manifest, messages.append)
    assert checkpoint_bytes(cfg.ckpt_dir(1)) == before
    assert any(m.startswith("already_trained repetitions=0-1 epochs=2") for m in messages)
    assert summaries[1]["epochs"] == 2 and summaries[1]["wall_s"] > 0  # the original train.json


@pytest.mark.parametrize(
    "state", [None, "garbage {{{ not a proto", 'model_checkpoint_path: "ckpt-9"\n']
)
def test_resume_recovers_from_a_missing_or_garbage_state_file(tiny_cfg, state):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=1))
    train_repetitions(cfg, [0], manifest, quiet)
    kept = checkpoint_bytes(cfg.ckpt_dir(0))["ckpt-1.index"]
    state_file = cfg.ckpt_dir(0) / "checkpoint"
    if state is None:
        state_file.unlink()
    else:
        state_file.write_text(state)
    messages = []
    train_repetitions(dataclasses.replace(cfg, epochs=2), [0], manifest, messages.append)
    assert "resumed_from_epochs=r0:1 (the last full checkpoints)" in messages
    assert checkpoint_bytes(cfg.ckpt_dir(0))["ckpt-1.index"] == kept
    assert complete_epochs(cfg.ckpt_dir(0)) == [1, 2]


def test_an_unreadable_checkpoint_is_refused_with_the_file_named(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=1))
    train_repetitions(cfg, [0], manifest, quiet)
    (cfg.ckpt_dir(0) / "ckpt-1.index").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match=r"ckpt-1 cannot be read .*previous epoch, or retrain"):
        train_repetitions(dataclasses.replace(cfg, epochs=2), [0], manifest, quiet)


def test_keep_checkpoints_0_keeps_every_epoch(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=3, keep_checkpoints=0))
    train_repetitions(cfg, [0], manifest, quiet)
    assert complete_epochs(cfg.ckpt_dir(0)) == [1, 2, 3]


def test_a_second_trainer_of_the_same_repetition_is_refused_with_the_holders_pid(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    lock = RepetitionLock(cfg.run_dir() / "ckpt" / ".r01.lock", "repetition r=1")
    try:
        with pytest.raises(
            ValueError, match=rf"being trained by another process \(pid {os.getpid()}"
        ):
            train_repetitions(cfg, [0, 1], manifest, quiet)
        assert not cfg.ckpt_dir(0).exists()  # refused before anything was written
    finally:
        lock.release()
    train_repetitions(cfg, [0, 1], manifest, quiet)  # free again once released


def test_a_truncated_shard_is_refused_by_training(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    shard = cfg.tfrecord_dir() / manifest["train"]["shards"][0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"has \d+ bytes, not \d+: the TFRecords are damaged"):
        train_repetitions(cfg, [0], manifest, quiet)


def test_rows_read_are_checked_against_the_manifest(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    lying = {**manifest, "train": {**manifest["train"], "rows": 65}}
    lying["train"].pop("sizes")
    with pytest.raises(ValueError, match=r"epoch 1 read \d+ training rows but .* should hold 65"):
        train_repetitions(cfg, [0], lying, quiet)


@pytest.mark.parametrize(
    "pair, message",
    [
        ("hidden=(0,)", "hidden=(0,): expected layer widths 1..1048576"),
        ("hidden=(-5,)", "hidden=(-5,): expected layer widths"),
        ("shuffle_buffer=0", "shuffle_buffer=0: expected at least 1"),
        ("keep_checkpoints=-1", "keep_checkpoints=-1: expected at least 0"),
        ("lr=-0.1", "lr=-0.1: expected a positive number"),
        ("threads=-1", "threads=-1: expected at least 0"),
        ("adam_epsilon=0", "adam_epsilon=0: expected a positive number"),
        ("tag='../x'", "tag='../x': expected letters, digits"),
        ("n_classes=10", "B=64 is larger than the number of classes K=10"),
        ("gpu_memory_mb=0", "gpu_memory_mb=0: expected None"),
    ],
)
def test_every_config_field_is_validated_with_key_and_range(pair, message):
    import config

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(config.BASE, ["B=64", pair])


def test_train_py_refuses_b_larger_than_k_found_in_the_data(tiny_files, tmp_path):
    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinyrel", work, B=64)
    done = subprocess.run(
        [sys.executable, str(REPO / "preprocess.py"), *flags], capture_output=True, text=True
    )
    assert done.returncode == 2 and "B=64 is larger than the number of classes K=50" in done.stderr
    assert "Traceback" not in done.stderr


def test_train_py_trains_a_variant_beside_the_model_and_overwrite_replaces_it(tiny_files, tmp_path):
    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinyrel", work)

    def script(name, *extra):
        return subprocess.run(
            [sys.executable, str(REPO / name), *flags, *extra], capture_output=True, text=True
        )

    assert script("preprocess.py").returncode == 0
    assert script("train.py").returncode == 0
    zero = script("evaluate.py", "--R", "0")
    assert zero.returncode == 2 and "--R 0: expected 1 <= R <= 2" in zero.stderr
    first = run_dir_of(work, "tinyrel")
    before = checkpoint_bytes(first / "ckpt" / "r00")
    variant = script("train.py", "--set", "hidden=(8,)")
    assert variant.returncode == 0 and "Traceback" not in variant.stderr
    assert (first.parent / f"{first.name.replace('hidden16', 'hidden8')}" / "ckpt" / "r00").is_dir()
    assert checkpoint_bytes(first / "ckpt" / "r00") == before  # the first model is untouched
    replaced = script("train.py", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert checkpoint_bytes(first / "ckpt" / "r00") != before
    assert np.array(complete_epochs(first / "ckpt" / "r00")).size


def test_damaged_label_counts_are_refused_and_preprocess_repairs_them(tiny_cfg):
    from mach.data.prepare import LABEL_COUNTS, load_label_counts

    cfg, manifest = preprocess(tiny_cfg)
    counts = cfg.tfrecord_dir() / LABEL_COUNTS
    good = counts.read_bytes()
    counts.write_bytes(good[:-8] + bytes(8))  # flipped bytes: still a valid .npy
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_label_counts(cfg, manifest)
    messages = []
    manifest = prepare_tfrecords(cfg, messages.append)
    assert "tfrecords=damaged files=train_label_counts.npy" in messages[-1]
    assert counts.read_bytes() == good
    assert load_label_counts(cfg, manifest).sum() > 0


def test_a_damaged_lookup_is_rebuilt_byte_for_byte_by_preprocess(tiny_cfg):
    from mach.data.prepare import load_lookups

    cfg, _ = preprocess(tiny_cfg)
    path = cfg.label_lookup_path(1)
    good = path.read_bytes()
    np.save(path, np.zeros(cfg.n_classes, dtype=np.int32))
    with pytest.raises(ValueError, match="does not match its checksum.*it rebuilds it"):
        load_lookups(cfg, 1)
    messages = []
    prepare_lookups(cfg, messages.append)
    assert any("lookup=damaged" in m and "label_r01.npy" in m for m in messages)
    assert "repaired=1" in messages[-1] and path.read_bytes() == good
    load_lookups(cfg, 1)


@pytest.mark.parametrize("which", ["lookups", "tfrecords"])
def test_a_damaged_manifest_is_named_or_rewritten(tiny_cfg, which):
    from mach.data.prepare import load_data_manifest, load_lookups

    cfg, _ = preprocess(tiny_cfg)
    folder = cfg.lookup_dir() if which == "lookups" else cfg.tfrecord_dir()
    (folder / "manifest.json").write_text('{"identity": ')
    if which == "lookups":
        with pytest.raises(ValueError, match=r"lookups/manifest.json is damaged"):
            load_lookups(cfg, 0)
    else:
        with pytest.raises(ValueError, match=r"tfrecords/manifest.json is damaged .*preprocess"):
            load_data_manifest(cfg)
        messages = []
        prepare_tfrecords(cfg, messages.append)  # preprocess rewrites a damaged data manifest
        assert "tfrecords=damaged_manifest" in messages[0]
        assert load_data_manifest(cfg)["train"]["rows"] == 64


def test_a_damaged_checkpoint_config_is_named(trained):
    from mach.identity import read_repetition_config

    cfg, _ = trained
    (cfg.ckpt_dir(0) / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"r00/config.json is damaged .*--overwrite"):
        read_repetition_config(cfg, 0)


def test_leftovers_of_dead_processes_are_removed_on_the_next_run(tiny_cfg):
    cfg, _ = preprocess(tiny_cfg)
    dead = _dead_pid()
    stale = cfg.dataset_dir() / f".tfrecords.tmp-{dead}"
    stale.mkdir()
    (stale / "train-00000.tfrecord").write_bytes(b"half")
    stale_npy = cfg.lookup_dir() / f".label_r00.npy.tmp-{dead}"
    stale_npy.write_bytes(b"half")
    alive = cfg.dataset_dir() / f".tfrecords.tmp-{os.getppid()}"  # a live process: kept
    alive.mkdir()
    messages = []
    prepare_tfrecords(cfg, messages.append)
    prepare_lookups(cfg, messages.append)
    assert not stale.exists() and not stale_npy.exists() and alive.exists()
    assert any(m.startswith("removed=") for m in messages)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_full_disk_is_one_clear_message_and_leaves_no_temporary_file(
    tiny_files, tmp_path, monkeypatch
):
    import errno

    import mach.files
    import preprocess as preprocess_script

    real = mach.files.np.save

    def full(f, array):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(f.name))

    monkeypatch.setattr(mach.files.np, "save", full)
    work = tmp_path / "work"
    code = preprocess_script.main(cli_flags(tiny_files, "tinyfull", work))
    monkeypatch.setattr(mach.files.np, "save", real)
    assert code == 2
    leftovers = [p for p in work.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    assert not (work / "tinyfull" / "tfrecords").exists()


def test_user_error_explains_a_full_disk():
    import errno

    from mach.cli import user_error

    message = user_error(OSError(errno.ENOSPC, "No space left on device", "/w/x.npy"))
    assert message.startswith("no space left on the device while writing /w/x.npy")
    tf_message = user_error(
        tf.errors.ResourceExhaustedError(
            None, None, "/w/ckpt-1_temp/part-0; No space left on device"
        )
    )
    assert "no space left on the device while writing /w/ckpt-1_temp/part-0" in tf_message
    assert user_error(KeyError("bug")) is None
