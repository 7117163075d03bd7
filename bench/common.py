"""What the bench scripts share: best-of-n timing and the machine's name.

A bench script imports it as a sibling (`from common import machine`; bench/ is on sys.path when the
script runs as `python bench/<script>.py`), and mach as an installed package (`pip install -e .`).
"""

import os
import platform
import shutil
import subprocess
import time


def matmul_peak_gflops(repeats: int = 3) -> float:
    """GFLOP/s of one 2048 x 2048 float32 tf.matmul on this process's threads, best of repeats."""
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    return 2 * 2048**3 / best_seconds(lambda: tf.matmul(a, a).numpy(), repeats) / 1e9


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
