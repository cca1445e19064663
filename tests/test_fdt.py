"""Tier 1: the generated device tree, read back with pylibfdt, node by node and property by property."""

from __future__ import annotations

import struct

import libfdt
import pytest

import vmmpy

from .conftest import RAM_BASE


def props(fdt: libfdt.Fdt, path: str) -> dict[str, bytes]:
    node = fdt.path_offset(path)
    out = {}
    off = fdt.first_property_offset(node, [libfdt.FDT_ERR_NOTFOUND])
    while off >= 0:
        p = fdt.get_property_by_offset(off)
        out[p.name] = bytes(p)
        off = fdt.next_property_offset(off, [libfdt.FDT_ERR_NOTFOUND])
    return out


def cells(b: bytes) -> list[int]:
    return list(struct.unpack(f">{len(b) // 4}I", b))


def strings(b: bytes) -> list[str]:
    return b.rstrip(b"\0").decode().split("\0")


def children(fdt: libfdt.Fdt, path: str) -> list[str]:
    node = fdt.path_offset(path)
    out = []
    sub = fdt.first_subnode(node, [libfdt.FDT_ERR_NOTFOUND])
    while sub >= 0:
        out.append(fdt.get_name(sub))
        sub = fdt.next_subnode(sub, [libfdt.FDT_ERR_NOTFOUND])
    return out


@pytest.fixture
def fdt_of(guest, tmp_path):
    def make(**kw) -> tuple[libfdt.Fdt, vmmpy.Machine]:
        m = vmmpy.Machine(guest("hello"), **kw)
        blob = m.dtb()
        return libfdt.Fdt(blob), m

    return make


def test_tree_shape(fdt_of):
    fdt, m = fdt_of(cpus=2)
    with m:
        assert sorted(children(fdt, "/")) == sorted(
            ["chosen", "memory@40000000", "cpus", "psci", "intc@8000000", "timer", "pmu", "apb-pclk", "pl011@9000000"]
        )
        root = props(fdt, "/")
        assert strings(root["compatible"]) == ["linux,dummy-virt"]
        assert cells(root["#address-cells"]) == [2] and cells(root["#size-cells"]) == [2]
        gic_phandle = fdt.get_phandle(fdt.path_offset("/intc@8000000"))
        assert cells(root["interrupt-parent"]) == [gic_phandle]
        assert set(root) == {"compatible", "model", "#address-cells", "#size-cells", "interrupt-parent"}


@pytest.mark.parametrize(
    "kw",
    [{}, {"cpus": 4, "its": True, "rng": True, "virtio_console": True}, {"transport": "pci", "rng": True}],
    ids=["board", "mmio-devices", "pci"],
)
def test_the_blob_passes_libfdts_full_check(fdt_of, kw):
    """The whole blob is well formed (fdt_check_full: every node begun is ended, properties inside nodes,
    names and string offsets valid), not only the nodes a lookup reaches: a node left open swallows the nodes
    after it and leaves the tree unbalanced, which a path lookup still walks past."""
    fdt, m = fdt_of(**kw)
    with m:
        blob = bytearray(m.dtb())
        assert libfdt.fdt_check_full(blob, len(blob)) == 0
        assert "pl011@9000000" in children(fdt, "/")


