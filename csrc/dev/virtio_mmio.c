/*
 * virtio_mmio.c - the virtio-mmio transport, version 2 only (virtio 1.2
 * §4.2.2): the register file of 32 slots in one window, each register mapped
 * onto the virtio core's accessors (virtio_transport.h), and a level SPI per
 * slot. Status, features, queues and the ISR live in the core (virtio.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "../core/irq.h"
#include "../core/board.h"
#include "../core/fdt.h"
#include "../core/layout.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "virtio_transport.h"

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VERSION 2u
#define VIRTIO_MMIO_VENDOR 0x554D4551u /* "QEMU", as QEMU's devices: drivers never match on it */

/* Register offsets, §4.2.2 table "MMIO Device Register Layout" */
enum {
    REG_MAGIC = 0x000,
    REG_VERSION = 0x004,
    REG_DEVICE_ID = 0x008,
    REG_VENDOR_ID = 0x00c,
    REG_DEVICE_FEATURES = 0x010,
    REG_DEVICE_FEATURES_SEL = 0x014,
    REG_DRIVER_FEATURES = 0x020,
    REG_DRIVER_FEATURES_SEL = 0x024,
    REG_QUEUE_SEL = 0x030,
    REG_QUEUE_NUM_MAX = 0x034,
    REG_QUEUE_NUM = 0x038,
    REG_QUEUE_READY = 0x044,
    REG_QUEUE_NOTIFY = 0x050,
    REG_INTERRUPT_STATUS = 0x060,
    REG_INTERRUPT_ACK = 0x064,
    REG_STATUS = 0x070,
    REG_QUEUE_DESC_LOW = 0x080,
    REG_QUEUE_DESC_HIGH = 0x084,
    REG_QUEUE_DRIVER_LOW = 0x090,
    REG_QUEUE_DRIVER_HIGH = 0x094,
    REG_QUEUE_DEVICE_LOW = 0x0a0,
    REG_QUEUE_DEVICE_HIGH = 0x0a4,
    REG_SHM_SEL = 0x0ac,
    REG_SHM_LEN_LOW = 0x0b0,
    REG_SHM_LEN_HIGH = 0x0b4,
    REG_SHM_BASE_LOW = 0x0b8,
    REG_SHM_BASE_HIGH = 0x0bc,
    REG_QUEUE_RESET = 0x0c0,
    REG_CONFIG_GENERATION = 0x0fc,
    REG_CONFIG = 0x100,
};

/*
 * The transport side of one device on one slot: its register file's own
 * state (the selectors) and its interrupt line. Guarded by the device's lock
 * (vmm__virtio_lock), which the register accessors hold.
 */
struct mmio_slot {
    struct vmm_virtio *v;
    struct vmm_vm *vm;
    unsigned slot, intid;
    uint32_t device_features_sel, driver_features_sel, queue_sel, shm_sel;
    bool level; /* the level driven on the SPI */
};

struct vmm_virtio_mmio_bus {
    struct vmm_vm *vm;
    unsigned count;
    struct mmio_slot *slot[LAYOUT_VIRTIO_SLOTS];
};

/* Level-triggered SPI: high while any ISR bit is set (§4.2.2 InterruptStatus). Device lock held. */
static void mmio_interrupt(void *t, uint32_t isr, enum vmm_virtio_irq why, unsigned q)
{
    struct mmio_slot *s = t;
    bool level = isr != 0;

    (void)why;
    (void)q;
    if (level != s->level) {
        s->level = level;
        vmm__irq_set(s->vm, 0, s->intid, level);
    }
}

static void mmio_reset(void *t)
{
    struct mmio_slot *s = t;

    s->device_features_sel = s->driver_features_sel = s->queue_sel = s->shm_sel = 0;
}

