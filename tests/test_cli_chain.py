"""The scripts as a user runs them: preprocess -> train (R=2, 1 epoch) -> evaluate, in subprocesses."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_flags, run_dir_of

REPO = Path(__file__).resolve().parents[1]


def run(script, tiny_files, work, *flags):
    cmd = [sys.executable, str(REPO / script), *cli_flags(tiny_files, "tinycli", work), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=work.parent)


@pytest.mark.slow
def test_preprocess_train_evaluate(tiny_files, tmp_path):
    work = tmp_path / "work"
    prep = run("preprocess.py", tiny_files, work)
    assert prep.returncode == 0, prep.stderr
    assert "summary dataset=tinycli train_rows=64 test_rows=32" in prep.stdout
    train = run("train.py", tiny_files, work)
    assert train.returncode == 0, train.stderr
    assert "epoch=1/1 loss=" in train.stdout and "repetitions=0-1" in train.stdout
    again = run("train.py", tiny_files, work)  # the same settings again: nothing to do
    assert again.returncode == 0 and "already_trained repetitions=0-1" in again.stdout

    kernel = run("evaluate.py", tiny_files, work, "--sweep-R")
    assert kernel.returncode == 0, kernel.stderr
    assert "P@1" not in kernel.stderr and "nDCG" in kernel.stdout and "PSP" in kernel.stdout
    run_dir = run_dir_of(work, "tinycli")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["R"] == 2 and set(metrics["sweep_R"]) == {"1", "2"}
    assert 0 <= metrics["metrics"]["P@1"] <= 100 and metrics["metrics"]["rows"] == 32
    assert (run_dir / "sweep_R.png").stat().st_size > 0
    assert metrics["config"]["B"] == 8 and metrics["timings"]["samples_per_s"] > 0

    numpy = run("evaluate.py", tiny_files, work, "--impl", "numpy")
    assert numpy.returncode == 0, numpy.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"] == metrics["metrics"]


@pytest.mark.slow
def test_variants_get_their_own_runs_and_mismatches_are_refused(tiny_files, tmp_path):
    work = tmp_path / "work"
    assert run("preprocess.py", tiny_files, work).returncode == 0
    assert run("train.py", tiny_files, work).returncode == 0
    other = run("evaluate.py", tiny_files, work, "--set", "hidden=(32,)")
    assert other.returncode == 2 and "no model was trained with these settings" in other.stderr
    assert "--list` lists the runs" in other.stderr and "Traceback" not in other.stderr
    # A variant trains beside the first run, with no flag to ask for it, and without a second preprocess.
    assert run("train.py", tiny_files, work, "--set", "hidden=(32,)").returncode == 0
    # A tag still names a variant of the same settings.
    tagged = run("train.py", tiny_files, work, "--set", "tag=again")
    assert tagged.returncode == 0 and "R2-hidden16-batch_size16-epochs1-again" in tagged.stdout
    listed = run("evaluate.py", tiny_files, work, "--list")
    assert "R2-hidden16-batch_size16-epochs1 " in listed.stdout
    assert "R2-hidden32-batch_size16-epochs1 " in listed.stdout
    assert "R2-hidden16-batch_size16-epochs1-again " in listed.stdout
    # Naming a run whose model differs from the settings given is refused.
    named = "--set", "run=R2-hidden16-batch_size16-epochs1"
    mixed = run("evaluate.py", tiny_files, work, *named, "--set", "hidden=(32,)")
    assert mixed.returncode == 2
    assert (
        "cannot evaluate" in mixed.stderr and "hidden: trained with [16], now [32]" in mixed.stderr
    )


@pytest.mark.slow
def test_bad_data_is_a_clear_error_with_nothing_written(tiny_files, tmp_path):
    tiny_files["train"].write_text("2 30 50\n1,2 0:1\n3 4:x\n")
    work = tmp_path / "work"
    prep = run("preprocess.py", tiny_files, work)
    assert prep.returncode == 2
    assert f"{tiny_files['train']}:3: feature value 'x' is not a number" in prep.stderr
    assert not (work / "tinycli" / "tfrecords").exists()


@pytest.mark.slow
def test_multiclass_data_reports_top1_accuracy(tmp_path):
    """Every row has one label (as in the paper's ODP and ImageNet runs): evaluate adds top-1 accuracy."""
    from conftest import format_rows

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(96):
        label = int(rng.integers(50))
        rows.append(([label], {label % 30: 1.0, (7 * label + 3) % 30: 1.0}))
    files = {"train": tmp_path / "mc_train.txt", "test": tmp_path / "mc_test.txt"}
    files["train"].write_text(format_rows(rows[:64]))
    files["test"].write_text(format_rows(rows[64:]))
    work = tmp_path / "work"
    for script in ["preprocess.py", "train.py"]:
        assert run(script, files, work, "--set", "epochs=20", "--set", "lr=0.02").returncode == 0
    done = run("evaluate.py", files, work, "--set", "epochs=20", "--set", "lr=0.02")
    assert done.returncode == 0, done.stderr
    assert "top-1 accuracy" in done.stdout
    metrics = json.loads((run_dir_of(work, "tinycli") / "metrics.json").read_text())["metrics"]
    assert metrics["top1_accuracy"] == metrics["P@1"] > 20  # learnable: far above chance (2%)
