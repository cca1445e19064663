"""virtio-gpu 2D: transfer + flush throughput and per-command cost, and the host's frame capture cost.

Runs guest/build/bench_gpu.elf at 1280x800 on vmmpy (gpu=True) and on qemu-system-aarch64 (TCG, same ELF,
-device virtio-gpu-device on a non-legacy virtio-mmio transport) in one run, prints both side by side with
the ratio, and writes bench/results/gpu.json. The guest times with CNTVCT_EL0:
- gpu_transfer_flush: a 16x16 square of the framebuffer changes, then a full-frame TRANSFER_TO_HOST_2D +
  RESOURCE_FLUSH (one request each, polled); MB/s of pixels transferred and us per pair.
- gpu_small_flush: the same pair for a 64x64 rectangle: mostly the cost of two commands.
Frame capture (guest/build/gpu_demo.elf holding its frame 10, the guest still running):
- vmmpy: m.screen.capture() (a PIL RGB image), and lib.vmm_screen_capture() alone copying RGBA into a
  preallocated buffer (the C-level copy); median of --captures.
- QEMU: QMP `screendump` round trip (QEMU encodes PNG or PPM and writes a file; the image is not read back),
  and the same plus reading the PNG back as a PIL image (tools/qemu_ref.py's QemuGpu.screendump()).
  Not like-for-like: it includes image encoding and file I/O, which vmmpy's capture does not need.
Target: m.screen.capture() under 2 ms at 1280x800.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tools"))
import qemu_ref  # noqa: E402

W, H = 1280, 800
ORDER = ["gpu_transfer_flush", "gpu_small_flush"]
HOLD_FRAME = 10  # guest/gpu_demo.c
CAPTURE_TARGET_MS = 2.0
QEMU_GPU = ["-global", "virtio-mmio.force-legacy=false", "-device", f"virtio-gpu-device,xres={W},yres={H}"]


def times_ms(fn, n: int) -> list[float]:
    """Every one of n timed calls, ms, after a warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def keep_allocators_warm() -> bool:
    """Stop glibc malloc and Pillow from giving freed image-sized blocks back to the kernel, so a capture's
    4 MB buffers reuse mapped pages instead of faulting fresh ones in (costly in some VMs). Process-wide."""
    import ctypes

    from PIL import Image

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = all(libc.mallopt(k, v) for k, v in ((m_trim_threshold, 256 << 20), (m_top_pad, 64 << 20),
                                                 (m_mmap_threshold, 32 << 20)))  # fmt: skip
    except (OSError, AttributeError):
        return False
    Image.core.set_blocks_max(8)
    return bool(ok)


def vmmpy_capture(n: int) -> dict[str, float]:
    import vmmpy
    from vmmpy._ffi import ffi, lib

    with vmmpy.Machine(common.guest("gpu_demo"), gpu=True, gpu_size=(W, H)) as m:
        m.serial.expect(rf"gpu_demo: holding frame {HOLD_FRAME}", timeout=60)
        w, h = m.screen.size
        assert (w, h) == (W, H), (w, h)
        buf = bytearray(w * h * 4)
        cbuf = ffi.from_buffer(buf)
        pw, ph, pf = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint64_t *")

        def c_copy() -> None:
            rc = lib.vmm_screen_capture(m._vm, 0, cbuf, len(buf), pw, ph, pf)
            assert rc == 0, rc

        out = {
            "c_copy_ms": times_ms(c_copy, n),
            "capture_rgba_ms": times_ms(lambda: m.screen.capture_rgba(), n),
            "capture_ms": times_ms(lambda: m.screen.capture(), n),
        }
        if keep_allocators_warm():  # last: it changes this process for good
            out["capture_warm_ms"] = times_ms(lambda: m.screen.capture(), n)
        m.serial.write(b"c")  # let the guest go on and end
        m.wait(timeout=60)
        return out


def qemu_capture(n: int) -> dict[str, float]:
    with qemu_ref.QemuGpu(common.guest("gpu_demo"), xres=W, yres=H) as q:
        q.expect(rf"gpu_demo: holding frame {HOLD_FRAME}", 60)
        img = q.screendump()
        assert img.size == (W, H), img.size
        out = {}
        with tempfile.TemporaryDirectory(prefix="vmmpy-bench-") as d:
            for fmt in ("png", "ppm"):
                path = os.path.join(d, f"screen.{fmt}")
                out[f"qmp_screendump_{fmt}_ms"] = times_ms(
                    lambda fmt=fmt, path=path: q.qmp.execute("screendump", filename=path, format=fmt), n
                )
        out["screendump_pil_ms"] = times_ms(q.screendump, n)
        q.write(b"c")
        q.expect(r"PASS gpu_demo", 60)
        q.wait(60)
        return out


# issue 14: full-frame transfer+flush <= 1.0x QEMU TCG's time; capture < 2 ms
FLUSH_TARGET = 1.0
CAPTURE_ROWS = [  # (row, vmmpy key, QEMU key): vmmpy's capture vs the nearest QEMU path (not like-for-like)
    ("capture_pil", "capture_ms", "screendump_pil_ms"),
    ("capture_rgba", "capture_rgba_ms", "qmp_screendump_png_ms"),
    ("capture_c_copy", "c_copy_ms", "qmp_screendump_ppm_ms"),
    ("capture_warm_malloc", "capture_warm_ms", None),
]