/* The selectors (any value is one the driver may write) and the slot, which must be the same. */
static void mmio_snap(void *t, struct vmm_snap *s)
{
    struct mmio_slot *m = t;
    uint32_t slot = m->slot;

    vmm__snap_u32(s, &slot);
    vmm__snap_u32(s, &m->device_features_sel);
    vmm__snap_u32(s, &m->driver_features_sel);
    vmm__snap_u32(s, &m->queue_sel);
    vmm__snap_u32(s, &m->shm_sel);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if (slot != m->slot) {
        vmm__snap_fail(s, "the device was on virtio-mmio slot %" PRIu32 ", it is now on slot %u", slot, m->slot);
        return;
    }
    mmio_interrupt(m, vmm__virtio_isr(m->v), VMM_VIRTIO_IRQ_LOWER, 0); /* the line as the ISR says */
}

static void mmio_destroy(void *t)
{
    free(t);
}

static const struct vmm_virtio_transport_ops mmio_transport = {
    .name = "virtio-mmio",
    .config_max = LAYOUT_VIRTIO_STRIDE - REG_CONFIG,
    .interrupt = mmio_interrupt,
    .reset = mmio_reset,
    .snap = mmio_snap,
    .destroy = mmio_destroy,
};

/* A 64-bit value's low (high = false) or high half replaced */
static uint64_t set_half(uint64_t r, bool high, uint32_t val)
{
    return high ? (r & 0xffffffffULL) | (uint64_t)val << 32 : (r & ~0xffffffffULL) | val;
}

static uint32_t half(uint64_t r, bool high)
{
    return (uint32_t)(high ? r >> 32 : r);
}

/* The queue register behind a QueueDesc/Driver/Device Low/High offset */
static enum vmm_virtq_reg ring_reg(uint64_t off)
{
    return off < REG_QUEUE_DRIVER_LOW   ? VMM_VIRTQ_DESC
           : off < REG_QUEUE_DEVICE_LOW ? VMM_VIRTQ_DRIVER
                                        : VMM_VIRTQ_DEVICE;
}

static uint32_t reg_read(struct mmio_slot *s, uint64_t off)
{
    struct vmm_virtio *v = s->v;

    switch (off) {
    case REG_MAGIC:
        return VIRTIO_MMIO_MAGIC;
    case REG_VERSION:
        return VIRTIO_MMIO_VERSION;
    case REG_DEVICE_ID:
        return vmm__virtio_device_id(v);
    case REG_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case REG_DEVICE_FEATURES:
        return vmm__virtio_device_features_word(v, s->device_features_sel);
    case REG_QUEUE_NUM_MAX:
        return vmm__virtio_queue_num_max(v, s->queue_sel);
    case REG_QUEUE_NUM:
        return (uint32_t)vmm__virtio_queue_reg(v, s->queue_sel, VMM_VIRTQ_NUM);
    case REG_QUEUE_READY:
        return vmm__virtio_queue_enabled(v, s->queue_sel);
    case REG_INTERRUPT_STATUS:
        return vmm__virtio_isr(v);
    case REG_STATUS:
        return vmm__virtio_read_status(v);
    case REG_QUEUE_DESC_LOW:
    case REG_QUEUE_DESC_HIGH:
    case REG_QUEUE_DRIVER_LOW:
    case REG_QUEUE_DRIVER_HIGH:
    case REG_QUEUE_DEVICE_LOW:
    case REG_QUEUE_DEVICE_HIGH:
        return half(vmm__virtio_queue_reg(v, s->queue_sel, ring_reg(off)), off & 4);
    case REG_SHM_LEN_LOW:
    case REG_SHM_LEN_HIGH:
    case REG_SHM_BASE_LOW:
    case REG_SHM_BASE_HIGH:
        return 0xffffffffu; /* no shared memory regions: length -1 */
    case REG_QUEUE_RESET:
        return 0; /* a queue reset completes at once */
    case REG_CONFIG_GENERATION:
        return vmm__virtio_config_generation(v);
    }
    vmm__virtio_guest_error(v, "read of write-only or unknown register 0x%03" PRIx64, off);
    return 0;
}

