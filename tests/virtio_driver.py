"""A small virtio-mmio (version 2) driver in Python, for device-level tests of libvmm's virtio devices.

It drives a device the way Linux's virtio_mmio.c does, but through the test entry points of a
:class:`vmmpy.Machine` that is *not running*: ``mmio_read``/``mmio_write`` for the registers,
``write_memory``/``read_memory`` for the split virtqueues it lays out in guest RAM. Nothing here
depends on a particular device; the virtio-gpu, input and 9p tests use it as well as the transport
conformance suite (tests/test_virtio_mmio.py, with the dummy device: ``Machine(virtio_test_devices=N)``).

Typical use::

    from tests.virtio_driver import VirtioMMIO, find_devices

    with vmmpy.Machine(virtio_test_devices=1) as m:
        (slot, dev_id), = find_devices(m)
        dev = VirtioMMIO(m, slot)
        dev.enable_irq()                       # route its SPI to vCPU 0 through the GIC
        q0, q1 = dev.init(queues=2)            # reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK
        head = q0.add([b"hello"], [5])         # readable buffers, then writable buffer sizes
        q0.notify()
        used = q0.get_used()                   # [(head, written_len)]
        data = q0.chain_data(head)             # the writable buffers' contents, concatenated
        assert dev.interrupt_status() & 1 and m.irq_line(0)
        dev.ack()

API (stable):

- ``find_devices(m) -> [(slot, device_id)]``: the populated slots (DeviceID != 0); device IDs are
  ``ID_NET``, ``ID_BLOCK``, ``ID_CONSOLE``, ``ID_ENTROPY``, ``ID_9P``, ``ID_GPU``, ``ID_INPUT``, ``ID_DUMMY``.
- ``slot_base(slot)``, ``slot_intid(slot)``: a slot's MMIO base and GIC INTID (48 + slot).
- ``GuestAlloc``: a bump allocator in guest RAM; one per Machine is shared by every driver object
  (``GuestAlloc.of(m)``), starting at RAM_BASE + 16 MiB.
- ``VirtioMMIO(m, slot)``:
  ``read(reg)``/``write(reg, val)`` (32-bit registers, offsets below), ``magic``, ``version``,
  ``device_id``, ``vendor_id``, ``device_features()``, ``set_driver_features(f)``, ``status()``,
  ``set_status(s)``, ``add_status(bits)``, ``reset()``, ``negotiate(features=None) -> bool`` (accepts
  the device's features & `features`, VERSION_1 always unless `features` excludes it; True if
  FEATURES_OK stuck), ``setup_queue(index, size=None) -> Virtqueue``, ``init(queues=N, features=None,
  sizes=None) -> [Virtqueue]``, ``config_read(off, size=4)``, ``config_write(off, val, size=4)``,
  ``config_generation()``, ``interrupt_status()``, ``ack(bits=None)``, ``needs_reset()``,
  ``enable_irq(cpu=0)``, ``irq_line(cpu=0)``.
- ``Virtqueue``: ``index``, ``size``, ``desc``/``avail``/``used`` (guest addresses),
  ``add(out, in_sizes, indirect=False) -> head`` (out: list of bytes; in_sizes: list of writable
  buffer sizes), ``notify()``, ``get_used() -> [(id, len)]`` (new used entries since the last call),
  ``chain_data(head) -> bytes`` (writable buffers of a chain added with ``add``), ``used_idx()``,
  ``set_used_event(n)``, ``set_avail_flags(f)``, ``avail_event()``; raw access for hostile tests:
  ``write_desc(i, addr, length, flags=0, next=0, table=None)``, ``publish(head)`` (put a head in the
  avail ring and bump its index), ``set_avail_idx(n)``, ``buf(size) -> gpa`` (allocate RAM).
"""

from __future__ import annotations

import struct
import weakref

RAM_BASE = 0x4000_0000
VIRTIO_BASE = 0x0A00_0000
VIRTIO_STRIDE = 0x200
VIRTIO_SLOTS = 32
VIRTIO_INTID0 = 48

# Device IDs (virtio 1.2 §5; the C list is csrc/dev/virtio_ids.h)
ID_NET, ID_BLOCK, ID_CONSOLE, ID_ENTROPY, ID_9P, ID_GPU, ID_INPUT = 1, 2, 3, 4, 9, 16, 18
ID_DUMMY = 0xFFF0  # ours: the transport conformance device

