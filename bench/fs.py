"""Filesystem and disk throughput from a Debian Linux guest: virtio-9p and virtio-blk, vmmpy vs QEMU TCG.

Same kernel (tools/fetch_debian.py), same initramfs (tools/initramfs.py with a benchmark /init and the
virtio_mmio, virtio_blk, 9pnet_virtio and 9p modules), same vCPU count, RAM and command line, in the
same run. Each runner boots once per device per run: a `blk` boot with a 64 MiB raw image as /dev/vda,
a `9p` boot with a fresh host directory shared as mount tag `share` (mounted with 9p2000.L,
msize=256 KiB, the default cache=none: every read and write goes to the host).

Measured inside the guest (the /init script), printed as `FSBENCH name=<n> bytes=<b> ms=<t>` (or
`ops=<n>`) lines that the host parses:

  blk_write   dd if=/dev/zero of=/dev/vda bs=1M count=32 oflag=direct conv=fsync
  blk_read    drop_caches, then dd if=/dev/vda of=/dev/null bs=1M count=32 iflag=direct
  p9_write    dd if=/dev/zero of=/mnt/s/big bs=1M count=32 conv=fsync
  p9_read     drop_caches, then dd if=/mnt/s/big of=/dev/null bs=1M
  p9_create   500 small files (`echo > f$i`, a shell builtin: no fork per file)
  p9_stat     `[ -f f$i ]` on each (builtin test: one stat() per file)
  p9_delete   one `rm -f` of all 500

Clock: the "now at <N> nsecs" line of /proc/timer_list (ktime_get(), monotonic, nanoseconds; one
awk per reading, which costs the same few ms on both sides and is part of the time). If that file
is missing the script falls back to /proc/uptime (10 ms), and says so with `FSBENCH-CLOCK uptime`.
Without --deterministic, the guest's counter follows host time on vmmpy as on QEMU.

With --transport pci both sides put the device on PCI instead (vmmpy: Machine(transport="pci"); QEMU:
virtio-blk-pci / virtio-9p-pci, modern only) and the initramfs adds virtio_pci; the record is `fs_pci`,
so `fs` (virtio-mmio) and `fs_pci` side by side compare the transports.

Throughput is MB/s (10^6 bytes/s), metadata is ops/s; the vmmpy/qemu column is a ratio of rates, so
above 1 means vmmpy is faster. A vmmpy side that fails (e.g. no virtio-9p yet) is reported with its
reason and the QEMU column is still measured.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402
import qemu_ref  # noqa: E402

MIB = 32  # size of the sequential transfers
NFILES = 500  # small files for the metadata ops
IMG_MIB = 64  # the raw disk image
MODULES = ["virtio_mmio", "virtio_blk", "9pnet_virtio", "9p"]
MODULES_PCI = [*MODULES, "virtio_pci"]
CMDLINE = qemu_ref.CMDLINE
MSIZE = 262144

# The kernel hands `fsbench=blk|9p` (unknown to it) to /init; the script reads it from /proc/cmdline.
FS_INIT = (
    """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
dmesg -n 1
/etc/vmmpy/load-modules > /dev/null
fail() { echo "FSBENCH-FAIL $*"; sync; poweroff -f; }
if [ -r /proc/timer_list ] && grep -q '^now at' /proc/timer_list; then
    now() { awk '/^now at/ { print $3; exit }' /proc/timer_list; }
else
    echo "FSBENCH-CLOCK uptime"
    now() { awk '{ split($1, a, "."); print a[1] * 1000000000 + a[2] * 10000000 }' /proc/uptime; }
fi
# report NAME KIND COUNT T0 T1: one FSBENCH line, ms with 3 decimals
report() {
    d=$(($5 - $4))
    echo "FSBENCH name=$1 $2=$3 ms=$((d / 1000000)).$(printf %03d $((d / 1000 % 1000)))"
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mode=$(sed -n 's/.*fsbench=\\([a-z0-9]*\\).*/\\1/p' /proc/cmdline)
echo "FSBENCH-START mode=$mode"
bytes=$((@MIB@ * 1048576))
case "$mode" in
blk)
    [ -b /dev/vda ] || fail "no /dev/vda (virtio_blk: $(grep -c virtio_blk /proc/modules) loaded)"
    t0=$(now); dd if=/dev/zero of=/dev/vda bs=1M count=@MIB@ oflag=direct conv=fsync 2>/dev/null \\
        || fail "dd write /dev/vda"; t1=$(now)
    report blk_write bytes $bytes $t0 $t1
    drop
    t0=$(now); dd if=/dev/vda of=/dev/null bs=1M count=@MIB@ iflag=direct 2>/dev/null \\
        || fail "dd read /dev/vda"; t1=$(now)
    report blk_read bytes $bytes $t0 $t1
    ;;
