"""Input-to-guest latency: from a host key event to the guest's serial echo of it.

Runs guest/build/input_echo.elf (it polls its virtio-input eventq and prints every event on the PL011) on
vmmpy (Machine(input=True), real-time mode) and on qemu-system-aarch64 (TCG, the same ELF, with
-device virtio-keyboard-device and virtio-tablet-device on non-legacy virtio-mmio transports) in one run.
Each sample presses or releases the "a" key and waits until the echo line of that EV_KEY event appears:
- vmmpy: m.keyboard.press("a") / .release("a"), then the serial output is read until the line is there;
- QEMU: a QMP `input-send-event` (qcode "a", down true/false) round trip, then QEMU's stdout is read
  until the line is there.
Both include the host call that injects the event (QMP's is a socket round trip) and the console path
back; the guest side (notify, interrupt-free polling, printf over the PL011) is the same program.
Median, p90 and minimum over --events samples (default 400, at least 200), after a warm-up; prints the
ratio like the other benches and writes bench/results/input_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tools"))
import qemu_ref  # noqa: E402

KEY_A = 30
WARMUP = 20


def echo(value: int) -> bytes:
    return f"input: kbd type=1 code={KEY_A} value={value}".encode()


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_us": statistics.median(s) * 1e6,
        "p90_us": s[int(len(s) * 0.9)] * 1e6,
        "min_us": s[0] * 1e6,
        "n": len(s),
    }


def vmmpy_latency(n: int) -> list[float]:
    import vmmpy

    with vmmpy.Machine(common.guest("input_echo"), input=True) as m:
        m.serial.expect("input_echo: ready", timeout=60)
        out: list[float] = []
        for i in range(n + WARMUP):
            down = i % 2 == 0
            t = time.perf_counter()
            (m.keyboard.press if down else m.keyboard.release)("a")
            m.serial.expect(echo(1 if down else 0), timeout=10)
            dt = time.perf_counter() - t
            if i >= WARMUP:
                out.append(dt)
        if n % 2:  # leave the key up
            m.keyboard.release("a")
        m.keyboard.tap("esc")
        m.serial.expect("PASS input_echo", timeout=30)
        m.wait(timeout=30)
        return out


def qemu_command(elf: str, qmp_path: str) -> list[str]:
    q = common.qemu_binary()
    if not q:
        raise SystemExit("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    return [q, "-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-m", "256M", "-nographic",
            "-monitor", "none", "-serial", "stdio", "-semihosting", "-no-reboot",
            "-global", "virtio-mmio.force-legacy=false",
            "-device", "virtio-keyboard-device", "-device", "virtio-tablet-device",
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-kernel", elf]  # fmt: skip


def qemu_latency(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        qmp_path = os.path.join(d, "qmp.sock")
        with qemu_ref.QemuConsole(qemu_command(common.guest("input_echo"), qmp_path)) as q:
            q.expect("input_echo: ready", timeout=60)
            qmp = qemu_ref.Qmp(qmp_path)
            try:

                def key(name: str, down: bool) -> None:
                    event = {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": name}}}
                    qmp.execute("input-send-event", events=[event])

                out: list[float] = []
                for i in range(n + WARMUP):
                    down = i % 2 == 0
                    t = time.perf_counter()
                    key("a", down)
                    q.expect(echo(1 if down else 0), timeout=10)
                    dt = time.perf_counter() - t
                    if i >= WARMUP:
                        out.append(dt)
                if n % 2:
                    key("a", False)
                # the guest powers off at KEY_ESC: QEMU may exit before it answers
                with contextlib.suppress(OSError, qemu_ref.QemuError):
                    key("esc", True)
                q.expect("PASS input_echo", timeout=30)
                q.wait(timeout=30)
            finally:
                qmp.close()
            return out


def build(vmmpy_us: list[float], qemu_us: list[float], config: dict | None = None, note: str = "") -> dict:
    """Every key event's latency, us, per peer."""
    rows = [
        common.row(
            "key_to_echo",
            "us",
            vmmpy_us,
            {"qemu": qemu_us},
            stat="median",
            note="vmmpy: keyboard.press/release + serial read; QEMU: QMP input-send-event + stdout",
        )
    ]
    return common.record(
        "input_latency",
        "Input latency: host key event to the guest's serial echo",
        rows,
        config=config,
        extra={"note": note} if note else None,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400, help="key events timed per VMM (at least 200)")
    ap.add_argument("--no-qemu", action="store_true", help="vmmpy only")
    args = ap.parse_args()
    n = max(200, args.events)

    samples = {"vmmpy": vmmpy_latency(n)}
    qemu_note = ""
    if args.no_qemu:
        qemu_note = "QEMU skipped (--no-qemu)"
    elif not common.qemu_binary():
        qemu_note = "QEMU not installed (apt-get install qemu-system-arm)"
    else:
        try:
            samples["qemu"] = qemu_latency(n)
        except (qemu_ref.QemuError, SystemExit) as e:
            qemu_note = f"QEMU run failed: {e}"

    res = {k: summary(v) for k, v in samples.items()}
    print(f"input latency: key event -> guest serial echo, {n} events each (input_echo.elf)")
    q = res.get("qemu", {})
    print(
        common.table(
            [(f"{k.replace('_us', '')}", res["vmmpy"][k], q.get(k)) for k in ("median_us", "p90_us", "min_us")],
            unit="us",
        )
    )
    if qemu_note:
        print(f"  {qemu_note}")
    print("  vmmpy: m.keyboard.press/release + serial read; QEMU: QMP input-send-event round trip + stdout read")
    rec = build(
        [t * 1e6 for t in samples["vmmpy"]], [t * 1e6 for t in samples.get("qemu", [])], {"events": n}, qemu_note
    )
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
