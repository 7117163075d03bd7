"""The one runner of the preprocess -> train -> evaluate chain, for reproduce.py and the benchmarks.

Each step runs as its own process (the entry scripts, exactly as a user runs them); the runner measures
its wall time and peak resident memory (wait4), and the figures come back from the files the scripts
write (train.json, metrics*.json), never from their log text.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mach.cli import config_from_args
from mach.files import read_json
from mach.presets import CLONE, load_presets


class StepError(RuntimeError):
    """A script of the chain failed (its exit code and log say why)."""


@dataclass
class Step:
    name: str
    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int  # of the step's own process (its tmux jobs, if any, are not its children)
    log: str | None  # where its output went; None = this process's stdout

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"peak_rss_gib": round(self.peak_rss_bytes / 2**30, 2)}


def script(name: str) -> list[str]:
    """The command of an entry script of this clone (preprocess, train, evaluate, export, predict)."""
    return [sys.executable, str(CLONE / f"{name}.py")]


def run_step(
    name: str,
    cmd: list[str],
    log_path: Path | None = None,
    env: dict | None = None,
    timeout_s: float | None = None,
    check: bool = True,
) -> Step:
    """Run one step; its output goes to log_path (appended) or passes through.

    check: a failing step raises StepError naming the step, its exit code and its log.
    """
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHON", sys.executable)  # train.sh runs its jobs with the same interpreter
    sys.stdout.flush()
    out = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "a")  # noqa: SIM115 - closed below
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
    start = time.time()
    try:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env
        )
        status, rusage = _wait(process, timeout_s)
    finally:
        if out is not None:
            out.close()
    wall = time.time() - start
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    rss = rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) if rusage else 0
    code = os.waitstatus_to_exitcode(status) if status is not None else 124
    step = Step(
        name, cmd, code, round(wall, 3), int(rss), None if log_path is None else str(log_path)
    )
    if check and code != 0:
        where = f"; its output is in {log_path}" if log_path else ""
        raise StepError(
            f"step={name} failed exit={code} after {wall:.0f}s{where}; fix the cause and run the "
            "same command again: finished work (TFRecords, trained repetitions) is kept"
        )
    return step


def _wait(process: subprocess.Popen, timeout_s: float | None):
    """(wait status, rusage) of the process, killed after timeout_s (status None)."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        pid, status, rusage = os.wait4(process.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, rusage
        if time.time() > deadline:
            process.kill()
            _, _, rusage = os.wait4(process.pid, 0)
            process.returncode = -9
            return None, rusage
        time.sleep(0.1)


def config_flags(
    cfg_name: str, work_dir: Path, sets: list[str], data_dir: Path | None = None
) -> list[str]:
    """The flags every script of the chain takes: --dataset, --work-dir, --data-dir, --set ..."""
    flags = ["--dataset", cfg_name, "--work-dir", str(work_dir)]
    flags += ["--data-dir", str(data_dir)] if data_dir is not None else []
    for pair in sets:
        flags += ["--set", pair]
    return flags


def chain_config(cfg_name: str, work_dir: Path, sets: list[str], data_dir: Path | None = None):
    """The Config the scripts resolve from config_flags(cfg_name, work_dir, sets, data_dir), with the
    sizes preprocess found (D, K, and B and epochs where chosen from the data): call it after
    preprocess, to find the run's train.json and metrics."""
    from mach.data.prepare import load_data_manifest, with_data_sizes  # imports TensorFlow

    args = argparse.Namespace(
        dataset=cfg_name,
        overrides=list(sets),
        work_dir=str(work_dir),
        data_dir=None if data_dir is None else str(data_dir),
    )
    cfg = config_from_args(args, *load_presets())
    return with_data_sizes(cfg, load_data_manifest(cfg))


def train_summaries(cfg) -> list[dict]:
    """train.json of repetitions 0..R-1 (what train.py wrote when each finished)."""
    return [read_json(cfg.ckpt_dir(r) / "train.json") for r in range(cfg.R)]


def examples_per_s(summary: dict) -> float:
    """Training rows per second of one repetition over all its epochs, from its train.json (of a
    run trained in one go: a resumed run's wall_s counts only the epochs of its last process)."""
    return summary["train_rows"] * summary["epochs"] / max(summary["wall_s"], 1e-9)


def read_metrics(cfg, name: str = "metrics.json") -> dict:
    """A metrics file of the run, as evaluate.py wrote it."""
    return read_json(cfg.run_dir() / name)


def dir_bytes(path: Path) -> int:
    """Bytes of the files under path."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def xc_to_vw(src: Path, dst: Path, bases: tuple[int, int] = (0, 0)) -> None:
    """xc rows `l1,l2 i:v ...` (after the header) as Vowpal Wabbit rows `l1,l2 | i:v ...`, ids
    counted from bases (first label id, first feature id), as a preset's files number them."""
    from mach.files import write_text_atomic

    label_base, feature_base = bases
    out = []
    with open(src, encoding="utf-8") as f:
        next(f)  # the header
        for line in f:
            labels, _, features = line.rstrip("\n").partition(" ")
            labels = ",".join(str(int(label) + label_base) for label in labels.split(",") if label)
            pairs = (pair.partition(":") for pair in features.split())
            shifted = " ".join(f"{int(i) + feature_base}:{v}" for i, _, v in pairs)
            out.append(f"{labels} | {shifted}")
    write_text_atomic(dst, "\n".join(out) + "\n")
