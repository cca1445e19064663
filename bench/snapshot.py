"""Snapshots: Debian Linux from power-on to a shell answering `echo`, vs a restore to the same answer.

Side by side in one run (soft backend, real-time mode, the BusyBox shell initramfs of tools/initramfs.py):
- boot_answer: Machine() creation -> prompt -> `echo` typed -> its answer, for each of the booted VMs;
- save: vmm_snapshot_save of the first one, stopped at its prompt (512 MiB of RAM scanned, non-zero
  pages written);
- restore: Machine.restore() (the file mapped, the VM ready to execute its first instruction);
- restore_answer: Machine.restore() -> `echo` typed -> its answer;
- host memory (PSS growth of this process) of N VMs restored from the snapshot, each having answered,
  vs N booted VMs that answered.
Targets (issue 13): restore_answer <= 1/20 of boot_answer, restore < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402

CMDLINE = "console=ttyAMA0 earlycon=pl011,0x09000000 panic=-1"
ECHO = "echo snap-$((6 * 7))\n"
ANSWER = rb"snap-42\r?\n"


def pss_mib() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def answer(m, timeout: float) -> None:
    m.serial.type(ECHO)
    m.serial.expect(ANSWER, timeout=timeout)


def boot(kernel: str, cpio: str, cpus: int, ram: str, timeout: float, snapshot: str | None):
    """A booted VM that answered; (VM, seconds from creation to the answer, save seconds or None)."""
    import vmmpy

    t0 = time.perf_counter()
    m = vmmpy.Machine(kernel, cpus=cpus, ram=f"{ram}M", initrd=cpio, cmdline=CMDLINE)
    m.serial.expect(initramfs.PROMPT_RE, timeout=timeout)
    save = None
    if snapshot:
        t_stop = time.perf_counter()
        m.stop()
        t = time.perf_counter()
        m.snapshot(snapshot)
        save = time.perf_counter() - t
        m.start()
        t0 += time.perf_counter() - t_stop  # the boot figure leaves the stop and the save out
    answer(m, 60)
    return m, time.perf_counter() - t0, save


def restore(path: str):
    import vmmpy

    t0 = time.perf_counter()
    m = vmmpy.Machine.restore(path)
    t_restore = time.perf_counter() - t0
    answer(m, 60)
    return m, t_restore, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=10, help="VMs booted and restored for the memory figure (10)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--ram", default="512", help="MiB (default 512)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per boot to the prompt (default 300)")
    args = ap.parse_args()
    kernel = fetch_debian.kernel()
    cpio = initramfs.cached(shell=True)
    print(f"kernel {os.path.basename(kernel)}, initramfs {os.path.relpath(cpio, common.ROOT)}, {args.cpus} vCPUs, "
          f"{args.ram} MiB, {args.vms} VMs each way")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vmmpy-bench-snap-") as tmp:
        path = os.path.join(tmp, "linux.snap")
        boots, saves, pss0 = [], [], pss_mib()
        vms = []
        for i in range(args.vms):
            m, t, save = boot(kernel, cpio, args.cpus, args.ram, args.timeout, path if i == 0 else None)
            vms.append(m)
            boots.append(t * 1e3)
            if save is not None:
                saves.append(save * 1e3)
            print(
                f"  boot {i + 1}: answer after {t:.2f} s" + (f", save {save * 1e3:.0f} ms" if save else ""), flush=True
            )
        for m in vms:
            m.stop()
        booted_mib = pss_mib() - pss0
        for m in vms:
            m.close()
        size = os.path.getsize(path) / 2**20
        disk = os.stat(path).st_blocks * 512 / 2**20

        restores, answers, pss0 = [], [], pss_mib()
        vms = []
        for i in range(args.vms):
            m, t_restore, t_answer = restore(path)
            vms.append(m)
            restores.append(t_restore * 1e3)
            answers.append(t_answer * 1e3)
            print(f"  restore {i + 1}: {t_restore * 1e3:.1f} ms, answer after {t_answer * 1e3:.0f} ms", flush=True)
        for m in vms:
            m.stop()
        restored_mib = pss_mib() - pss0
        for m in vms:
            m.close()

    ratio = statistics.median(answers) / statistics.median(boots)
    rows = [
        common.row("boot_answer", "ms", boots, stat="median"),
        common.row("restore_answer", "ms", answers, stat="median"),
        common.row("answer_ratio", "x", [ratio], target={"value": 1 / 20}, note="restore_answer / boot_answer"),
        common.row("restore", "ms", restores, stat="median", target={"value": 50.0}),
        common.row("save", "ms", saves, stat="median", note=f"file {size:.0f} MiB ({disk:.0f} MiB allocated)"),
        common.row(f"mem_{args.vms}_booted", "MiB", [booted_mib], note="PSS growth, VMs paused after answering"),
        common.row(f"mem_{args.vms}_restored", "MiB", [restored_mib], note="PSS growth, VMs paused after answering"),
    ]
    rec = common.record(
        "snapshot",
        f"Debian Linux shell: boot vs snapshot restore to an echo answer, {args.cpus} vCPUs, {args.ram} MiB",
        rows,
        config={"cpus": args.cpus, "ram_mib": args.ram, "vms": args.vms, "kernel": os.path.basename(kernel)},
        baseline="qemu",
    )
    print(
        f"\nboot -> answer {statistics.median(boots):.0f} ms, restore -> answer {statistics.median(answers):.0f} ms "
        f"(1/{1 / ratio:.0f}); restore {statistics.median(restores):.1f} ms; save {saves[0]:.0f} ms; "
        f"file {size:.0f} MiB ({disk:.0f} MiB on disk)\n"
        f"host memory (PSS) of {args.vms} VMs: booted {booted_mib:.0f} MiB, restored {restored_mib:.0f} MiB"
    )
    print(common.targets_line(rec))
    out = common.save(rec)
    print(f"wrote {os.path.relpath(out, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
