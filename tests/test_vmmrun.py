"""runner/vmmrun.c, the C runner over the public API, built natively against the soft backend.

The same runner, cross-built, is what tests/test_kvm_nested.py runs under KVM; here its options,
exit codes and error lines are checked on this host (`make build/vmmrun`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest

from . import locks
from . import test_gdb as gdbtest
from .conftest import GUEST_DIR, HOST_HAS_KVM, ROOT

VMMRUN = os.path.join(ROOT, "build", "vmmrun")


@pytest.fixture(scope="module")
def vmmrun() -> str:
    p = locks.make("-s", "-C", ROOT, "build/vmmrun", lock="vmmrun")  # pytest -n: one worker builds it
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return VMMRUN


def run(vmmrun: str, *args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([vmmrun, *args], input=stdin, capture_output=True, timeout=timeout)


def elf(name: str) -> str:
    return os.path.join(GUEST_DIR, f"{name}.elf")


def test_boots_a_guest_and_streams_its_serial_output(vmmrun):
    p = run(vmmrun, "--stats", elf("hello"))
    assert p.returncode == 0, p.stderr
    assert b"Hello from vmmpy guest!" in p.stdout
    stats = p.stderr.decode()
    assert "vmmrun: stats: backend=soft" in stats and "mmio_exits=" in stats and "peak_rss_kib=" in stats


def test_exit_status_reset_and_timeout(vmmrun):
    assert run(vmmrun, elf("exit_code")).returncode == 7
    p = run(vmmrun, elf("psci_reset"))
    assert p.returncode == 3, p.stderr
    p = run(vmmrun, "--timeout", "0.3", elf("idle_notick"))
    assert p.returncode == 124
    assert p.stderr.decode().startswith("vmmrun: timeout: the guest ran for 0.3 s")


def test_stdin_smp_and_gpu(vmmrun):
    p = run(vmmrun, "--stdin", "--cpus", "2", elf("uart_irq"), stdin=b"hi!\tq")
    assert p.returncode == 0, p.stderr
    assert b"PASS uart_irq" in p.stdout
    p = run(vmmrun, "--gpu=320x240", "--stdin", elf("gpu_demo"), stdin=b"x")
    assert p.returncode == 0, p.stderr
    assert b"gpu_demo: 320x240 framebuffer" in p.stdout and b"PASS gpu_demo" in p.stdout


def test_sigint_stops_the_guest(vmmrun):
    proc = subprocess.Popen([vmmrun, elf("idle")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the guest is running once it has printed
    assert b"idle: ready" in line, line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"vmmrun: stopped by signal 2" in err


@pytest.mark.skipif(not gdbtest.GDB, reason="gdb-multiarch is not installed")
def test_gdb_server(vmmrun, tmp_path):
    """--gdb/--gdb-wait: the address on stderr, then test_gdb.py's KILL_SESSION (the nested KVM test runs the
    same against --backend kvm): exit 130 with one line saying the debugger ended it."""
    proc = subprocess.Popen([vmmrun, "--cpus", "2", "--gdb", "0", "--gdb-wait", elf("gdb_target")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.match(r"vmmrun: gdb server on (127\.0\.0\.1:\d+) \(the guest waits for it\)$", line)
        assert m, line
        out = gdbtest.run_gdb(elf("gdb_target"), gdbtest.KILL_SESSION.format(addr=m.group(1)), tmp_path)
        gdbtest.check_kill(out)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and err.strip() == "vmmrun: the debugger killed the VM", (proc.returncode, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def vcpu_threads_of(vmmrun: str, mode: str, env: dict | None = None, want: tuple = ()) -> list[str]:
    """The names of the threads of a 2-vCPU idle_notick run with --vcpu-threads mode, read from /proc once the
    guest is ready (it then idles until the timeout). A thread names itself when it starts, which may come
    after vCPU 0 prints: with `want`, the names are read again until they hold those (10 s at most)."""
    proc = subprocess.Popen([vmmrun, "--cpus", "2", "--vcpu-threads", mode, "--timeout", "60", elf("idle_notick")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    try:
        assert proc.stdout and b"idle: ready" in proc.stdout.readline(), proc.stderr and proc.stderr.read()
        task = f"/proc/{proc.pid}/task"
        deadline = time.monotonic() + 10
        while True:
            names = []
            for t in os.listdir(task):
                with contextlib.suppress(FileNotFoundError), open(os.path.join(task, t, "comm")) as f:
                    names.append(f.read().strip())  # (a thread that ended meanwhile has no file)
            if set(want) <= set(names) or time.monotonic() > deadline:
                return sorted(names)
            time.sleep(0.01)  # polling /proc for a condition, bounded by the deadline
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names are read from /proc")
def test_vcpu_threads_option(vmmrun):
    """--vcpu-threads as the CLI and Python have it: one runs both vCPUs on the calling thread; per-vcpu gives
    each its own (vmm-vcpu0/1) on the patched engine, and is one clear error on the wheel's, which cannot."""
    from vmmpy import _unicorn

    p = run(vmmrun, "--cpus", "2", "--vcpu-threads", "one", elf("smp"))
    assert p.returncode == 0 and b"PASS smp" in p.stdout, p.stderr
    assert not [t for t in vcpu_threads_of(vmmrun, "one") if t.startswith("vmm-vcpu")]
    # build/vmmrun links the wheel's engine (RUNPATH): LD_LIBRARY_PATH picks the patched one first
    lib = _unicorn.patched_lib()
    p = run(vmmrun, "--cpus", "2", "--vcpu-threads", "per-vcpu", elf("smp"))
    if "the patched Unicorn" in p.stderr.decode():  # the wheel's engine cannot
        assert p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1, p.stderr
    else:
        assert p.returncode == 0 and b"PASS smp" in p.stdout, p.stderr
    if not lib:
        pytest.skip("the patched Unicorn is not built (make unicorn)")
    env = {**os.environ, "LD_LIBRARY_PATH": os.path.dirname(lib)}
    both = ("vmm-vcpu0", "vmm-vcpu1")
    threads = vcpu_threads_of(vmmrun, "per-vcpu", env, both)
    assert "vmm-vcpu0" in threads and "vmm-vcpu1" in threads, threads
    assert [t for t in vcpu_threads_of(vmmrun, "auto", env, both) if t.startswith("vmm-vcpu")] == list(both)