GICD, GICR = 0x0800_0000, 0x080A_0000

# virtio-mmio v2 registers (virtio 1.2 §4.2.2)
MAGIC, VERSION, DEVICE_ID, VENDOR_ID = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY, QUEUE_NOTIFY = 0x030, 0x034, 0x038, 0x044, 0x050
INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH = 0x080, 0x084
QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
SHM_SEL, SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH = 0x0AC, 0x0B0, 0x0B4, 0x0B8, 0x0BC
QUEUE_RESET = 0x0C0
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

MAGIC_VALUE = 0x74726976  # "virt"

# status bits (§2.1)
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET, FAILED = 1, 2, 4, 8, 64, 128

# feature bits (§6)
F_INDIRECT_DESC = 1 << 28
F_EVENT_IDX = 1 << 29
F_VERSION_1 = 1 << 32

# descriptor flags (§2.7.5)
DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT = 1, 2, 4
AVAIL_F_NO_INTERRUPT = 1

# InterruptStatus bits
INT_VRING, INT_CONFIG = 1, 2


def slot_base(slot: int) -> int:
    return VIRTIO_BASE + VIRTIO_STRIDE * slot


def slot_intid(slot: int) -> int:
    return VIRTIO_INTID0 + slot


def find_devices(m) -> list[tuple[int, int]]:
    """(slot, device id) of every virtio-mmio slot with a device behind it."""
    out = []
    for slot in range(VIRTIO_SLOTS):
        base = slot_base(slot)
        if m.mmio_read(base + MAGIC) != MAGIC_VALUE:
            continue
        dev_id = m.mmio_read(base + DEVICE_ID)
        if dev_id:
            out.append((slot, dev_id))
    return out


class GuestAlloc:
    """Bump allocator for driver structures and buffers in guest RAM (never frees)."""

    _per_machine: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, m, base: int = RAM_BASE + (16 << 20), size: int = 64 << 20):
        self._m = weakref.ref(m)  # not m itself: a value that holds its key would keep every machine alive
        self.next = base
        self.end = base + size

    @property
    def m(self):
        return self._m()

    @m.setter
    def m(self, m) -> None:  # a driver rebound to a restored machine (test_snapshot_devices.rebind)
        self._m = weakref.ref(m)

    @classmethod
    def of(cls, m) -> GuestAlloc:
        a = cls._per_machine.get(m)
        if a is None:
            a = cls._per_machine[m] = cls(m)
        return a

    def alloc(self, size: int, align: int = 16, zero: bool = True) -> int:
        at = (self.next + align - 1) & ~(align - 1)
        if at + size > self.end:
            raise MemoryError("guest allocator exhausted")
        self.next = at + size
        if zero and size:
            self.m.write_memory(at, bytes(size))
        return at


