"""Tier 2: `python -m vmmpy run` — streaming, exit codes, one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import B_SELF, GUEST_DIR, HOST_HAS_KVM, PRINT_X, SYSTEM_OFF, SYSTEM_RESET, code


def vmmpy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmmpy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return lines[0]


def test_hello_prints_and_exits_zero(guest):
    p = vmmpy("run", guest("hello"))
    assert p.returncode == 0, p.stderr
    assert "Hello from vmmpy guest!" in p.stdout
    assert p.stderr == ""


def test_semihosting_exit_status_becomes_the_exit_code(guest):
    p = vmmpy("run", guest("exit_code"))
    assert "exiting with 7" in p.stdout
    assert p.returncode == 7


def test_raw_guest_and_reset(raw_guest):
    p = vmmpy("run", raw_guest(code(*PRINT_X, *SYSTEM_OFF)), "--format", "raw")
    assert (p.returncode, p.stdout) == (0, "X")
    p = vmmpy("run", raw_guest(code(*SYSTEM_RESET), "reset.bin"), "--format", "raw")
    assert p.returncode == 120
    assert "reset" in one_error_line(p)


def test_timeout_exit_code(raw_guest):
    p = vmmpy("run", raw_guest(code(B_SELF)), "--format", "raw", "--timeout", "0.3")
    assert p.returncode == 124
    assert "timed out after 0.3 s" in one_error_line(p)


@pytest.mark.parametrize(
    "args, code_, text",
    [
        (["run", "/nonexistent.elf"], 2, "/nonexistent.elf: cannot open kernel: no such file or directory"),
        (["run", "/etc/hostname"], 1, "not an ELF, arm64 Image or gzip"),
        (["run", sys.executable], 1, "not an aarch64 ELF"),
        (["run", "K", "--ram", "lots"], 2, "argument --ram: cannot parse size"),
        (["run", "K", "--cpus", "99"], 2, "at most 8 are supported"),
        (["run", "K", "--cpu-model", "cortex-x9"], 2, "choose from 'cortex-a72', 'cortex-a57', 'cortex-a53', 'max'"),
        pytest.param(
            ["run", "K", "--backend", "kvm"],
            1,
            "not built into this library" if os.uname().machine not in ("aarch64", "arm64") else "cannot open /dev/kvm",
            marks=pytest.mark.skipif(HOST_HAS_KVM, reason="this host has a working /dev/kvm"),
        ),
        (["run", "K", "--timeout", "-1"], 2, "the timeout must be positive"),
        (["run", "K", "--entry", "0x40000000"], 2, "need --format raw"),
        (["run", "K", "--initrd", "/nonexistent.cpio"], 2, "cannot open initrd"),
        (["run", "K", "--capture", "abc", "x.png"], 2, "argument --capture: not a frame number: 'abc'"),
        (["run", "K", "--capture", "1,x", "p"], 2, "argument --capture: not a frame number: 'x'"),
        (["run", "K", "--capture", "0", "x.png"], 2, "argument --capture: frames are counted from 1, not 0"),
        (["run", "K", "--capture", "5"], 2, "argument --capture: expected 2 arguments"),
        (["run", "K", "--capture", "5", "/nonexistent/x.png"], 2, "directory '/nonexistent' does not exist"),
        (["run", "K", "--capture", ",".join(map(str, range(1, 66))), "p"], 2, "at most 64 frames"),
        (["run", "K", "--no-gpu", "--capture", "5", "x.png"], 2, "--capture needs the GPU: drop --no-gpu"),
        (["run", "K", "--gpu-size", "1280"], 2, "argument --gpu-size: expected WIDTHxHEIGHT"),
        (["run", "K", "--gpu-size", "0x800"], 2, "width and height must be 1..16384"),
        (["run", "K", "--no-gpu", "--gpu-size", "64x64"], 2, "--gpu-size needs the GPU: drop --no-gpu"),
        (["run"], 2, "required: kernel"),
        (["fly"], 2, "invalid choice"),
    ],
)
def test_bad_input_gives_one_clear_line(guest, args, code_, text):
    args = [guest("hello") if a == "K" else a for a in args]
    p = vmmpy(*args)
    line = one_error_line(p)
    assert line.startswith("vmmpy: error: ")
    assert text in line
    assert p.returncode == code_


def test_capture_paths():
    from vmmpy.cli import capture_paths

    assert capture_paths([7], "out/f.png", multiple=False) == {7: "out/f.png"}
    assert capture_paths([1, 30], "out/f", multiple=True) == {1: "out/f-001.png", 30: "out/f-030.png"}


# -- the GPU: these run once guest/build/gpu_demo.elf exists (make guests) --------------------------------

GPU_DEMO = os.path.join(GUEST_DIR, "gpu_demo.elf")
needs_gpu_demo = pytest.mark.skipif(
    not os.path.exists(GPU_DEMO), reason=f"{GPU_DEMO} is not built (the virtio-gpu demo guest: make guests)"
)


def assert_drawn(path, size):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == size
        colors = im.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colors is None or len(colors) > 4, f"{path} is (nearly) blank: {colors}"


@needs_gpu_demo
def test_capture_one_frame(tmp_path):
    out = tmp_path / "frame.png"
    p = vmmpy("run", GPU_DEMO, "--capture", "5", str(out), "--timeout", "60")
    assert p.returncode == 0, p.stderr
    assert "gpu_demo: frame 1" in p.stdout  # serial output is streamed as usual (the line for 5 may come later)
    assert f"frame 5 (1280x800) -> {out}" in p.stderr
    assert_drawn(out, (1280, 800))


@needs_gpu_demo
def test_capture_several_frames_at_a_chosen_size(tmp_path):
    prefix = tmp_path / "demo"
    p = vmmpy("run", GPU_DEMO, "--gpu-size", "640x480", "--capture", "3,1", str(prefix), "--timeout", "60")
    assert p.returncode == 0, p.stderr
    paths = [tmp_path / "demo-001.png", tmp_path / "demo-003.png"]
    for path in paths:
        assert_drawn(path, (640, 480))
        assert str(path) in p.stderr
    assert paths[0].read_bytes() != paths[1].read_bytes()  # the demo animates


@needs_gpu_demo
def test_capture_of_a_frame_that_never_comes(tmp_path, guest):
    p = vmmpy("run", guest("hello"), "--capture", "1", str(tmp_path / "x.png"), "--timeout", "30")
    assert p.returncode == 1
    line = one_error_line(p)
    assert "the guest powered off (status 0); not captured: frame 1" in line
    assert not (tmp_path / "x.png").exists()


@needs_gpu_demo
def test_capture_timeout(tmp_path):
    p = vmmpy("run", GPU_DEMO, "--capture", "1000", str(tmp_path / "x.png"), "--timeout", "1")
    assert p.returncode == 124
    assert "timed out after 1 s; not captured: frame 1000" in one_error_line(p)


# -- --result-json: the guest's status 2 vs vmmpy's 2 -------------------------------------------------------

# mov w0, #0x18 (SYS_EXIT); adr x1, block; hlt #0xf000 (semihosting); b . ; block: ApplicationExit, status 2
SEMIHOST_EXIT_2 = (
    code(0x52800300, 0x10000061, 0xD45E0000, B_SELF) + (0x20026).to_bytes(8, "little") + bytes([2, 0, 0, 0, 0, 0, 0, 0])
)


def _result(path) -> dict:
    import json

    with open(path) as f:
        return json.load(f)


def test_result_json_tells_a_guest_status_2_from_a_vmmpy_error(raw_guest, tmp_path):
    out = tmp_path / "r.json"
    p = vmmpy("run", raw_guest(SEMIHOST_EXIT_2), "--format", "raw", "--result-json", str(out))
    assert p.returncode == 2 and p.stderr == ""
    r = _result(out)
    assert r["reason"] == "POWEROFF" and r["status"] == 2 and r["exit_code"] == 2 and r["error"] is None
    assert r["pc"] == 0x4000_0000 + 12 and r["message"] == ""
    assert r["stats"]["hvc_exits"] == 0 and "mmio_exits" in r["stats"]
    p = vmmpy("run", str(tmp_path / "missing.elf"), "--result-json", str(out))
    assert p.returncode == 2 and "missing.elf" in one_error_line(p)
    r = _result(out)
    assert r["reason"] == "ERROR" and r["status"] is None and r["exit_code"] == 2 and "missing.elf" in r["error"]


def test_result_json_for_a_timeout_and_a_guest_error(raw_guest, tmp_path):
    out = tmp_path / "r.json"
    p = vmmpy(
        "run", raw_guest(code(*PRINT_X, B_SELF)), "--format", "raw", "--timeout", "0.3", "--result-json", str(out)
    )
    assert p.returncode == 124
    r = _result(out)
    assert r["reason"] == "TIMEOUT" and r["exit_code"] == 124 and r["stats"]["mmio_exits"] == 1
    p = vmmpy("run", raw_guest(code(0)), "--format", "raw", "--result-json", str(out))  # udf #0: no vectors
    r = _result(out)
    assert p.returncode == 121 and r["reason"] == "GUEST_ERROR" and r["exit_code"] == 121 and r["message"]


def test_result_json_path_is_checked_before_the_run(guest, tmp_path):
    p = vmmpy("run", guest("hello"), "--result-json", str(tmp_path / "no" / "such" / "r.json"))
    assert p.returncode == 2 and "--result-json: directory" in one_error_line(p) and p.stdout == ""
    os.mkfifo(tmp_path / "fifo")
    p = vmmpy("run", guest("hello"), "--result-json", str(tmp_path / "fifo"))
    assert p.returncode == 2 and "not a regular file" in one_error_line(p)


def test_ram_512_boots_with_512_mib(guest, tmp_path):
    """--ram 512 is 512 MiB (issue 19) and boots (test_machine_ram_in_mib_and_0_refused: the size the guest gets)."""
    from vmmpy.cli import build_parser

    assert build_parser().parse_args(["run", "k", "--ram", "512"]).ram == 512 << 20
    p = vmmpy("run", guest("hello"), "--ram", "512")
    assert p.returncode == 0 and "Hello from vmmpy guest!" in p.stdout, p.stderr


def test_version():
    from vmmpy import __version__

    p = vmmpy("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"vmmpy {__version__}"


def test_device_options_are_seen_by_the_guest(guest, tmp_path):
    """--disk, --share, --rng, --cmdline, --initrd and --cpu-model, checked from inside (guest/devlist.c
    lists the virtio devices and reads /chosen and cpu@0 from the device tree)."""
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * (3 << 20))
    share = tmp_path / "share"
    share.mkdir()
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"VMMPY-INITRD-0123456789")
    p = vmmpy(
        "run", guest("devlist"), "--disk", str(disk), "--share", f"{share}:ro:tag=hostfs", "--rng",
        "--cmdline", "console=ttyAMA0 answer=42", "--initrd", str(initrd), "--cpu-model", "cortex-a53",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = p.stdout.replace("\r", "")
    assert "devlist: slot 0: blk (id 2), 6144 sectors\n" in out  # 3 MiB of 512-byte sectors
    assert "devlist: slot 1: rng (id 4)\n" in out
    assert 'devlist: slot 2: 9p (id 9), tag "hostfs"\n' in out
    assert "devlist: 3 virtio devices\n" in out
    assert "devlist: bootargs: console=ttyAMA0 answer=42\n" in out
    assert "devlist: cpu0: arm,cortex-a53\n" in out
    assert 'devlist: initrd: 23 bytes, begins "VMMPY-INITRD-012"\n' in out
    # and without them: nothing of the kind
    p = vmmpy("run", guest("devlist"), "--cpu-model", "cortex-a57")
    out = p.stdout.replace("\r", "")
    assert p.returncode == 0 and "devlist: 0 virtio devices\n" in out and "devlist: initrd: none\n" in out
    assert "devlist: cpu0: arm,cortex-a57\n" in out
