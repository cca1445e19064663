"""Tier 2 on the KVM backend: the guests of tests/guests.py under build/aarch64/vmmrun --backend kvm, nested.

This host has no /dev/kvm, so tools/nested.py boots Debian's arm64 kernel in qemu-system-aarch64 with
EL2 emulated (virtualization=on, GICv3); that kernel's KVM gives a real /dev/kvm inside, where the
static vmmrun (`make aarch64`, also run here if needed) boots every guest that applies to KVM. One
nested boot serves the whole module; each run is then checked against its verdict in the table.

It proves that the KVM backend drives real KVM ioctls correctly (memory slots, vCPU init, the
in-kernel vGICv3 and timers, PSCI, MMIO exits to the device bus, SMP); it says nothing about speed
(everything inside is emulated by TCG).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from . import guests as table
from . import locks
from . import test_gdb as gdbtest
from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import fetch_debian  # noqa: E402
import initramfs  # noqa: E402
import nested  # noqa: E402

# one nested VM runs every test's guest: under `pytest -n ... --dist loadgroup` the module stays on one worker
# (one boot); under plain -n each worker that gets some of its tests boots its own, one at a time (the lock)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("nested_kvm")]

RUNS = table.select("kvm")
LINUX_CPUS = 2

# The debugger sessions of tests/test_gdb.py, the same scripts, run by gdb-multiarch on this host against
# vmmrun --backend kvm --gdb inside the nested VM (QEMU's user network forwards a host port to it).
GDB_RUNS = {"gdb-session": "--gdb-wait", "gdb-intr": "--gdb-wait", "gdb-kill": "--gdb-wait"}
GDB_TIMEOUT = 300  # seconds for one gdb session


def gdb_watcher(elf: str, port: int, tmp, outs: dict[str, str]):
    """boot()'s watcher: each GDB_RUNS session once the nested init says its vmmrun listens."""
    addr = f"127.0.0.1:{port}"

    def attach(con: nested.Console, rid: str, start: int) -> int:
        end = con.wait(f"{nested.MARK} GDB-READY {rid}".encode(), start)
        if end < 0:
            outs[rid] = f"the nested init never started {rid}"
        return end

    def watch(con: nested.Console) -> None:
        try:
            end = attach(con, "gdb-session", 0)
            if end < 0:
                return
            outs["gdb-session"] = gdbtest.run_gdb(elf, gdbtest.SESSION.format(addr=addr), tmp, GDB_TIMEOUT)
            if (end := attach(con, "gdb-intr", end)) < 0:
                return
            script = tmp / "intr.gdb"
            script.write_text(gdbtest.INTERRUPT_SESSION.format(addr=addr))
            p = subprocess.Popen([gdbtest.GDB, "-nx", "-batch", "-x", str(script), elf], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=gdbtest.TOOL_ENV)  # fmt: skip
            if con.wait(gdbtest.READY.encode(), end, GDB_TIMEOUT) >= 0:
                p.send_signal(signal.SIGINT)
            outs["gdb-intr"] = p.communicate(timeout=GDB_TIMEOUT)[0]
            if (end := attach(con, "gdb-kill", end)) < 0:
                return
            outs["gdb-kill"] = gdbtest.run_gdb(elf, gdbtest.KILL_SESSION.format(addr=addr), tmp, GDB_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as e:
            outs.setdefault("error", repr(e))

    return watch


@pytest.fixture(scope="module")
def nested_vm(tmp_path_factory, guest) -> nested.Nested:
    with locks.exclusive("nested"):  # pytest -n: the build/nested/ files and 2 GiB of guest RAM, one at a time
        if shutil.which("qemu-system-aarch64") is None:
            pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm; `make test` does it)")
        # `make aarch64` installs the cross compiler if it is missing and is quick when nothing changed;
        # running it here keeps vmmrun in step with csrc/ when the test runs on its own
        p = locks.make("-s", "-C", ROOT, "aarch64", lock="aarch64")  # pytest -n: one worker builds it
        if p.returncode:
            cc = shutil.which("aarch64-linux-gnu-gcc") or (os.uname().machine == "aarch64" and shutil.which("gcc"))
            if not cc:
                pytest.skip(f"no arm64 C compiler (apt-get install gcc-aarch64-linux-gnu failed?): {p.stderr[-500:]}")
            pytest.fail(f"make aarch64 failed:\n{(p.stdout + p.stderr)[-3000:]}")
        try:
            files, extra = nested.linux(cpus=LINUX_CPUS)  # Debian's kernel too, after the bare-metal guests
            extra += nested.without_kvm()
            snap_files, snap_extra = nested.snapshots()  # the KVM snapshot round trips, after the plain runs
            files, extra = {**files, **snap_files}, extra + snap_extra
            timeout = nested.BOOT_OVERHEAD + sum(r.timeout + 10 for r in RUNS) + 300
            timeout += sum(2 * table.BY_ID[rid].timeout + 20 for rid, _ in nested.SNAP_RUNS.values()) + 30
            pmu_elf = table.elf(table.BY_ID["pmu"])  # KVM's PMU: the checks nested KVM passes (test_pmu_on_kvm)
            files[f"/guests/{os.path.basename(pmu_elf)}"] = pmu_elf
            extra += nested._run_lines(
                "pmu-kvm", f"/vmmrun --backend kvm --timeout 60 /guests/{os.path.basename(pmu_elf)}"
            )
            timeout += 70
            watchers, gdb_outs, port = [], {}, 0
            if gdbtest.GDB:  # the debugger sessions last: a failure there cannot hide the other runs
                elf, port = guest("gdb_target"), gdbtest.free_port()
                gdb_files, gdb_extra = nested.gdb_runs(GDB_RUNS, elf, timeout=GDB_TIMEOUT)
                files, extra = {**files, **gdb_files}, extra + gdb_extra
                watchers.append(gdb_watcher(elf, port, tmp_path_factory.mktemp("gdb"), gdb_outs))
                timeout += len(GDB_RUNS) * (GDB_TIMEOUT + 30)
            vm = nested.boot(RUNS, files=files, extra=extra, mem=2048, timeout=timeout, modules=nested.GDB_MODULES,
                             gdb_port=port, watchers=watchers)  # fmt: skip
            vm.gdb = gdb_outs
        except (nested.NestedError, fetch_debian.FetchError, initramfs.InitramfsError) as e:
            pytest.fail(f"cannot boot the nested VM: {e}")
        if not vm.done:
            tail = "\n".join(vm.console.replace("\r", "").splitlines()[-40:])
            print(f"nested VM did not finish in {vm.wall:.0f} s; console ends with:\n{tail}")
        return vm