def test_chosen_memory_and_initrd(fdt_of, tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x" * 1234)
    fdt, m = fdt_of(ram="128M", cmdline="console=ttyAMA0 root=/dev/vda", initrd=str(initrd))
    with m:
        bi = m.boot_info()
        ch = props(fdt, "/chosen")
        assert ch["bootargs"] == b"console=ttyAMA0 root=/dev/vda\0"
        assert ch["stdout-path"] == b"/pl011@9000000\0"
        assert struct.unpack(">Q", ch["linux,initrd-start"])[0] == bi.initrd_start
        assert struct.unpack(">Q", ch["linux,initrd-end"])[0] == bi.initrd_start + 1234
        mem = props(fdt, "/memory@40000000")
        assert mem["device_type"] == b"memory\0"
        assert struct.unpack(">QQ", mem["reg"]) == (RAM_BASE, 128 << 20)


def test_no_initrd_properties_without_initrd(fdt_of):
    fdt, m = fdt_of()
    with m:
        ch = props(fdt, "/chosen")
        assert "linux,initrd-start" not in ch and ch["bootargs"] == b"\0"


@pytest.mark.parametrize("n", [1, 4, 8])
def test_cpus(fdt_of, n):
    fdt, m = fdt_of(cpus=n)
    with m:
        assert cells(props(fdt, "/cpus")["#address-cells"]) == [1]
        assert cells(props(fdt, "/cpus")["#size-cells"]) == [0]
        assert children(fdt, "/cpus") == [f"cpu@{i}" for i in range(n)]
        for i in range(n):
            c = props(fdt, f"/cpus/cpu@{i}")
            assert c["device_type"] == b"cpu\0"
            assert c["compatible"] == b"arm,cortex-a72\0"
            assert cells(c["reg"]) == [i]
            assert c["enable-method"] == b"psci\0"


@pytest.mark.parametrize(
    "model, compatible",
    [
        ("cortex-a72", "arm,cortex-a72"),
        ("cortex-a57", "arm,cortex-a57"),
        ("cortex-a53", "arm,cortex-a53"),
        ("max", "arm,armv8"),
    ],
)
def test_cpu_compatible_follows_the_model(fdt_of, model, compatible):
    fdt, m = fdt_of(cpu_model=model)
    with m:
        assert props(fdt, "/cpus/cpu@0")["compatible"] == compatible.encode() + b"\0"


def test_psci_gic_timer(fdt_of):
    fdt, m = fdt_of(cpus=3)
    with m:
        psci = props(fdt, "/psci")
        assert strings(psci["compatible"]) == ["arm,psci-1.0", "arm,psci-0.2"]
        assert psci["method"] == b"hvc\0"
        gic = props(fdt, "/intc@8000000")
        assert gic["compatible"] == b"arm,gic-v3\0"
        assert "interrupt-controller" in gic and gic["interrupt-controller"] == b""
        assert cells(gic["#interrupt-cells"]) == [3]
        assert cells(gic["#redistributor-regions"]) == [1]
        assert struct.unpack(">4Q", gic["reg"]) == (0x0800_0000, 0x10000, 0x080A_0000, 3 * 0x20000)
        assert cells(gic["interrupts"]) == [1, 9, 4]
        timer = props(fdt, "/timer")
        assert timer["compatible"] == b"arm,armv8-timer\0"
        # secure, non-secure physical, virtual, hypervisor PPIs (INTIDs 29, 30, 27, 26), level high
        assert cells(timer["interrupts"]) == [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        assert "always-on" in timer
        # the PMU (csrc/arm/pmu.c): PPI 7 = INTID 23, level high, as on QEMU virt
        pmu = props(fdt, "/pmu")
        assert pmu == {"compatible": b"arm,armv8-pmuv3\0", "interrupts": struct.pack(">3I", 1, 7, 4)}


def test_uart_and_clock(fdt_of):
    fdt, m = fdt_of()
    with m:
        clk = props(fdt, "/apb-pclk")
        assert clk["compatible"] == b"fixed-clock\0"
        assert cells(clk["#clock-cells"]) == [0]
        assert cells(clk["clock-frequency"]) == [24_000_000]
        ph = cells(clk["phandle"])[0]
        uart = props(fdt, "/pl011@9000000")
        assert strings(uart["compatible"]) == ["arm,pl011", "arm,primecell"]
        assert struct.unpack(">QQ", uart["reg"]) == (0x0900_0000, 0x1000)
        assert cells(uart["interrupts"]) == [0, 1, 4]  # SPI 1 = INTID 33
        assert strings(uart["clock-names"]) == ["uartclk", "apb_pclk"]
        assert cells(uart["clocks"]) == [ph, ph]


def test_dtb_in_guest_memory_matches(fdt_of):
    fdt, m = fdt_of()
    with m:
        bi = m.boot_info()
        blob = m.dtb()
        assert bi.dtb_size == len(blob) == fdt.totalsize()
        assert m.read_memory(bi.dtb_addr, len(blob)) == blob
        assert bi.dtb_addr % 8 == 0
