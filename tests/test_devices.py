"""Device helpers: which device each repetition of a group runs on, settings, peak memory."""

import pytest
from conftest import quiet

from mach.devices import (
    check_placement,
    configure_devices,
    device_for,
    peak_memory,
    placement_devices,
)

DEVICES = ["/device:GPU:0", "/device:GPU:1", "/device:GPU:2"]


def test_R_per_device_fills_devices_in_order():
    assert [device_for(j, DEVICES, 2) for j in range(6)] == [
        DEVICES[0],
        DEVICES[0],
        DEVICES[1],
        DEVICES[1],
        DEVICES[2],
        DEVICES[2],
    ]
    assert [device_for(j, DEVICES, 1) for j in range(3)] == DEVICES
    # 0: the whole group on the first device.
    assert {device_for(j, DEVICES, 0) for j in range(40)} == {DEVICES[0]}


def test_too_few_devices_is_a_clear_error():
    check_placement(6, DEVICES, 2)
    check_placement(0, DEVICES, 1)
    with pytest.raises(
        ValueError, match=r"R_per_device=2 puts repetition 6 of the group on device 3, "
    ):
        check_placement(7, DEVICES, 2)
    with pytest.raises(ValueError, match="only 3 are visible .*CUDA_VISIBLE_DEVICES"):
        device_for(3, DEVICES, 1)


def test_placement_devices_and_peak_memory(tiny_cfg):
    configure_devices(tiny_cfg, quiet)
    configure_devices(tiny_cfg, quiet)  # a second call in one process is harmless
    devices = placement_devices()
    assert devices and all(":GPU:" in d or ":CPU:" in d for d in devices)
    peaks = peak_memory()
    assert peaks["peak_host_memory_bytes"] > 10 * 2**20  # TensorFlow alone takes more than 10 MiB
    assert ("peak_gpu_memory_bytes" in peaks) == any(":GPU:" in d for d in devices)