def test_nested_kvm_is_available(nested_vm):
    """The premise: KVM initialised at EL2 inside the nested VM and /dev/kvm exists."""
    assert nested_vm.kvm, "no /dev/kvm in the nested VM; dmesg:\n" + "\n".join(nested_vm.dmesg)
    assert nested_vm.kvm_mode in ("VHE", "Hyp"), "KVM did not initialise:\n" + "\n".join(nested_vm.dmesg)


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_guest_on_kvm(nested_vm, run):
    res = nested_vm.results.get(run.id)
    assert res is not None, f"{run.id} never started (nested init finished: {nested_vm.done})"
    assert res.rc is not None, f"{run.id} did not finish; output so far:\n{res.output[-3000:]}"
    got, want, errs = res.rc, run.vmmrun_rc, "\n".join(res.stderr)
    assert got == want, f"vmmrun exit status {got}, want {want}\n{errs}\n{res.output[-3000:]}"
    table.assert_ok(run, res.output)


def test_linux_on_kvm(nested_vm):
    """Debian's arm64 kernel and the test initramfs (tests/test_linux.py's) on vmmrun --backend auto → kvm."""
    res = nested_vm.results.get("linux")
    assert res is not None and res.rc is not None, f"the Linux run did not finish (nested init done: {nested_vm.done})"
    text = res.output.replace("\r", "")
    m = re.search(initramfs.MARKER_RE.decode(), text)
    assert m, "no VMMPY-INIT-OK line; output ends with:\n" + text[-3000:]
    assert m.group(1) == str(LINUX_CPUS) and m.group(2) == f"0-{LINUX_CPUS - 1}", m.group(0)
    assert "reboot: Power down" in text
    assert res.rc == 0, f"vmmrun exit status {res.rc}\n" + "\n".join(res.stderr)
    # it ran with --backend auto: KVM is picked when /dev/kvm works
    assert any("backend=kvm" in line for line in res.stderr), res.stderr


@pytest.mark.parametrize("backend", ["kvm", "auto"])
def test_missing_dev_kvm_is_one_clear_error(nested_vm, backend):
    """With /dev/kvm gone, vmmrun fails at once with one line that says why (exit 2, no hang, no crash)."""
    res = nested_vm.results.get(f"nokvm-{backend}")
    assert res is not None and res.rc is not None, "the run did not finish"
    assert res.rc == 2, (res.rc, res.stderr)
    assert len(res.stderr) == 1, res.stderr
    assert "cannot open /dev/kvm: No such file or directory" in res.stderr[0], res.stderr
    assert res.stderr[0].startswith("vmmrun: "), res.stderr


