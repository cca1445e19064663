"""Tier 2: the benchmark guests behind bench/irq_latency.py, bench/gpu.py, bench/idle.py and bench/msi.py build and
report on vmmpy.

bench_irq and bench_gpu are rebuilt into a temporary directory with small iteration counts (IRQ_N, GPU_N), so
this stays quick;
the benchmarks themselves (and the QEMU comparison) are `make bench`.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from vmmpy import RunReason

from .conftest import ROOT

IRQ_N = 20
GPU_N = 3  # full frames per measurement; 10 * GPU_N small rectangles
IRQ_NAMES = {"timer_wfi", "timer_wfi_wake", "timer_spin", "ipi_wfi", "ipi_spin", "poll_spin", "ack_loop", "sgi_ack_eoi",
             "ts_counter", "ts_sgi", "ts_iar", "ts_eoi"}  # fmt: skip


def small_build(tmp_path_factory, name: str, var: str) -> str:
    build = tmp_path_factory.mktemp("guest") / "build"
    elf = build / f"{name}.elf"
    p = subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guest"), f"B={build}", var, str(elf)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return str(elf)


@pytest.fixture(scope="module")
def small_bench_irq(tmp_path_factory):
    return small_build(tmp_path_factory, "bench_irq", f"IRQ_N={IRQ_N}")


@pytest.fixture(scope="module")
def small_bench_gpu(tmp_path_factory):
    return small_build(tmp_path_factory, "bench_gpu", f"GPU_N={GPU_N}")


def test_bench_irq_reports_every_measurement(machine, small_bench_irq):
    m = machine(small_bench_irq, cpus=2)
    res = m.run(timeout=60)
    text = m.serial.text
    assert res.ok, (res, text[-2000:])
    assert "irq: 2 cpus" in text and "BENCH skip" not in text, text[-2000:]
    found = re.findall(r"BENCH name=(\w+) iters=(\d+) ticks=(\d+) freq=(\d+)", text)
    assert {n for n, *_ in found} == IRQ_NAMES
    for name in IRQ_NAMES:  # every measurement in each of the 3 repeats
        assert sum(n == name for n, *_ in found) == 3, name
    for name, iters, ticks, freq in found:
        assert int(iters) == (10 * IRQ_N if name in ("ack_loop", "sgi_ack_eoi") or name.startswith("ts_") else IRQ_N)
        assert int(freq) > 0
        assert int(ticks) > 0 or name in ("ack_loop", "ts_counter"), (name, ticks)
    assert re.findall(r"early (\d+)", text) == ["0"] * 9  # no timer interrupt before its deadline
    assert text.replace("\r", "").endswith("BENCH done\n")


def test_bench_gpu_reports_throughput(machine, small_bench_gpu):
    m = machine(small_bench_gpu, gpu=True, gpu_size=(320, 240))
    res = m.run(timeout=60)
    text = m.serial.text.replace("\r", "")
    assert res.ok, (res, text[-2000:])
    found = re.findall(r"BENCH name=(\w+) iters=(\d+) ticks=(\d+) freq=(\d+) bytes=(\d+)", text)
    expect = {"gpu_transfer_flush": (GPU_N, 320 * 240 * 4), "gpu_small_flush": (10 * GPU_N, 64 * 64 * 4)}
    assert sorted(n for n, *_ in found) == sorted(list(expect) * 3), text[-2000:]  # each in 3 repeats
    for name, iters, ticks, freq, nbytes in found:
        assert (int(iters), int(nbytes)) == expect[name]
        assert int(ticks) > 0 and int(freq) > 0
    assert m.screen.frames == 1 + 3 * 11 * GPU_N  # the first full frame, then every pair flushed
    assert text.endswith("BENCH done\nPASS bench_gpu\n"), text[-500:]


@pytest.mark.parametrize("name,ready", [("idle", "idle: ready, 100 Hz tick"), ("idle_notick", "idle: ready, no timer")])
def test_idle_guest_waits_until_stopped(machine, guest, name, ready):
    m = machine(guest(name))
    res = m.run(timeout=1.5)
    text = m.serial.text.replace("\r", "")
    assert res.reason == RunReason.TIMEOUT, res
    assert text.startswith(ready + "\n"), text
    if name == "idle":
        assert "idle: 100 ticks\n" in text  # 100 Hz: a report after the first second
    else:
        assert text == ready + "\n"


def test_bench_msi_reports_every_measurement(machine, guest):
    """bench/msi.py's guest: MSI-X of a virtio-rng-pci through the ITS, timed to the LPI handler."""
    m = machine(guest("bench_msi"), transport="pci", rng=True)
    res = m.run(timeout=60)
    text = m.serial.text
    assert res.ok and "PASS bench_msi" in text, (res, text[-2000:])
    assert "DeviceID 0x8 EventID 3 -> LPI 8195" in text
    found = re.findall(r"BENCH name=(\w+) iters=(\d+) ticks=(\d+) freq=(\d+)", text)
    assert sorted({n for n, *_ in found}) == ["msi_spin", "msi_wfi", "used_poll"]
    per = {n: [int(t) / int(i) for m_, i, t, _ in found if m_ == n] for n, *_ in found}
    assert all(len(v) == 5 and min(v) > 0 for v in per.values()), per
    # the device's part alone is quicker than the same request's MSI to the handler
    assert min(per["used_poll"]) < min(per["msi_spin"]), per
