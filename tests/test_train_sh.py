"""train.sh on the CPU: R=2 jobs in tmux, both checkpoints written, a failing job reported by repetition."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="train.sh needs tmux (.ci/run installs it)"
)


def run_train_sh(tiny_files, work, *flags):
    extra = [
        "--",
        "--set",
        f"train_file='{tiny_files['train']}'",
        "--set",
        f"test_file='{tiny_files['test']}'",
        "--set",
        "B=8",
        "--set",
        "hidden=(8,)",
        "--set",
        "epochs=1",
        "--set",
        "batch_size=16",
    ]
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        [
            "bash",
            str(REPO / "train.sh"),
            "--dataset",
            "tinysh",
            "--R",
            "2",
            "--jobs",
            "2",
            "--work-dir",
            str(work),
            *flags,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_train_sh_runs_both_jobs_and_reports_a_failure(tiny_files, tmp_path):
    work = tmp_path / "work"
    done = run_train_sh(tiny_files, work, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started mach-tinysh-r00" in done.stdout and "started mach-tinysh-r01" in done.stdout
    run_dir = next((work / "tinysh").glob("B8-*"))
    for r in ["r00", "r01"]:
        assert (run_dir / "ckpt" / r / "checkpoint").is_file()
        assert "epoch=1" in (work / "tinysh" / "jobs" / f"{r}.log").read_text()

    # Corrupt repetition 1's lookup: its job must fail, the other must finish, --wait must name r=1.
    np.save(run_dir / "lookups" / "label_r01.npy", np.zeros(50, dtype=np.int32))
    failed = run_train_sh(tiny_files, work, "--wait", "--resume")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "r01 FAILED exit=2" in failed.stdout and "failed repetitions: 1" in failed.stdout
    assert "r00 done" in failed.stdout
    assert "does not match its checksum" in (work / "tinysh" / "jobs" / "r01.log").read_text()

    status = subprocess.run(
        [
            "bash",
            str(REPO / "train.sh"),
            "--dataset",
            "tinysh",
            "--work-dir",
            str(work),
            "--status",
        ],
        capture_output=True,
        text=True,
    )
    assert "r00 done" in status.stdout and "r01 FAILED" in status.stdout
