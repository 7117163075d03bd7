"""A trained model is never lost, a damaged input never gives a silent wrong number."""

import dataclasses
import json
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


@pytest.mark.slow
def test_another_model_in_the_same_run_is_refused_and_deletes_nothing(trained):
    cfg, manifest = trained
    before = checkpoint_bytes(cfg.ckpt_dir(0))
    other = dataclasses.replace(cfg, hidden=(8,), seed=3)
    with pytest.raises(ValueError, match=r"cannot resume .*hidden: trained with \[16\], now \[8\]"):
        train_repetitions(other, [0, 1], manifest, quiet)
    assert checkpoint_bytes(cfg.ckpt_dir(0)) == before


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
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


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_refused_with_the_file_named(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=1))
    train_repetitions(cfg, [0], manifest, quiet)
    (cfg.ckpt_dir(0) / "ckpt-1.index").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match=r"ckpt-1 cannot be read .*previous epoch, or retrain"):
        train_repetitions(dataclasses.replace(cfg, epochs=2), [0], manifest, quiet)


@pytest.mark.slow
def test_keep_checkpoints_0_keeps_every_epoch(tiny_cfg):
    cfg, manifest = preprocess(dataclasses.replace(tiny_cfg, epochs=3, keep_checkpoints=0))
    train_repetitions(cfg, [0], manifest, quiet)
    assert complete_epochs(cfg.ckpt_dir(0)) == [1, 2, 3]


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_truncated_shard_is_refused_by_training(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    shard = cfg.tfrecord_dir() / manifest["train"]["shards"][0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"has \d+ bytes, not \d+: the TFRecords are damaged"):
        train_repetitions(cfg, [0], manifest, quiet)


@pytest.mark.slow
def test_rows_read_are_checked_against_the_manifest(tiny_cfg):
    cfg, manifest = preprocess(tiny_cfg)
    lying = {**manifest, "train": {**manifest["train"], "rows": 65}}
    lying["train"].pop("sizes")
    # Rows held in memory are counted when they are read; streamed rows at the end of each epoch.
    with pytest.raises(ValueError, match=r"holds 64 training rows but should hold 65: a TFRecord"):
        train_repetitions(cfg, [0], lying, quiet)
    streamed = dataclasses.replace(cfg, shuffle_buffer=16)
    with pytest.raises(ValueError, match=r"epoch 1 read \d+ training rows but .* should hold 65"):
        train_repetitions(streamed, [0], lying, quiet)


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


@pytest.mark.slow
def test_train_py_refuses_b_larger_than_k_found_in_the_data(tiny_files, tmp_path):
    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinyrel", work, B=64)
    done = subprocess.run(
        [sys.executable, str(REPO / "preprocess.py"), *flags], capture_output=True, text=True
    )
    assert done.returncode == 2 and "B=64 is larger than the number of classes K=50" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_damaged_checkpoint_config_is_named(trained):
    from mach.identity import read_repetition_config

    cfg, _ = trained
    (cfg.ckpt_dir(0) / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"r00/config.json is damaged .*--overwrite"):
        read_repetition_config(cfg, 0)


@pytest.mark.slow
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


@pytest.mark.slow
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


# Damaged, stale or mixed artefacts, read-only disks and interrupted runs: each one case, each a
# one-line error naming the file and the fix (exit 2), or the right behaviour.


@pytest.fixture
def chain(tiny_files, tmp_path):
    """The scripts, in process, on the tiny dataset (R=2, 2 epochs): returns run(script, *flags)."""
    import evaluate
    import export
    import predict
    import preprocess
    import train

    scripts = {"preprocess": preprocess, "train": train, "evaluate": evaluate, "export": export}
    work = tmp_path / "work"
    flags = cli_flags(tiny_files, "tinyrel", work, epochs=2, threads=1)

    def run(script, *extra):
        if script == "predict":
            return predict.main(list(extra))
        return scripts[script].main([*flags, *extra])

    assert run("preprocess") == 0 and run("train") == 0
    run.work, run.flags, run.files = work, flags, tiny_files
    run.run_dir = run_dir_of(work, "tinyrel")
    return run


def one_line_error(capsys, *parts) -> str:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert "Traceback" not in err and last.startswith("error: "), err
    for part in parts:
        assert part in err, err
    return err


@pytest.mark.slow
def test_a_shard_with_flipped_bytes_is_named_and_preprocess_rewrites_it(chain, capsys):
    tfrecords = chain.work / "tinyrel" / "tfrecords"
    for split in ["train", "test"]:
        shard = tfrecords / f"{split}-00000.tfrecord"
        good = shard.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF  # same size: only the contents show the damage
        shard.write_bytes(bytes(data))
        script = "train" if split == "train" else "evaluate"
        extra = ["--overwrite"] if script == "train" else []
        assert chain(script, *extra) == 2
        one_line_error(capsys, str(shard), "the TFRecords are damaged", "preprocess.py")
        assert chain("preprocess") == 0
        assert "tfrecords=damaged files=" in capsys.readouterr().out
        assert shard.read_bytes() == good


@pytest.mark.slow
def test_predict_reports_a_truncated_gz_in_one_line(chain, tmp_path, capsys):
    import gzip

    cut = tmp_path / "rows.txt.gz"
    cut.write_bytes(gzip.compress(chain.files["train"].read_bytes())[:300])
    assert chain("predict", "--model", str(chain.run_dir), "--input", str(cut)) == 2
    one_line_error(capsys, str(cut), "damaged or cut short")
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--model", str(chain.run_dir)],
        input=cut.read_bytes(), capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert b"<stdin>: the compressed input is damaged or cut short" in done.stderr


@pytest.mark.slow
def test_predict_into_a_closed_pipe_stops_quietly(chain):
    rows = "".join(chain.files["train"].read_text().splitlines(True)[1:]) * 20  # no header
    command = f"'{sys.executable}' '{REPO / 'predict.py'}' --model '{chain.run_dir}' | head -1"
    done = subprocess.run(["bash", "-c", command], input=rows, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("\n") == 1
    assert "Error" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_damaged_savedmodel_or_its_metadata_is_one_line(chain, tmp_path, capsys):
    import shutil

    assert chain("export", "--out", str(tmp_path / "m")) == 0
    good = tmp_path / "m" / "1"
    rows = str(chain.files["train"])
    for damage in ["pb", "variables", "metadata"]:
        bad = tmp_path / damage
        shutil.copytree(good, bad)
        if damage == "pb":
            pb = bad / "saved_model.pb"
            pb.write_bytes(pb.read_bytes()[:100])
        elif damage == "variables":
            data = next((bad / "variables").glob("variables.data-*"))
            raw = bytearray(data.read_bytes())
            raw[40:44] = b"\xff\xff\xff\xff"
            data.write_bytes(bytes(raw))
        else:
            (bad / "assets.extra" / "mach.json").write_text('{"k": 5,\n')
        assert chain("predict", "--model", str(bad), "--input", rows) == 2
        one_line_error(capsys, str(bad), "export")
    (chain.run_dir / "ckpt" / "r00" / "config.json").write_text("{\n")
    assert chain("predict", "--model", str(chain.run_dir), "--input", rows) == 2
    one_line_error(capsys, "r00/config.json is damaged")


@pytest.mark.slow
def test_predict_lines_takes_an_empty_batch_and_blank_lines(chain, tmp_path):
    assert chain("export", "--out", str(tmp_path / "m")) == 0
    loaded = tf.saved_model.load(str(tmp_path / "m" / "1"))
    serve = loaded.signatures["predict_lines"]
    empty = serve(lines=tf.constant([], tf.string))
    assert empty["labels"].shape == (0, 5)
    blank = serve(lines=tf.constant(["", "   "]))
    assert blank["labels"].shape == (2, 5)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["preprocess", "train", "evaluate", "export", "predict"])
def test_a_read_only_disk_is_one_line_and_changes_nothing(
    chain, tmp_path, capsys, monkeypatch, script
):
    """Every write of the scripts fails as on a read-only file system (EROFS)."""
    import errno
    import shutil

    import mach.files
    import predict

    def read_only(path, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, mode, *args, **kwargs)

    for module in (mach.files, predict):
        monkeypatch.setattr(module, "open", read_only, raising=False)
    before = {p: p.stat().st_mtime_ns for p in chain.work.rglob("*") if p.is_file()}
    if script == "export":
        monkeypatch.setattr(
            tf.saved_model, "save", lambda *a, **k: (_ for _ in ()).throw(read_only("x", "w"))
        )
        code = chain("export", "--out", str(tmp_path / "m"))
    elif script == "predict":
        out = tmp_path / "top.jsonl"
        code = chain("predict", "--model", str(chain.run_dir), "--input", str(chain.files["test"]),
                     "--output", str(out))  # fmt: skip
        assert not out.exists()
    elif script == "train":
        shutil.rmtree(chain.run_dir / "ckpt" / "r01" / "weights")  # something left to write
        code = chain("train")
    else:
        code = chain(script)
    assert code == 2
    one_line_error(capsys, "read-only file system: cannot write", "on a writable disk")
    if script != "train":
        after = {p: p.stat().st_mtime_ns for p in chain.work.rglob("*") if p.is_file()}
        assert after == before


@pytest.mark.slow
def test_an_unfinished_run_with_repetitions_at_different_epochs_is_refused(chain, capsys):
    from mach import weights

    r01 = chain.run_dir / "ckpt" / "r01"
    manifest = weights.read_manifest(r01)
    del manifest["epochs"]["2"]  # r01 killed after epoch 1: r00 at 2, r01 at 1
    (r01 / "weights.json").write_text(json.dumps(manifest))
    rows = str(chain.files["test"])
    for script, extra in [
        ("evaluate", []),
        ("export", ["--out", str(chain.work / "m")]),
        ("predict", ["--model", str(chain.run_dir), "--input", rows]),
    ]:
        assert chain(script, *extra) == 2
        one_line_error(capsys, "unfinished", "r00: 2, r01: 1", "--epoch 1")
    assert chain("evaluate", "--epoch", "1") == 0
    assert json.loads((chain.run_dir / "metrics-epoch1.json").read_text())["epoch"] == 1


@pytest.mark.slow
def test_a_stale_checkpoint_state_file_changes_nothing(chain, capsys):
    assert chain("evaluate") == 0
    before = json.loads((chain.run_dir / "metrics.json").read_text())["metrics"]
    for r in range(2):
        state = chain.run_dir / "ckpt" / f"r{r:02d}" / "checkpoint"
        state.write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    assert chain("evaluate") == 0
    assert json.loads((chain.run_dir / "metrics.json").read_text())["metrics"] == before
    assert chain("train") == 0
    out = capsys.readouterr().out
    assert "already_trained repetitions=0-1" in out and "repaired=" in out


@pytest.mark.slow
def test_training_data_changed_under_the_same_name_is_refused(chain, capsys):
    from conftest import format_rows, make_rows

    chain.files["train"].write_text(format_rows(make_rows(64, seed=9)))
    assert chain("preprocess") == 0
    assert "tfrecords=stale" in capsys.readouterr().out
    for script in ["train", "evaluate"]:
        assert chain(script) == 2
        one_line_error(capsys, "trained on other data", "--overwrite")
    assert chain("train", "--overwrite") == 0 and chain("evaluate") == 0


@pytest.mark.slow
def test_a_full_disk_during_an_overwrite_keeps_the_old_model_and_leaves_nothing(
    chain, capsys, monkeypatch
):
    import errno

    r00 = chain.run_dir / "ckpt" / "r00"
    before = checkpoint_bytes(r00)

    def full(self, checkpoint_number=None):
        (Path(self.directory) / f"ckpt-{checkpoint_number}.index").write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device", self.directory)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    assert chain("train", "--overwrite") == 2
    one_line_error(capsys, "no space left on the device")
    assert checkpoint_bytes(r00) == before
    assert sorted(p.name for p in r00.parent.iterdir() if not p.name.endswith(".lock")) == [
        "r00",
        "r01",
    ]
    monkeypatch.undo()
    # A full disk while a plain run saves: no half-written checkpoint stays, and a rerun works.
    for p in r00.glob("ckpt-2.*"):
        p.unlink()
    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    assert chain("train") == 2
    assert not list(r00.glob("ckpt-2.*"))
    monkeypatch.undo()
    assert chain("train") == 0 and complete_epochs(r00)[-1] == 2


@pytest.mark.slow
def test_an_interrupted_overwrite_is_put_back(chain, capsys):
    import shutil

    r00 = chain.run_dir / "ckpt" / "r00"
    before = checkpoint_bytes(r00)
    dead = _dead_pid()
    shutil.move(r00, r00.with_name(f".r00.replaced-{dead}"))  # killed between the two renames
    (r00.parent / f".r01.new-{dead}").mkdir()  # and a new model that never saved
    assert chain("train") == 0
    out = capsys.readouterr().out
    assert f"restored={r00}" in out and "removed=" in out
    assert checkpoint_bytes(r00) == before
    assert sorted(p.name for p in r00.parent.iterdir() if not p.name.endswith(".lock")) == [
        "r00",
        "r01",
    ]


@pytest.mark.slow
def test_a_killed_grouped_evaluation_leaves_no_spill_behind(chain):
    spill = chain.run_dir / f".eval-logits.tmp-{_dead_pid()}"
    spill.mkdir()
    (spill / "logits_r0000.f32").write_bytes(b"\0" * 64)
    assert chain("evaluate", "--set", "eval_group_size=1") == 0
    assert not list(chain.run_dir.glob(".eval-logits*"))


@pytest.mark.slow
def test_a_damaged_weights_manifest_is_named_and_training_rewrites_it(chain, capsys):
    (chain.run_dir / "ckpt" / "r00" / "weights.json").write_text("{")
    assert chain("evaluate") == 2
    one_line_error(capsys, "r00/weights.json is damaged", "train.py command again")
    assert chain("train") == 0 and chain("evaluate") == 0


@pytest.mark.slow
def test_new_sizes_under_the_same_name_keep_the_old_models(chain, capsys):
    import gzip

    from conftest import format_rows, make_rows

    chain.files["train"].write_text(
        format_rows(make_rows(64, seed=1)).replace(" 30 50", " 30 60", 1)
    )
    with gzip.open(chain.files["test"], "wt") as f:
        f.write(format_rows(make_rows(32, seed=2)).replace(" 30 50", " 30 60", 1))
    assert chain("preprocess") == 2
    err = one_line_error(
        capsys, "the dataset changed under the name 'tinyrel'", "--dataset NEW_NAME"
    )
    assert "remove" not in err
