"""A small PCI + virtio-pci (modern) driver in Python, for tier-1 tests of the PCI host and transport.

Like tests/virtio_driver.py it drives a :class:`vmmpy.Machine` that is *not running*, through
``mmio_read``/``mmio_write`` (ECAM config space, the BARs) and guest RAM (the virtqueues, reusing
virtio_driver's ``Virtqueue``). Nothing here knows our BAR layout: it reads the capabilities.

API (stable):

- ``cfg_read(m, slot, off, size=4)``, ``cfg_write(m, slot, off, val, size=4)``: bus 0 config space.
- ``find_functions(m) -> [(slot, vendor, device)]``.
- ``VirtioPCI(m, slot)``: ``place_bars(base)`` sizes and places each memory BAR from `base` and
  enables memory decoding; ``caps`` ({cfg_type: (bar, offset, length)}), ``notify_mult``;
  ``common_read(off, size)``/``common_write(off, val, size)``; ``status()``, ``set_status(s)``,
  ``negotiate()``, ``setup_queue(i, size=None, vector=NO_VECTOR) -> Virtqueue``,
  ``init(queues=1, vectors=None)``, ``isr()`` (read-to-clear), ``enable_intx(cpu=0)`` (GIC set-up of
  INTA#'s SPI), ``intx_intid``; MSI-X: ``msix_cap``, ``msix_size``, ``msix_enable(on, mask_all=False)``,
  ``msix_entry(vec, addr, data, masked)``, ``msix_mask(vec, masked)``, ``msix_pending(vec)``.
"""

from __future__ import annotations

from .virtio_driver import GICD, GICR, GuestAlloc, Virtqueue

ECAM = 0x3F00_0000
MMIO_WINDOW = 0x1000_0000
INTX_INTID0 = 35  # INTA# of slot s: 35 + s % 4

# type 0 header
VENDOR, DEVICE, COMMAND, STATUS, CLASS_REV, HEADER_TYPE = 0x00, 0x02, 0x04, 0x06, 0x08, 0x0E
BAR0, SUBSYS_VENDOR, CAP_PTR, INT_LINE, INT_PIN = 0x10, 0x2C, 0x34, 0x3C, 0x3D
CMD_MEM, CMD_MASTER, CMD_INTX_DISABLE = 0x2, 0x4, 0x400
STATUS_INTX, STATUS_CAPS = 0x8, 0x10
CAP_VNDR, CAP_MSIX = 0x09, 0x11
MSIX_ENABLE, MSIX_MASKALL = 0x8000, 0x4000

# virtio_pci_cap cfg_type (§4.1.4)
COMMON, NOTIFY, ISR, DEVICE_CFG = 1, 2, 3, 4
# virtio_pci_common_cfg (§4.1.4.3)
DFSELECT, DF, GFSELECT, GF, MSIX_CONFIG, NUM_QUEUES = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x12
DEVICE_STATUS, CONFIG_GENERATION, Q_SELECT, Q_SIZE, Q_MSIX, Q_ENABLE = 0x14, 0x15, 0x16, 0x18, 0x1A, 0x1C
Q_NOTIFY_OFF, Q_DESC, Q_DRIVER, Q_DEVICE, Q_RESET = 0x1E, 0x20, 0x28, 0x30, 0x3A
NO_VECTOR = 0xFFFF

ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = 1, 2, 4, 8, 64
F_VERSION_1 = 1 << 32


def cfg_addr(slot: int, off: int, bus: int = 0) -> int:
    return ECAM + (bus << 20) + (slot << 15) + off


def cfg_read(m, slot: int, off: int, size: int = 4) -> int:
    return m.mmio_read(cfg_addr(slot, off), size)


def cfg_write(m, slot: int, off: int, val: int, size: int = 4) -> None:
    m.mmio_write(cfg_addr(slot, off), val, size)


def find_functions(m) -> list[tuple[int, int, int]]:
    out = []
    for slot in range(32):
        vid = cfg_read(m, slot, VENDOR)
        if vid & 0xFFFF != 0xFFFF:
            out.append((slot, vid & 0xFFFF, vid >> 16))
    return out


