"""train.sh on the CPU: R=2 jobs in tmux, both checkpoints written, a failing job reported by repetition."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_dir_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="train.sh needs tmux (.ci/run installs it)"
)


def run_train_sh(tiny_files, work, *flags, r_flag=True):
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
            *(["--R", "2"] if r_flag else []),
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


@pytest.mark.slow
def test_train_sh_runs_both_jobs_and_reports_a_failure(tiny_files, tmp_path):
    work = tmp_path / "work"
    done = run_train_sh(tiny_files, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started mach-tinysh-" in done.stdout and "-r01 repetitions=1-1" in done.stdout
    # The hint reaches the same jobs: it carries --work-dir.
    assert (
        f"follow with: {REPO / 'train.sh'} --dataset tinysh --work-dir {work} --status"
        in done.stdout
    )
    done = run_train_sh(tiny_files, work, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = run_dir_of(work, "tinysh")
    for r in ["r00", "r01"]:
        assert (run_dir / "ckpt" / r / "checkpoint").is_file()
        assert "epoch=1" in (work / "tinysh" / "jobs" / f"{r}.log").read_text()

    # Launched again (without --R): the finished repetitions are left alone, byte for byte.
    before = {p: p.read_bytes() for p in (run_dir / "ckpt").glob("r*/*") if p.is_file()}
    again = run_train_sh(tiny_files, work, "--wait", r_flag=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "R=2 (from the last launch" in again.stdout
    assert {p: p.read_bytes() for p in (run_dir / "ckpt").glob("r*/*") if p.is_file()} == before
    assert (
        "already_trained repetitions=0 epochs=1"
        in (work / "tinysh" / "jobs" / "r00.log").read_text()
    )

    # Damage repetition 1's checkpoint (preprocess would repair a lookup): its job must fail, the
    # other must finish, --wait must name r=1.
    (run_dir / "ckpt" / "r01" / "ckpt-1.index").write_bytes(b"\0" * 40)
    failed = run_train_sh(tiny_files, work, "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "r01 FAILED exit=2" in failed.stdout and "failed repetitions: 1" in failed.stdout
    assert "r00 done" in failed.stdout
    assert "ckpt-1 cannot be read" in (work / "tinysh" / "jobs" / "r01.log").read_text()

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
    assert status.returncode == 1  # a failed job: --status says so in its exit code too


def train_sh(*args, env=None):
    return subprocess.run(
        ["bash", str(REPO / "train.sh"), *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_stop_touches_only_this_datasets_sessions_in_this_work_dir(tmp_path):
    work = tmp_path / "work"
    listed = train_sh("--dataset", "relt", "--work-dir", str(work), "--status")
    assert listed.returncode == 0 and f"no jobs of relt in {work}" in listed.stdout
    nothing = train_sh("--dataset", "relt", "--work-dir", str(work), "--stop")
    assert nothing.returncode == 0 and "no running jobs of relt" in nothing.stdout
    # Sessions of a dataset whose name starts the same, and of the same dataset elsewhere.
    work_id = subprocess.run(
        f"realpath -m '{work}' | cksum | awk '{{printf \"%06x\", $1 % 16777216}}'",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout
    others = [f"mach-relt-x-{work_id}-r00", "mach-relt-000000-r00"]
    mine = f"mach-relt-{work_id}-r00"
    for name in [*others, mine]:
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "sleep 60"], check=True)
    try:
        stopped = train_sh("--dataset", "relt", "--work-dir", str(work), "--stop")
        assert stopped.stdout.strip() == f"stopped {mine}"
        alive = subprocess.run(
            ["tmux", "list-sessions", "-F", "#{session_name}"], capture_output=True, text=True
        ).stdout.split()
        assert set(others) <= set(alive) and mine not in alive
    finally:
        for name in others:
            subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_bad_counts_and_help(tmp_path):
    for flag in ["--jobs", "--per-gpu", "--R"]:
        bad = train_sh(flag, "0", "--work-dir", str(tmp_path))
        assert bad.returncode == 2 and f"{flag} 0: expected a positive integer" in bad.stderr
    usage = train_sh("--help").stdout
    assert "set -euo" not in usage and "--overwrite" in usage


@pytest.mark.slow
def test_status_reads_the_logs_without_tmux(tmp_path):
    jobs = tmp_path / "work" / "relt" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "r00.job").write_text("0\n")
    (jobs / "r00.exit").write_text("0\n")
    (jobs / "r01.job").write_text("1\n")
    # Library noise after the epoch line must not be shown as the job's progress.
    (jobs / "r01.log").write_text(
        "epoch=1/3 loss=0.5 ex_per_s=900\nSharding callback duration: 15 microseconds\n"
    )
    bin_dir = tmp_path / "bin"  # a PATH with bash and the basics, but no tmux
    bin_dir.mkdir()
    for tool in [
        "bash",
        "cat",
        "tail",
        "tr",
        "basename",
        "realpath",
        "cksum",
        "awk",
        "sed",
        "grep",
    ]:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = dict(os.environ, PATH=str(bin_dir))
    status = train_sh(
        "--dataset", "relt", "--work-dir", str(tmp_path / "work"), "--status", env=env
    )
    assert status.returncode == 0, status.stderr
    assert "r00 done" in status.stdout and "r01 no exit code yet" in status.stdout
    assert status.stdout.rstrip().endswith("epoch=1/3 loss=0.5 ex_per_s=900")


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_with_tiny_shapes(tmp_path):
    """bench/gpu_check.sh packs 1 and 2 jobs on one device, evaluates, and writes its two reports."""
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        [
            "bash",
            str(REPO / "bench" / "gpu_check.sh"),
            "--tiny",
            "--out",
            str(tmp_path / "run"),
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert [row["jobs_on_one_device"] for row in report["train"]] == [1, 2]
    assert all(row["examples_per_s_per_job"] > 0 for row in report["train"])
    host, device = report["evaluate"]["host"], report["evaluate"]["device"]
    assert host["R"] == 2 and host["P@1"] is not None and device["P@1"] == host["P@1"]
    assert host["timings"]["merged_on"] == "host" and device["timings"]["merged_on"] != "host"
    assert "| 2 |" in (tmp_path / "gpu_check_tiny.md").read_text()
