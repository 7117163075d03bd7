"""Devices: thread and GPU memory settings, where each repetition runs, and the peak memory used.

Only train.sh picks GPUs (through CUDA_VISIBLE_DEVICES); Python places repetitions on what it sees.
"""

from __future__ import annotations

import resource
import sys

import tensorflow as tf


def configure_devices(cfg, log) -> None:
    """Use what CUDA_VISIBLE_DEVICES exposes; let several processes share one GPU.

    Must run before TensorFlow initialises. A second call in the same process (tests, notebooks)
    keeps the first call's settings when they differ, and says so, rather than failing.
    """
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if cfg.threads > 0:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
        for gpu in gpus:
            if cfg.gpu_memory_mb is not None:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=cfg.gpu_memory_mb)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as err:
        log(f"devices unchanged reason={str(err)!r} (TensorFlow was already initialised)")
    log(
        f"devices gpus={len(gpus)} threads={cfg.threads or 'all'} gpu_memory_mb={cfg.gpu_memory_mb or 'growth'}"
    )


def placement_devices() -> list[str]:
    """Devices to place repetitions on: the visible GPUs, else the logical CPU devices (one unless
    tf.config.set_logical_device_configuration split the CPU). Initialises TensorFlow."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def device_for(index: int, devices: list[str], R_per_device: int) -> str:
    """The device of the index-th repetition held at once: R_per_device per device in order, or all
    on the first device when R_per_device = 0."""
    if R_per_device == 0:
        return devices[0]
    slot = index // R_per_device
    if slot >= len(devices):
        raise ValueError(
            f"R_per_device={R_per_device} puts repetition {index} of the group on device {slot}, "
            f"but only {len(devices)} are visible ({', '.join(devices)}); raise R_per_device, lower "
            f"eval_group_size, or make more GPUs visible through CUDA_VISIBLE_DEVICES"
        )
    return devices[slot]


def check_placement(n: int, devices: list[str], R_per_device: int) -> None:
    """Raise the ValueError of device_for unless n repetitions at once fit on the devices."""
    if n > 0:
        device_for(n - 1, devices, R_per_device)


def peak_memory() -> dict:
    """Peak resident host memory of this process and TensorFlow's peak allocation per GPU, in bytes."""
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )
    peaks = {"peak_host_memory_bytes": int(rss)}
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        peaks["peak_gpu_memory_bytes"] = {
            f"GPU:{i}": int(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"])
            for i in range(len(gpus))
        }
    return peaks