@pytest.mark.parametrize(
    "args, text",
    [
        ([], "no kernel given"),
        (["--cpus", "9", "K"], "--cpus wants a number from 1 to 8"),
        (["--ram", "lots", "K"], "bad size 'lots'"),
        (["--timeout", "-1", "K"], "--timeout wants a positive number"),
        (["--gpu=32x", "K"], "--gpu wants WIDTHxHEIGHT"),
        (["--backend", "warp", "K"], "unknown backend 'warp'"),
        (["--bogus", "K"], "unknown option"),
        (["/nonexistent.elf"], "/nonexistent.elf"),
        (["--snapshot-at", "x", "K"], "--snapshot-at and --snapshot-out go together"),
        (["--snapshot-out", "S", "K"], "--snapshot-at and --snapshot-out go together"),
        (["--snapshot-at", "", "--snapshot-out", "S", "K"], "--snapshot-at wants a non-empty pattern"),
        (["--restore", "S", "K"], "unexpected argument"),
        (["--restore", "S", "--cpus", "2"], "--restore takes the machine from the snapshot"),
        (["--restore", "S", "--vcpu-threads", "one"], "--restore takes the machine from the snapshot"),
        (["--vcpu-threads", "two", "K"], "--vcpu-threads wants auto, one or per-vcpu, not 'two'"),
        (["--restore", "/nonexistent.snap"], "/nonexistent.snap"),
        (["--restore", "K"], "not a vmmpy snapshot"),
        (["--snapshot-at", "never printed", "--snapshot-out", "S", "K"], "without printing 'never printed'"),
        (["--gdb-wait", "K"], "--gdb-wait needs --gdb"),
        (["--gdb", "nonsense", "K"], "not [HOST:]PORT or unix:PATH"),
        pytest.param(
            ["--backend", "kvm", "K"],
            "backend 'kvm' is not",
            marks=pytest.mark.skipif(HOST_HAS_KVM, reason="this host has a working /dev/kvm"),
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(vmmrun, args, text, tmp_path):
    args = [elf("hello") if a == "K" else str(tmp_path / "x.snap") if a == "S" else a for a in args]
    p = run(vmmrun, *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmmrun: "), lines
    assert text in lines[0], lines


def test_snapshot_at_a_pattern_then_restore(vmmrun, tmp_path):
    """--snapshot-at stops at a serial pattern, saves and exits 0; --restore runs on in a new process, which
    first prints what the guest wrote after the stop: the two outputs are one run's (the nested KVM test
    does the same on KVM)."""
    snap = str(tmp_path / "timer.snap")
    p1 = run(vmmrun, "--snapshot-at", "timer: TVAL", "--snapshot-out", snap, elf("timer"))
    assert p1.returncode == 0, p1.stderr
    assert p1.stderr.decode().startswith(f"vmmrun: snapshot saved to {snap} ("), p1.stderr
    assert b"timer: TVAL" in p1.stdout and b"PASS" not in p1.stdout
    p2 = run(vmmrun, "--restore", snap, "--stats")
    assert p2.returncode == 0, p2.stderr
    assert b"vmmrun: stats: backend=soft" in p2.stderr
    whole = (p1.stdout + p2.stdout).decode().replace("\r", "")
    assert "\ntimer: 50 ticks at 100 Hz" in whole and whole.endswith("PASS timer\n"), whole
    assert whole.count("timer: CNTFRQ") == 1, whole
    # the snapshot names its backend
    p3 = run(vmmrun, "--restore", snap, "--backend", "kvm")
    assert p3.returncode == 2
    assert (
        p3.stderr.decode()
        == f"vmmrun: {snap}: the snapshot was made on the soft backend; it cannot be restored on kvm\n"
    )