@pytest.mark.parametrize("name", list(nested.SNAP_RUNS))
def test_snapshot_round_trip_on_kvm(nested_vm, name):
    """KVM snapshots: vmmrun --snapshot-at saves the guest (every KVM-listed vCPU register, MP state and
    events, the vGIC's attributes, timers) when a serial pattern appears; a new vmmrun --restore runs on,
    and the two outputs together pass the guest's verdict and print the lines the uninterrupted run of the
    same guest printed (numbers masked: timings differ)."""
    problems = nested.snap_problems(nested_vm, name)
    assert not problems, "\n".join(problems)


def test_soft_snapshot_refused_on_kvm(nested_vm):
    """A snapshot made on the soft backend (here, with vmmpy) restored with --backend kvm: one line, exit 2."""
    res = nested_vm.results.get("snap-soft-on-kvm")
    assert res is not None and res.rc is not None, "the run did not finish"
    problems = nested.soft_on_kvm_problems(res)
    assert not problems, "\n".join(problems)


def _gdb_run(nested_vm, rid: str) -> tuple[str, nested.Result]:
    if not gdbtest.GDB:
        pytest.skip("gdb-multiarch is not installed (apt-get install gdb-multiarch)")
    res = nested_vm.results.get(rid)
    out = nested_vm.gdb.get(rid, nested_vm.gdb.get("error", "gdb never ran"))
    assert res is not None and res.rc is not None, f"{rid} did not finish; gdb said:\n{out}"
    return out, res


def test_gdb_session_on_kvm(nested_vm):
    """tests/test_gdb.py's SESSION against KVM: a software breakpoint at a symbol (BRK through
    KVM_GUESTDBG_USE_SW_BP), registers, memory (the BRK invisible), stepi (KVM_GUESTDBG_SINGLESTEP, vCPU 0
    alone: vCPU 1's counter stands still), a hardware watchpoint firing on the guest's store, info threads
    on 2 vCPUs, the exit status the debugger chose."""
    out, res = _gdb_run(nested_vm, "gdb-session")
    gdbtest.check_session(out)
    assert "Thread 2 (vCPU 1)" in out, out  # KVM's PSCI powered it on: not "(off)"
    assert res.rc == 5 and "gdb_target: released at 1, exit 5" in res.output, (res.rc, res.output, res.stderr)
    gdbtest.check_clock(res.output)  # KVM's virtual counter stood still (KVM_REG_ARM_TIMER_CNT)


def test_gdb_interrupt_and_detach_on_kvm(nested_vm):
    out, res = _gdb_run(nested_vm, "gdb-intr")
    gdbtest.check_interrupt(out)
    assert res.rc == 0 and "gdb_target: released" in res.output, (res.rc, res.output, res.stderr)


def test_gdb_kill_on_kvm(nested_vm):
    out, res = _gdb_run(nested_vm, "gdb-kill")
    gdbtest.check_kill(out)
    assert res.rc == 130 and "vmmrun: the debugger killed the VM" in res.stderr, (res.rc, res.stderr)


def test_pmu_on_kvm(nested_vm):
    """KVM's vCPUs get a PMU (KVM_ARM_VCPU_PMU_V3, its interrupt PPI 23, the DT's arm,armv8-pmuv3 node): the `pmu`
    guest finds PMUv3 with event counters, a cycle counter that counts, stops and resets, software increment
    with its overflow interrupt, and PMUSERENR_EL0 honoured. Nested, two of its checks fail (tests/guests.py
    says which); they are listed here so that a change in them shows."""
    res = nested_vm.results.get("pmu-kvm")
    assert res is not None and res.rc is not None, "the pmu run did not finish"
    lines = table.lines(res.output)
    m = re.search(r"^pmu: PMUVer (\d+), (\d+) event counters$", "\n".join(lines), re.M)
    assert m and int(m.group(1)) >= 1 and int(m.group(2)) >= 1, res.output
    for want in ("pmu: cycle counter counts, stops, resets", "pmu: software increment, overflow, interrupt",
                 "pmu: PMUSERENR_EL0 honoured"):  # fmt: skip
        assert want in lines, (want, res.output)
    fails = sorted(re.sub(r"\b\d+\b", "N", ln) for ln in lines if ln.startswith("FAIL pmu: ") and "check(s)" not in ln)
    assert fails == [
        "FAIL pmu: EL0 PMCCNTR_EL0 read with PMUSERENR_EL0.EN set: N trap(s), read N (EL1 read N before)",
        "FAIL pmu: cycle counter N-bit overflow: N interrupt(s), PMOVSSET 0x0",
    ], res.output