9p)
    mkdir -p /mnt/s
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=@MSIZE@ share /mnt/s \\
        || fail "mount -t 9p share (9pnet_virtio: $(grep -c 9pnet_virtio /proc/modules) loaded)"
    cd /mnt/s || fail "cd /mnt/s"
    t0=$(now); dd if=/dev/zero of=/mnt/s/big bs=1M count=@MIB@ conv=fsync 2>/dev/null \\
        || fail "dd write /mnt/s/big"; t1=$(now)
    report p9_write bytes $bytes $t0 $t1
    [ "$(wc -c < /mnt/s/big)" -eq $bytes ] || fail "big is $(wc -c < /mnt/s/big) bytes"
    drop
    t0=$(now); dd if=/mnt/s/big of=/dev/null bs=1M 2>/dev/null || fail "dd read /mnt/s/big"; t1=$(now)
    report p9_read bytes $bytes $t0 $t1
    rm -f /mnt/s/big
    mkdir /mnt/s/small || fail "mkdir small"
    cd /mnt/s/small
    t0=$(now); i=0
    while [ $i -lt @NFILES@ ]; do echo "small file $i" > f$i || fail "create f$i"; i=$((i + 1)); done
    t1=$(now)
    report p9_create ops @NFILES@ $t0 $t1
    drop
    t0=$(now); i=0
    while [ $i -lt @NFILES@ ]; do [ -f f$i ] || fail "stat f$i"; i=$((i + 1)); done
    t1=$(now)
    report p9_stat ops @NFILES@ $t0 $t1
    t0=$(now); rm -f f* || fail "rm"; t1=$(now)
    report p9_delete ops @NFILES@ $t0 $t1
    [ -z "$(ls)" ] || fail "files left after rm"
    cd /; rmdir /mnt/s/small; umount /mnt/s
    ;;
*) fail "unknown mode '$mode'" ;;
esac
echo "FSBENCH-DONE"
sync
poweroff -f
""".replace("@MIB@", str(MIB))
    .replace("@NFILES@", str(NFILES))
    .replace("@MSIZE@", str(MSIZE))
)

RESULT_RE = re.compile(rb"FSBENCH name=(\w+) (bytes|ops)=(\d+) ms=(\d+\.\d+)")
END_RE = rb"FSBENCH-(DONE|FAIL)([^\r\n]*)"
# (row, unit): what the table shows, in order
ROWS = [("blk_write", "MB/s"), ("blk_read", "MB/s"), ("p9_write", "MB/s"), ("p9_read", "MB/s"),
        ("p9_create", "ops/s"), ("p9_stat", "ops/s"), ("p9_delete", "ops/s")]  # fmt: skip


def build(
    vmmpy: list[dict[str, float]],
    qemu: list[dict[str, float]],
    config: dict | None = None,
    extra: dict | None = None,
    transport: str = "mmio",
) -> dict:
    """Each run's rates (rates()) on vmmpy and on QEMU; rows that vmmpy did not measure are left out."""
    rows = [
        common.row(
            k,
            u,
            [r[k] for r in vmmpy if k in r],
            {"qemu": [r[k] for r in qemu if k in r]},
            direction="higher",
            stat="median",
        )
        for k, u in ROWS
    ]
    name, on = ("fs", "") if transport == "mmio" else (f"fs_{transport}", f" on {transport}")
    title = f"Linux guest file I/O: virtio-blk and virtio-9p{on} (higher is better)"
    return common.record(name, title, rows, config=config, extra=extra)


class BenchFailed(Exception):
    pass