def build(
    runs: dict[str, list[dict[str, float]]],
    nbytes: dict[str, int],
    cap_v: dict[str, list[float]],
    cap_q: dict[str, list[float]],
    config: dict | None = None,
) -> dict:
    """The record: runs = each whole-guest run's raw ns/iteration per peer ("vmmpy", "qemu"); cap_*: every
    capture / screendump time, ms."""

    def per_run(peer: str, k: str, f) -> list[float]:
        return [f(r[k]) for r in runs.get(peer, []) if r.get(k)]

    rows = []
    for k in ORDER:
        rows.append(
            common.row(
                f"{k}_us",
                "us",
                per_run("vmmpy", k, lambda v: v / 1e3),
                {"qemu": per_run("qemu", k, lambda v: v / 1e3)},
                target={"ratio": FLUSH_TARGET} if k == "gpu_transfer_flush" else None,
                note="time per TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pair",
            )
        )
    for k in ORDER:
        if k in nbytes:
            mbs = lambda v, b=nbytes[k]: b * 1e3 / v  # noqa: E731
            rows.append(
                common.row(
                    f"{k}_mbs",
                    "MB/s",
                    per_run("vmmpy", k, mbs),
                    {"qemu": per_run("qemu", k, mbs)},
                    direction="higher",
                    stat="max",  # the fastest run, as the time rows keep the quickest
                )
            )
    for name, kv, kq in CAPTURE_ROWS:
        if cap_v.get(kv):
            rows.append(
                common.row(
                    name,
                    "ms",
                    cap_v[kv],
                    {"qemu": cap_q.get(kq, []) if kq else []},
                    stat="median",
                    target={"value": CAPTURE_TARGET_MS} if name == "capture_pil" else None,
                )
            )
    return common.record(
        "gpu",
        f"virtio-gpu 2D at {W}x{H}: transfer + flush, frame capture",
        rows,
        config={"size": [W, H], **(config or {})},
        extra={"raw_ns_per_iter": runs, "bytes_per_iter": nbytes},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="whole-guest runs per VMM (the minimum is kept)")
    ap.add_argument("--captures", type=int, default=200, help="vmmpy captures timed (the median is kept)")
    ap.add_argument("--screendumps", type=int, default=20, help="QEMU screendumps timed per kind (median)")
    args = ap.parse_args()
    elf = common.guest("bench_gpu")
    peers = {
        "vmmpy": lambda: common.run_vmmpy(elf, gpu=True, gpu_size=(W, H)),
        "qemu": lambda: common.run_qemu(elf, extra=QEMU_GPU),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    raw: dict[str, dict[str, float]] = {name: {} for name in peers}
    nbytes: dict[str, int] = {}
    t0 = time.monotonic()
    for _ in range(args.runs):  # interleave the peers so machine noise hits both alike
        for name, fn in peers.items():
            out = fn()
            runs[name].append(common.parse(out))
            for k, v in common.parse(out).items():
                raw[name][k] = min(raw[name].get(k, float("inf")), v)
            nbytes.update(common.parse_bytes(out))
    us = {p: {k: v / 1e3 for k, v in r.items() if k in ORDER} for p, r in raw.items()}
    mbs = {p: {k: nbytes[k] * 1e3 / v for k, v in r.items() if k in nbytes and v} for p, r in raw.items()}

    print(f"virtio-gpu at {W}x{H}, in the guest (min of {args.runs} runs; {time.monotonic() - t0:.1f} s)")
    print("throughput, MB/s of pixels transferred (higher is better):")
    print(common.table([(k, mbs["vmmpy"].get(k), mbs["qemu"].get(k)) for k in ORDER], unit="MB/s"))
    print("time per TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pair (2 commands), us:")
    print(common.table([(k, us["vmmpy"].get(k), us["qemu"].get(k)) for k in ORDER], unit="us"))
    small = {p: us[p].get("gpu_small_flush") for p in peers}
    print("  per command (64x64 pair / 2): "
          + ", ".join(f"{p} {v / 2:.1f} us" for p, v in small.items() if v is not None))  # fmt: skip

    t1 = time.monotonic()
    cap_q = qemu_capture(args.screendumps)
    cap_v = vmmpy_capture(args.captures)
    med = {k: statistics.median(v) for k, v in {**cap_q, **cap_v}.items()}
    print(f"frame capture at {W}x{H}, ms (median; {time.monotonic() - t1:.1f} s):")
    rows = [
        ("capture (PIL RGB)", med["capture_ms"], med["screendump_pil_ms"]),
        ("raw (QMP: PNG file)", med["capture_rgba_ms"], med["qmp_screendump_png_ms"]),
        ("C copy (QMP: PPM file)", med["c_copy_ms"], med["qmp_screendump_ppm_ms"]),
    ]
    if "capture_warm_ms" in cap_v:
        rows.append(("capture, warm malloc", med["capture_warm_ms"], None))
    print(common.table(rows, unit="ms", digits=3))
    print("  vmmpy: m.screen.capture(), m.screen.capture_rgba() (bytes), lib.vmm_screen_capture() into a")
    print("  preallocated buffer. QEMU: QMP screendump round trips, which encode PNG/PPM and write a file")
    print("  (+ reading the PNG back for the PIL row): not like-for-like. 'warm malloc': glibc malloc and")
    print("  Pillow told to keep freed blocks (the default run pays page faults for fresh 4 MB buffers).")
    met = med["capture_ms"] < CAPTURE_TARGET_MS
    print(
        f"target: m.screen.capture() < {CAPTURE_TARGET_MS:g} ms at {W}x{H}: "
        f"{'met' if met else 'NOT met'} ({med['capture_ms']:.3f} ms)"
    )
    rec = build(
        runs, nbytes, cap_v, cap_q, {"runs": args.runs, "captures": args.captures, "screendumps": args.screendumps}
    )
    print(common.targets_line(rec))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