static void reg_write(struct mmio_slot *s, uint64_t off, uint32_t val)
{
    struct vmm_virtio *v = s->v;

    switch (off) {
    case REG_DEVICE_FEATURES_SEL:
        s->device_features_sel = val;
        return;
    case REG_DRIVER_FEATURES:
        vmm__virtio_write_driver_features_word(v, s->driver_features_sel, val);
        return;
    case REG_DRIVER_FEATURES_SEL:
        s->driver_features_sel = val;
        return;
    case REG_QUEUE_SEL:
        s->queue_sel = val;
        return;
    case REG_QUEUE_NUM:
        vmm__virtio_set_queue_reg(v, s->queue_sel, VMM_VIRTQ_NUM, val);
        return;
    case REG_QUEUE_READY:
        vmm__virtio_queue_enable(v, s->queue_sel, val != 0);
        return;
    case REG_QUEUE_NOTIFY:
        vmm__virtio_queue_kick(v, val);
        return;
    case REG_INTERRUPT_ACK:
        vmm__virtio_ack_isr(v, val);
        return;
    case REG_STATUS:
        vmm__virtio_write_status(v, val);
        return;
    case REG_QUEUE_DESC_LOW:
    case REG_QUEUE_DESC_HIGH:
    case REG_QUEUE_DRIVER_LOW:
    case REG_QUEUE_DRIVER_HIGH:
    case REG_QUEUE_DEVICE_LOW:
    case REG_QUEUE_DEVICE_HIGH: {
        enum vmm_virtq_reg r = ring_reg(off);
        vmm__virtio_set_queue_reg(v, s->queue_sel, r,
                                  set_half(vmm__virtio_queue_reg(v, s->queue_sel, r), off & 4, val));
        return;
    }
    case REG_SHM_SEL:
        s->shm_sel = val;
        return;
    case REG_QUEUE_RESET:
        if (val == 1)
            vmm__virtio_queue_reset(v, s->queue_sel);
        return;
    }
    vmm__virtio_guest_error(v, "write of 0x%" PRIx32 " to read-only or unknown register 0x%03" PRIx64, val, off);
}

static uint64_t virtio_mmio_read(struct mmio_slot *s, uint64_t off, unsigned size)
{
    struct vmm_virtio *v = s->v;
    uint64_t val = 0;

    vmm__virtio_lock(v);
    if (off >= REG_CONFIG)
        vmm__virtio_config_read(v, (uint32_t)(off - REG_CONFIG), &val, size);
    else if (size != 4 || (off & 3))
        vmm__virtio_guest_error(v, "%u-byte read at 0x%03" PRIx64 ": registers are 32-bit", size, off);
    else
        val = reg_read(s, off);
    vmm__virtio_unlock(v);
    return val;
}

static void virtio_mmio_write(struct mmio_slot *s, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_virtio *v = s->v;

    vmm__virtio_lock(v);
    if (off >= REG_CONFIG)
        vmm__virtio_config_write(v, (uint32_t)(off - REG_CONFIG), &val, size);
    else if (size != 4 || (off & 3))
        vmm__virtio_guest_error(v, "%u-byte write at 0x%03" PRIx64 ": registers are 32-bit", size, off);
    else
        reg_write(s, off, (uint32_t)val);
    vmm__virtio_unlock(v);
}

/*
 * One bus region covers all the slots (backends map whole pages). A slot
 * without a device reads as QEMU's do: magic, version, DeviceID 0 ("no
 * device", §4.2.3.1.1), everything else RAZ/WI.
 */
static uint64_t bus_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_virtio_mmio_bus *bus = dev;
    uint64_t slot = off / LAYOUT_VIRTIO_STRIDE, reg = off % LAYOUT_VIRTIO_STRIDE;

    if (slot < bus->count)
        return virtio_mmio_read(bus->slot[slot], reg, size);
    if (size != 4)
        return 0;
    switch (reg) {
    case REG_MAGIC:
        return VIRTIO_MMIO_MAGIC;
    case REG_VERSION:
        return VIRTIO_MMIO_VERSION;
    case REG_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    }
    return 0;
}

static void bus_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_virtio_mmio_bus *bus = dev;
    uint64_t slot = off / LAYOUT_VIRTIO_STRIDE;

    if (slot < bus->count)
        virtio_mmio_write(bus->slot[slot], off % LAYOUT_VIRTIO_STRIDE, size, val);
}

static const struct vmm_mmio_ops bus_ops = { .read = bus_read, .write = bus_write };

