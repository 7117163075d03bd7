"""What the bench scripts share: the repository on sys.path, best-of-n timing, the machine's name.

A bench script imports it first (`import common`; bench/ is on sys.path when the script runs), then
config, mach and its sibling bench modules.
"""

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# config.py lives at the repository root, which is not on the path of a script run from bench/; src/ is
# there too for a checkout that was not installed with `pip install -e .`.
for _path in (REPO / "src", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of fn(), in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_name() -> str:
    """The CPU's model name, from lscpu where there is one."""
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line for a benchmark's header: 'CPU name, N cores'."""
    return f"{cpu_name()}, {os.cpu_count()} cores"
