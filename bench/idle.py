"""Host CPU cost of an idle guest: vmmpy (`python -m vmmpy run`, a child process) vs a QEMU TCG process.

Guests: guest/build/idle.elf (a 100 Hz virtual timer tick, WFI between ticks, a line every 100 ticks) and
idle_notick.elf (WFI with no timer at all). Each VMM runs as a child process; from the guest's
`idle: ready` line on, the child's CPU time (all its threads: /proc/PID/task/*/schedstat, in ns) is
sampled over --seconds of wall time: % of one host core. vmmpy ends through its own --timeout, QEMU is
terminated. The tick rate the guest reports is checked too (a VMM that delivers fewer ticks idles
cheaper). Whole-process CPU time (getrusage of the child, start-up included) goes to the JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

GUESTS = {"idle_100hz": "idle", "idle_notick": "idle_notick"}
READY_TIMEOUT = 30.0
TICKS_RE = re.compile(rb"idle: (\d+) ticks")


def cpu_seconds(pid: int) -> float:
    """User + system time of every thread of pid so far."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread ended meanwhile
        return total / 1e9
    except OSError:
        with open(f"/proc/{pid}/stat") as f:  # no schedstat: clock ticks (coarse)
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A VMM process whose stdout is read by a thread; remembers when each tick report arrived."""

    def __init__(self, cmd: list[str]):
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.ready = threading.Event()
        self.ticks: list[tuple[float, int]] = []
        self.output = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.output += line
            if b"idle: ready" in line:
                self.ready.set()
            m = TICKS_RE.search(line)
            if m:
                self.ticks.append((time.monotonic(), int(m.group(1))))

    def finish(self, wait: float) -> tuple[int, float]:
        """Wait up to `wait` seconds for it to exit, else terminate it. Exit code, whole-process CPU seconds."""
        deadline = time.monotonic() + wait
        while True:
            pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                self.p.terminate()
                _, status, ru = os.wait4(self.p.pid, 0)
                break
            time.sleep(0.05)
        self.p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        self.reader.join(timeout=5)
        return self.p.returncode, ru.ru_utime + ru.ru_stime


def measure(cmd: list[str], seconds: float, stop_wait: float) -> dict:
    c = Child(cmd)
    if not c.ready.wait(READY_TIMEOUT):
        c.p.kill()
        c.p.wait()
        err = c.p.stderr.read().decode(errors="replace")[-300:] if c.p.stderr else ""
        raise SystemExit(f"no 'idle: ready' line within {READY_TIMEOUT:g} s from {cmd[0]}: {err}")
    t0, c0 = time.monotonic(), cpu_seconds(c.p.pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_seconds(c.p.pid)
    rc, total_cpu = c.finish(stop_wait)
    ticks = [(t, n) for t, n in c.ticks if t0 <= t <= t1 + 0.5]
    rate = (ticks[-1][1] - ticks[0][1]) / (ticks[-1][0] - ticks[0][0]) if len(ticks) >= 2 else None
    return {"cpu_pct": 100.0 * (c1 - c0) / (t1 - t0), "window_s": t1 - t0, "ticks_per_s": rate,
            "exit_code": rc, "process_cpu_s": total_cpu}  # fmt: skip


IDLE_TARGET_PCT = 1.0  # "idle ~0 %": at most 1 % of a host core


def build(results: dict[str, dict[str, list[dict]]], config: dict | None = None) -> dict:
    """results[guest label][peer ("vmmpy", "qemu")] = every run's measure() dict."""
    rows = [
        common.row(
            label,
            "%",
            [r["cpu_pct"] for r in results.get(label, {}).get("vmmpy", [])],
            {"qemu": [r["cpu_pct"] for r in results.get(label, {}).get("qemu", [])]},
            stat="median",
            target={"value": IDLE_TARGET_PCT},
            note="host CPU time over wall time, % of one core",
        )
        for label in GUESTS
    ]
    return common.record(
        "idle", "Host CPU cost of an idle guest, % of one core", rows, config=config, extra={"runs": results}
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured idle time per run (default 5)")
    ap.add_argument("--runs", type=int, default=3, help="runs per guest and VMM (the median is kept)")
    ap.add_argument("--cpus", type=int, default=1, help="vCPUs (only CPU 0 runs; default 1)")
    args = ap.parse_args()
    margin = 1.0  # vmmpy's --timeout runs out this long after the measured window ends
    results: dict[str, dict[str, list[dict]]] = {}
    for label, name in GUESTS.items():
        elf = common.guest(name)
        vmm_cmd = [sys.executable, "-m", "vmmpy", "run", elf, "--cpus", str(args.cpus),
                   "--timeout", f"{args.seconds + margin:g}"]  # fmt: skip
        peers = {"vmmpy": (vmm_cmd, margin + 10), "qemu": (common.qemu_command(elf, cpus=args.cpus), 0)}
        for _ in range(args.runs):  # interleaved
            for peer, (cmd, stop_wait) in peers.items():
                r = measure(cmd, args.seconds, stop_wait)
                if peer == "vmmpy" and r["exit_code"] != 124:
                    raise SystemExit(f"vmmpy exited with {r['exit_code']}, not 124 (timeout)")
                results.setdefault(label, {}).setdefault(peer, []).append(r)

    def med(label: str, peer: str, key: str) -> float | None:
        vals = sorted(r[key] for r in results[label][peer] if r[key] is not None)
        return vals[len(vals) // 2] if vals else None

    print(f"idle guest, host CPU time over wall time, % of one core ({args.seconds:g} s each, "
          f"median of {args.runs}, {args.cpus} vCPU(s))")  # fmt: skip
    print(common.table([(k, med(k, "vmmpy", "cpu_pct"), med(k, "qemu", "cpu_pct")) for k in GUESTS], "%", 3))
    for peer in ("vmmpy", "qemu"):
        rate = med("idle_100hz", peer, "ticks_per_s")
        print(f"  {peer}: guest ticks per second {rate:.1f}" if rate else f"  {peer}: no tick reports")
    rec = build(results, {"seconds": args.seconds, "cpus": args.cpus, "runs": args.runs})
    print(common.targets_line(rec))
    path = common.save(rec)
    print(f"wrote {os.path.relpath(path, common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