def caps(m, slot: int) -> list[tuple[int, int]]:
    """(offset, cap id) of each capability, in list order (bounded: a loop would end the walk)."""
    out = []
    if not cfg_read(m, slot, STATUS, 2) & STATUS_CAPS:
        return out
    p = cfg_read(m, slot, CAP_PTR, 1)
    while p and len(out) < 48:
        out.append((p, cfg_read(m, slot, p, 1)))
        p = cfg_read(m, slot, p + 1, 1)
    return out


class PciVirtqueue(Virtqueue):
    def notify(self) -> None:
        self.dev.notify(self.index)


class VirtioPCI:
    """The driver side of one virtio-pci function on bus 0."""

    def __init__(self, m, slot: int, alloc: GuestAlloc | None = None):
        self.m = m
        self.slot = slot
        self.alloc = alloc or GuestAlloc.of(m)
        self.intx_intid = INTX_INTID0 + slot % 4
        self.bar_addr: dict[int, int] = {}
        self.caps: dict[int, tuple[int, int, int]] = {}
        self.notify_mult = 0
        self.msix_cap = next((o for o, i in caps(m, slot) if i == CAP_MSIX), 0)
        self.msix_size = (self.cfg(self.msix_cap + 2, 2) & 0x7FF) + 1 if self.msix_cap else 0
        self.queues: list[Virtqueue] = []
        for off, cid in caps(m, slot):
            if cid != CAP_VNDR:
                continue
            t, bar = self.cfg(off + 3, 1), self.cfg(off + 4, 1)
            if t not in self.caps:
                self.caps[t] = (bar, self.cfg(off + 8), self.cfg(off + 12))
            if t == NOTIFY:
                self.notify_mult = self.cfg(off + 16)

    def cfg(self, off: int, size: int = 4) -> int:
        return cfg_read(self.m, self.slot, off, size)

    def set_cfg(self, off: int, val: int, size: int = 4) -> None:
        cfg_write(self.m, self.slot, off, val, size)

    def bar_size(self, bar: int) -> int:
        off = BAR0 + 4 * bar
        old = self.cfg(off)
        self.set_cfg(off, 0xFFFFFFFF)
        mask = self.cfg(off) & ~0xF
        self.set_cfg(off, old)
        return (~mask + 1) & 0xFFFFFFFF if mask else 0

    def place_bars(self, base: int = MMIO_WINDOW) -> None:
        for bar in range(6):
            size = self.bar_size(bar)
            if size:
                base = (base + size - 1) & ~(size - 1)
                self.set_cfg(BAR0 + 4 * bar, base)
                self.bar_addr[bar] = base
                base += size
        self.set_cfg(COMMAND, self.cfg(COMMAND, 2) | CMD_MEM | CMD_MASTER, 2)

    def addr(self, cfg_type: int, off: int = 0) -> int:
        bar, start, _ = self.caps[cfg_type]
        return self.bar_addr[bar] + start + off

    def common_read(self, off: int, size: int) -> int:
        return self.m.mmio_read(self.addr(COMMON, off), size)

    def common_write(self, off: int, val: int, size: int) -> None:
        self.m.mmio_write(self.addr(COMMON, off), val, size)

    def status(self) -> int:
        return self.common_read(DEVICE_STATUS, 1)

    def set_status(self, s: int) -> None:
        self.common_write(DEVICE_STATUS, s, 1)

    def device_features(self) -> int:
        self.common_write(DFSELECT, 0, 4)
        lo = self.common_read(DF, 4)
        self.common_write(DFSELECT, 1, 4)
        return lo | self.common_read(DF, 4) << 32

    def negotiate(self) -> bool:
        self.set_status(0)
        self.set_status(ACKNOWLEDGE | DRIVER)
        f = self.device_features() & F_VERSION_1
        for word in (0, 1):
            self.common_write(GFSELECT, word, 4)
            self.common_write(GF, (f >> (32 * word)) & 0xFFFFFFFF, 4)
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK)
        return bool(self.status() & FEATURES_OK)

    def setup_queue(self, index: int, size: int | None = None, vector: int = NO_VECTOR) -> Virtqueue:
        self.common_write(Q_SELECT, index, 2)
        size = size or self.common_read(Q_SIZE, 2)
        q = PciVirtqueue(self, index, size)
        self.common_write(Q_SIZE, size, 2)
        self.common_write(Q_MSIX, vector, 2)
        for off, gpa in ((Q_DESC, q.desc), (Q_DRIVER, q.avail), (Q_DEVICE, q.used)):
            self.common_write(off, gpa & 0xFFFFFFFF, 4)
            self.common_write(off + 4, gpa >> 32, 4)
        self.common_write(Q_ENABLE, 1, 2)
        self.queues.append(q)
        return q

    def init(self, queues: int = 1, vectors: list[int] | None = None) -> list[Virtqueue]:
        assert self.negotiate()
        qs = [self.setup_queue(i, vector=(vectors or [NO_VECTOR] * queues)[i]) for i in range(queues)]
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        return qs

    def notify(self, index: int) -> None:
        self.common_write(Q_SELECT, index, 2)
        off = self.common_read(Q_NOTIFY_OFF, 2)
        self.m.mmio_write(self.addr(NOTIFY, off * self.notify_mult), index, 2)

    def isr(self) -> int:
        return self.m.mmio_read(self.addr(ISR), 1)

    def enable_intx(self, cpu: int = 0) -> None:
        """INTA#'s SPI (level) to vCPU `cpu` through the GIC, group 1, affinity routing."""
        m, intid = self.m, self.intx_intid
        n, bit = intid // 32, 1 << (intid % 32)
        m.mmio_write(GICD + 0x0000, 0x12)  # GICD_CTLR: ARE | EnableGrp1
        m.mmio_write(GICD + 0x0080 + 4 * n, m.mmio_read(GICD + 0x0080 + 4 * n) | bit)  # GICD_IGROUPRn
        m.mmio_write(GICD + 0x0100 + 4 * n, bit)  # GICD_ISENABLERn
        m.mmio_write(GICD + 0x6000 + 8 * intid, cpu)  # GICD_IROUTERn
        m.mmio_write(GICR + 0x20000 * cpu + 0x0014, 0)  # GICR_WAKER
        m.sysreg_write("ICC_PMR_EL1", 0xFF, cpu=cpu)
        m.sysreg_write("ICC_IGRPEN1_EL1", 1, cpu=cpu)

    # -- MSI-X (PCI 3.0 §6.8.2) -------------------------------------------------
    def msix_table(self) -> int:
        t = self.cfg(self.msix_cap + 4)
        return self.bar_addr[t & 7] + (t & ~7)

    def msix_pba(self) -> int:
        p = self.cfg(self.msix_cap + 8)
        return self.bar_addr[p & 7] + (p & ~7)

    def msix_enable(self, on: bool = True, mask_all: bool = False) -> None:
        ctrl = self.cfg(self.msix_cap + 2, 2) & 0x7FF
        self.set_cfg(self.msix_cap + 2, ctrl | (MSIX_ENABLE if on else 0) | (MSIX_MASKALL if mask_all else 0), 2)

    def msix_entry(self, vec: int, addr: int, data: int, masked: bool = True) -> None:
        at = self.msix_table() + 16 * vec
        self.m.mmio_write(at, addr & 0xFFFFFFFF)
        self.m.mmio_write(at + 4, addr >> 32)
        self.m.mmio_write(at + 8, data)
        self.m.mmio_write(at + 12, int(masked))

    def msix_mask(self, vec: int, masked: bool) -> None:
        self.m.mmio_write(self.msix_table() + 16 * vec + 12, int(masked))

    def msix_pending(self, vec: int) -> bool:
        word = self.m.mmio_read(self.msix_pba() + 8 * (vec // 64), 8)
        return bool(word >> (vec % 64) & 1)