def rates(output: bytes) -> dict[str, float]:
    """name -> MB/s (bytes=) or ops/s (ops=) from the guest's FSBENCH lines."""
    out = {}
    for m in RESULT_RE.finditer(output):
        ms = float(m.group(4))
        n = int(m.group(3))
        if ms <= 0:
            continue
        out[m.group(1).decode()] = n / 1e6 / (ms / 1e3) if m.group(2) == b"bytes" else n / (ms / 1e3)
    return out


def _finish(mode: str, end: re.Match, text: str) -> None:
    if end.group(1) == b"FAIL":
        raise BenchFailed(f"{mode}: guest says {end.group(2).decode(errors='replace').strip()}")
    if "FSBENCH-CLOCK uptime" in text:
        print("  (no /proc/timer_list in the guest: 10 ms clock)", flush=True)


def _fail_from(mode: str, e: Exception) -> BenchFailed:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    why = lines[0].split(";")[0] if lines else type(e).__name__
    tail = f"; last console line: {lines[-1].strip()!r}" if len(lines) > 1 else ""
    return BenchFailed(f"{mode}: {type(e).__name__}: {why}{tail}")


def make_image(path: str) -> None:
    with open(path, "wb") as f:
        f.truncate(IMG_MIB << 20)
        os.posix_fallocate(f.fileno(), 0, IMG_MIB << 20)  # allocated, as a real disk image would be


def vmmpy_run(
    mode: str, kernel: str, cpio: str, cpus: int, ram: str, work: str, timeout: float, transport: str = "mmio"
) -> bytes:
    try:
        import vmmpy
    except Exception as e:  # not built, or an ABI mismatch with a half-built tree
        raise BenchFailed(f"cannot import vmmpy: {e}") from e
    dev = {"disk": [os.path.join(work, "disk.img")]} if mode == "blk" else {"share": [(work, "share")]}
    try:
        with vmmpy.Machine(
            kernel,
            cpus=cpus,
            ram=f"{ram}M",
            initrd=cpio,
            cmdline=f"{CMDLINE} fsbench={mode}",
            transport=transport,
            **dev,
        ) as m:
            end = m.serial.expect(END_RE, timeout=timeout)
            _finish(mode, end, m.serial.text)
            res = m.wait(timeout=60)
            if not res.ok:
                raise BenchFailed(f"{mode}: results in but the run ended with {res.reason.name} {res.message}")
            return m.serial.data
    except BenchFailed:
        raise
    except Exception as e:  # VmmError (e.g. no such device yet), TypeError, SerialTimeout/SerialEOF
        raise _fail_from(mode, e) from e