class Virtqueue:
    """One split virtqueue laid out in guest RAM (§2.7)."""

    def __init__(self, dev: VirtioMMIO, index: int, size: int):
        self.dev = dev
        self.m = dev.m
        self.index = index
        self.size = size
        a = dev.alloc
        self.desc = a.alloc(16 * size, 16)
        self.avail = a.alloc(6 + 2 * size, 2)  # flags, idx, ring[size], used_event
        self.used = a.alloc(6 + 8 * size, 4)  # flags, idx, ring[size]{id, len}, avail_event
        self.free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0
        self.chains: dict[int, list[tuple[int, int]]] = {}  # head -> writable (gpa, len)
        self.ndesc: dict[int, list[int]] = {}  # head -> descriptors it uses

    # -- raw access ----------------------------------------------------------
    def buf(self, size: int, align: int = 16) -> int:
        return self.dev.alloc.alloc(max(size, 1), align)

    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, next: int = 0, table: int | None = None):
        base = self.desc if table is None else table
        self.m.write_memory(base + 16 * i, struct.pack("<QIHH", addr, length, flags, next))

    def publish(self, head: int) -> None:
        """Put `head` in the avail ring and make it visible (bump avail.idx)."""
        self.m.write_memory(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.set_avail_idx(self.avail_idx)

    def set_avail_idx(self, n: int) -> None:
        self.m.write_memory(self.avail + 2, struct.pack("<H", n & 0xFFFF))

    def set_avail_flags(self, flags: int) -> None:
        self.m.write_memory(self.avail, struct.pack("<H", flags))

    def set_used_event(self, n: int) -> None:
        self.m.write_memory(self.avail + 4 + 2 * self.size, struct.pack("<H", n & 0xFFFF))

    def used_idx(self) -> int:
        return struct.unpack("<H", self.m.read_memory(self.used + 2, 2))[0]

    def avail_event(self) -> int:
        return struct.unpack("<H", self.m.read_memory(self.used + 4 + 8 * self.size, 2))[0]

    # -- the normal driver path ----------------------------------------------
    def add(self, out: list[bytes], in_sizes: list[int], indirect: bool = False, fill: int | None = None) -> int:
        """Add a chain of readable buffers `out` then writable buffers of `in_sizes` bytes; returns its head.
        `fill`: the writable buffers hold this byte before the chain is published (a device with work waiting
        may take the chain at once, so filling them after add() would race with it)."""
        segs: list[tuple[int, int, int]] = []
        writable = []
        for data in out:
            gpa = self.buf(len(data))
            if data:
                self.m.write_memory(gpa, bytes(data))
            segs.append((gpa, len(data), 0))
        for n in in_sizes:
            gpa = self.buf(n)
            if fill is not None:
                self.m.write_memory(gpa, bytes([fill]) * n)
            segs.append((gpa, n, DESC_F_WRITE))
            writable.append((gpa, n))
        if not segs:
            raise ValueError("a chain needs at least one buffer")
        if indirect:
            table = self.buf(16 * len(segs), 16)
            for i, (gpa, n, fl) in enumerate(segs):
                nxt = DESC_F_NEXT if i + 1 < len(segs) else 0
                self.write_desc(i, gpa, n, fl | nxt, i + 1 if nxt else 0, table=table)
            need = 1
        else:
            need = len(segs)
        if len(self.free) < need:
            raise RuntimeError(f"queue {self.index}: no free descriptors")
        ids = [self.free.pop(0) for _ in range(need)]
        if indirect:
            self.write_desc(ids[0], table, 16 * len(segs), DESC_F_INDIRECT)
        else:
            for i, (gpa, n, fl) in enumerate(segs):
                last = i + 1 == len(segs)
                self.write_desc(ids[i], gpa, n, fl | (0 if last else DESC_F_NEXT), 0 if last else ids[i + 1])
        head = ids[0]
        self.chains[head] = writable
        self.ndesc[head] = ids
        self.publish(head)
        return head

    def notify(self) -> None:
        self.dev.write(QUEUE_NOTIFY, self.index)

    def get_used(self) -> list[tuple[int, int]]:
        """Used elements (id, len) added since the previous call; their descriptors are freed."""
        out = []
        idx = self.used_idx()
        while self.last_used != idx:
            at = self.used + 4 + 8 * (self.last_used % self.size)
            uid, ulen = struct.unpack("<II", self.m.read_memory(at, 8))
            out.append((uid, ulen))
            self.free.extend(self.ndesc.pop(uid, []))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def chain_data(self, head: int) -> bytes:
        """The contents of the writable buffers of a chain added with add(), concatenated."""
        return b"".join(self.m.read_memory(gpa, n) for gpa, n in self.chains.get(head, []))


class VirtioMMIO:
    """The driver side of one virtio-mmio v2 slot."""

    def __init__(self, m, slot: int, alloc: GuestAlloc | None = None):
        self.m = m
        self.slot = slot
        self.base = slot_base(slot)
        self.intid = slot_intid(slot)
        self.alloc = alloc or GuestAlloc.of(m)
        self.queues: dict[int, Virtqueue] = {}
        self.features = 0

    # -- registers -----------------------------------------------------------
    def read(self, reg: int, size: int = 4) -> int:
        return self.m.mmio_read(self.base + reg, size)

    def write(self, reg: int, val: int, size: int = 4) -> None:
        self.m.mmio_write(self.base + reg, val, size)

    @property
    def magic(self) -> int:
        return self.read(MAGIC)

    @property
    def version(self) -> int:
        return self.read(VERSION)

    @property
    def device_id(self) -> int:
        return self.read(DEVICE_ID)

    @property
    def vendor_id(self) -> int:
        return self.read(VENDOR_ID)

    def device_features(self) -> int:
        f = 0
        for sel in (0, 1):
            self.write(DEVICE_FEATURES_SEL, sel)
            f |= self.read(DEVICE_FEATURES) << (32 * sel)
        return f

    def set_driver_features(self, f: int) -> None:
        for sel in (0, 1):
            self.write(DRIVER_FEATURES_SEL, sel)
            self.write(DRIVER_FEATURES, (f >> (32 * sel)) & 0xFFFF_FFFF)

    def status(self) -> int:
        return self.read(STATUS)

    def set_status(self, s: int) -> None:
        self.write(STATUS, s)

    def add_status(self, bits: int) -> None:
        self.write(STATUS, self.status() | bits)

    def needs_reset(self) -> bool:
        return bool(self.status() & NEEDS_RESET)

    def reset(self) -> None:
        self.write(STATUS, 0)
        assert self.status() == 0, "the device did not reset"
        self.queues.clear()

    def negotiate(self, features: int | None = None) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, accept device features & `features` (default: all), set FEATURES_OK."""
        self.reset()
        self.add_status(ACKNOWLEDGE)
        self.add_status(DRIVER)
        offered = self.device_features()
        self.features = offered if features is None else offered & features
        self.set_driver_features(self.features)
        self.add_status(FEATURES_OK)
        return bool(self.status() & FEATURES_OK)

    def setup_queue(self, index: int, size: int | None = None) -> Virtqueue:
        self.write(QUEUE_SEL, index)
        qmax = self.read(QUEUE_NUM_MAX)
        if qmax == 0:
            raise RuntimeError(f"slot {self.slot}: queue {index} is not available")
        if self.read(QUEUE_READY):
            raise RuntimeError(f"slot {self.slot}: queue {index} is already live")
        size = size or qmax
        q = Virtqueue(self, index, size)
        self.write(QUEUE_NUM, size)
        for lo, val in ((QUEUE_DESC_LOW, q.desc), (QUEUE_DRIVER_LOW, q.avail), (QUEUE_DEVICE_LOW, q.used)):
            self.write(lo, val & 0xFFFF_FFFF)
            self.write(lo + 4, val >> 32)
        self.write(QUEUE_READY, 1)
        self.queues[index] = q
        return q

    def init(self, queues: int = 1, features: int | None = None, sizes: list[int] | None = None) -> list[Virtqueue]:
        """The whole §3.1.1 initialisation; returns the queues. Raises if the device refuses the features."""
        if not self.negotiate(features):
            raise RuntimeError(f"slot {self.slot}: FEATURES_OK refused for features {self.features:#x}")
        qs = [self.setup_queue(i, sizes[i] if sizes else None) for i in range(queues)]
        self.add_status(DRIVER_OK)
        return qs

    # -- config space, interrupts ----------------------------------------------
    def config_read(self, off: int, size: int = 4) -> int:
        return self.read(CONFIG + off, size)

    def config_write(self, off: int, val: int, size: int = 4) -> None:
        self.write(CONFIG + off, val, size)

    def config_generation(self) -> int:
        return self.read(CONFIG_GENERATION)

    def interrupt_status(self) -> int:
        return self.read(INTERRUPT_STATUS)

    def ack(self, bits: int | None = None) -> None:
        self.write(INTERRUPT_ACK, self.interrupt_status() if bits is None else bits)

    def enable_irq(self, cpu: int = 0) -> None:
        """Configure the GIC so that this slot's SPI reaches vCPU `cpu`'s IRQ line (group 1, affinity routing)."""
        m, intid = self.m, self.intid
        n, bit = intid // 32, 1 << (intid % 32)
        m.mmio_write(GICD + 0x0000, 0x12)  # GICD_CTLR: ARE | EnableGrp1
        m.mmio_write(GICD + 0x0080 + 4 * n, m.mmio_read(GICD + 0x0080 + 4 * n) | bit)  # GICD_IGROUPRn
        m.mmio_write(GICD + 0x0100 + 4 * n, bit)  # GICD_ISENABLERn
        m.mmio_write(GICD + 0x6000 + 8 * intid, cpu)  # GICD_IROUTERn: Aff0 = cpu
        m.mmio_write(GICD + 0x6000 + 8 * intid + 4, 0)
        m.mmio_write(GICR + 0x20000 * cpu + 0x0014, 0)  # GICR_WAKER: wake the redistributor
        m.sysreg_write("ICC_PMR_EL1", 0xFF, cpu=cpu)
        m.sysreg_write("ICC_IGRPEN1_EL1", 1, cpu=cpu)

    def irq_line(self, cpu: int = 0) -> bool:
        return self.m.irq_line(cpu)