/* The slots in use, one node each (bindings/virtio/mmio.yaml). */
static int window_fdt_node(void *dev, struct vmm_vm *vm, void *fdt)
{
    struct vmm_virtio_mmio_bus *bus = dev;
    char name[40];
    int err;

    (void)vm;
    for (unsigned i = 0; i < bus->count; i++) {
        uint64_t base = LAYOUT_VIRTIO_BASE + LAYOUT_VIRTIO_STRIDE * i;
        snprintf(name, sizeof name, "virtio_mmio@%llx", (unsigned long long)base);
        if ((err = fdt_begin_node(fdt, name)) < 0 ||
            (err = fdt_property_string(fdt, "compatible", "virtio,mmio")) < 0 ||
            (err = vmm__fdt_prop_u64_pair(fdt, "reg", base, LAYOUT_VIRTIO_STRIDE)) < 0 ||
            (err = vmm__fdt_prop_spi(fdt, bus->slot[i]->intid)) < 0 ||
            (err = fdt_property(fdt, "dma-coherent", NULL, 0)) < 0 || (err = fdt_end_node(fdt)) < 0)
            return err;
    }
    return 0;
}

/* After the devices (the board destroys in reverse order): the virtio cores and their slots. */
static void window_destroy(void *dev)
{
    struct vmm_virtio_mmio_bus *bus = dev;

    for (unsigned i = 0; i < bus->count; i++)
        vmm__virtio_destroy(bus->slot[i]->v); /* frees the slot through mmio_destroy */
    bus->vm->virtio = NULL;
    free(bus);
}

static const struct vmm_device_ops window_device = {
    .name = "virtio-mmio",
    .fdt_node = window_fdt_node,
    .destroy = window_destroy,
};

/* The window of all 32 slots, on the bus from board init on (empty slots answer like QEMU's). */
int vmm__virtio_mmio_init(struct vmm_vm *vm)
{
    struct vmm_virtio_mmio_bus *bus;
    int rc;

    if (vm->virtio)
        return 0;
    if (!(bus = calloc(1, sizeof *bus)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-mmio");
    bus->vm = vm;
    if ((rc = vmm__board_add(vm, &window_device, bus))) {
        free(bus);
        return rc;
    }
    rc = vmm__bus_add(vm, LAYOUT_VIRTIO_BASE, LAYOUT_VIRTIO_STRIDE * LAYOUT_VIRTIO_SLOTS, "virtio-mmio", &bus_ops, bus);
    if (rc) {
        vmm__board_remove(vm, bus);
        free(bus);
        return rc;
    }
    vm->virtio = bus;
    return 0;
}

int vmm__virtio_mmio_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev, struct vmm_virtio **out)
{
    struct vmm_virtio_mmio_bus *bus;
    struct mmio_slot *s;
    char where[32];
    int rc;

    if (out)
        *out = NULL;
    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "virtio-%s: devices must be added before the VM is prepared", ops->name);
    if (!vm->virtio && (rc = vmm__virtio_mmio_init(vm)))
        return rc;
    bus = vm->virtio;
    if (bus->count >= LAYOUT_VIRTIO_SLOTS)
        return vmm__set_error(vm, VMM_ENOMEM, "virtio-%s: all %d virtio-mmio slots are in use", ops->name,
                              LAYOUT_VIRTIO_SLOTS);
    if (!(s = calloc(1, sizeof *s)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-%s", ops->name);
    s->vm = vm;
    s->slot = bus->count;
    s->intid = LAYOUT_SPI_INTID(LAYOUT_VIRTIO_SPI0 + s->slot);
    snprintf(where, sizeof where, "virtio-mmio.%u", s->slot);
    if ((rc = vmm__virtio_create(vm, ops, dev, &mmio_transport, s, where, &s->v))) {
        free(s);
        return rc;
    }
    bus->slot[bus->count++] = s;
    vmm__log(vm, VMM_LOG_DEBUG, "virtio", "%s (device %" PRIu32 ") on virtio-mmio slot %u, INTID %u", ops->name,
             ops->device_id, s->slot, s->intid);
    if (out)
        *out = s->v;
    return 0;
}