def qemu_run(
    mode: str, kernel: str, cpio: str, cpus: int, ram: str, work: str, timeout: float, transport: str = "mmio"
) -> bytes:
    cmd = qemu_ref.command(kernel, cpio, cpus=cpus, ram=ram, cmdline=f"{CMDLINE} fsbench={mode}")
    cmd += ["-global", "virtio-mmio.force-legacy=false"]
    # the same device on QEMU's virtio-mmio, or its modern-only virtio-pci (ours has no legacy interface)
    kind = "device" if transport == "mmio" else "pci,disable-legacy=on"
    if mode == "blk":
        img = os.path.join(work, "disk.img")
        cmd += ["-drive", f"file={img},format=raw,if=none,id=d0", "-device", f"virtio-blk-{kind},drive=d0"]
    else:
        cmd += ["-fsdev", f"local,id=f0,path={work},security_model=none",
                "-device", f"virtio-9p-{kind},fsdev=f0,mount_tag=share"]  # fmt: skip
    try:
        with qemu_ref.QemuConsole(cmd) as q:
            end = q.expect(END_RE, timeout)
            _finish(mode, end, q.text)
            rc = q.wait(60)
            if rc != 0:
                raise BenchFailed(f"{mode}: results in but QEMU exited with {rc}")
            return q.data
    except qemu_ref.QemuError as e:
        raise _fail_from(mode, e) from e


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="boots per runner and device (default 3); median shown")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--ram", default="512", help="MiB (default 512)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per boot (default 300)")
    ap.add_argument("--only", choices=["blk", "9p"], help="one device only")
    ap.add_argument("--dir", help="where the disk image and shared directories go (default: the temp dir)")
    ap.add_argument("--no-vmmpy", action="store_true")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any side of any device failed")
    ap.add_argument("--transport", choices=["mmio", "pci"], default="mmio", help="where the devices sit (both sides)")
    args = ap.parse_args()
    kernel = fetch_debian.kernel()
    cpio = initramfs.cached(init_script=FS_INIT, modules=MODULES if args.transport == "mmio" else MODULES_PCI)
    modes = [args.only] if args.only else ["blk", "9p"]
    print(f"kernel {os.path.basename(kernel)}, initramfs {os.path.relpath(cpio, common.ROOT)}, "
          f"{args.cpus} vCPUs, {args.ram} MiB, {MIB} MiB transfers, {NFILES} small files, "
          f"virtio-{args.transport}")  # fmt: skip
    runners = []
    if not args.no_vmmpy:
        runners.append(("vmmpy", vmmpy_run))
    if not args.no_qemu:
        if qemu_ref.binary():
            runners.append(("qemu", qemu_run))
        else:
            print("qemu-system-aarch64 is not installed: QEMU column skipped (apt-get install qemu-system-arm)")

    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in runners}
    errors: dict[str, dict[str, str]] = {name: {} for name, _ in runners}
    top = tempfile.mkdtemp(prefix="vmmpy-fsbench-", dir=args.dir)
    try:
        for i in range(args.runs):
            per_run = {name: {} for name, _ in runners}
            for mode in modes:
                for name, fn in runners:
                    if mode in errors[name]:
                        continue
                    work = os.path.join(top, f"{name}-{mode}-{i}")
                    os.makedirs(work)
                    if mode == "blk":
                        make_image(os.path.join(work, "disk.img"))
                    try:
                        out = fn(mode, kernel, cpio, args.cpus, args.ram, work, args.timeout, args.transport)
                        got = rates(out)
                    except BenchFailed as e:
                        errors[name][mode] = str(e)
                        print(f"  run {i + 1}: {name:<5} {mode:<3} FAILED: {e}; not retried", flush=True)
                        continue
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                    per_run[name].update(got)
                    shown = "  ".join(f"{k} {v:.1f}" for k, v in got.items())
                    print(f"  run {i + 1}: {name:<5} {mode:<3} {shown}", flush=True)
            for name in per_run:
                if per_run[name]:
                    results[name].append(per_run[name])
    finally:
        shutil.rmtree(top, ignore_errors=True)

    def med(name: str, key: str) -> float | None:
        vals = [r[key] for r in results.get(name, []) if key in r]
        return statistics.median(vals) if vals else None

    nv, nq = len(results.get("vmmpy", [])), len(results.get("qemu", []))
    shown = [(k, u) for k, u in ROWS if ("blk" if k.startswith("blk") else "9p") in modes]
    print(
        f"\nLinux guest file I/O on virtio-{args.transport}, higher is better (median of {nv} vmmpy / {nq} qemu runs)"
    )
    print("vmmpy/qemu is a ratio of rates: above 1, vmmpy is faster")
    print(common.table([(f"{k} {u}", med("vmmpy", k), med("qemu", k)) for k, u in shown], unit="", digits=1))
    for name, errs in errors.items():
        for mode, why in errs.items():
            print(f"{name} {mode} did not finish: {why}")
    if results.get("vmmpy"):
        rec = build(
            results["vmmpy"],
            results.get("qemu", []),
            {
                "runs": args.runs,
                "cpus": args.cpus,
                "ram_mib": args.ram,
                "kernel": os.path.basename(kernel),
                "mib": MIB,
                "files": NFILES,
                "msize": MSIZE,
                "transport": args.transport,
            },
            {"vmmpy_errors": errors.get("vmmpy", {}), "qemu_errors": errors.get("qemu", {})},
            transport=args.transport,
        )
        path = common.save(rec)
        print(f"wrote {os.path.relpath(path, common.ROOT)}")
    else:
        print("vmmpy measured nothing: no result written")
    any_error = any(errors.values())
    return 1 if (any_error if args.strict else not any(results.values())) else 0


if __name__ == "__main__":
    sys.exit(main())
