/* virtio_mmio.c - the virtio-mmio transport, version 2 only (virtio 1.2 §4.2.2): registers, status, features, IRQ. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "../core/board.h"
#include "../core/fdt.h"
#include "../core/layout.h"
#include "virtq.h"

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VERSION 2u
#define VIRTIO_MMIO_VENDOR 0x554D4551u /* "QEMU", as QEMU's devices: drivers never match on it */
#define VIRTIO_MMIO_MAX_QUEUES 64

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

/* InterruptStatus bits (§4.2.2) */
#define INT_VRING 1u
#define INT_CONFIG 2u

#define TRANSPORT_FEATURES \
    ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX))

/*
 * One device on one slot. `lock` (recursive) guards everything here and the
 * queues' device-side state: it is held around every register access and
 * every device callback, and taken by the device -> transport calls, which a
 * device may make from its callbacks or from its own threads. Lock order:
 * this lock, then the GIC's (vmm__irq_set is called with it held).
 */
struct vmm_virtio {
    struct vmm_vm *vm;
    const struct vmm_virtio_ops *ops;
    void *dev;
    unsigned slot, intid;
    pthread_mutex_t lock;
    uint32_t status, isr, config_generation;
    uint32_t device_features_sel, driver_features_sel, queue_sel, shm_sel;
    uint64_t device_features, driver_features;
    bool level; /* the level driven on the SPI */
    struct vmm_virtq *queues;
};

struct vmm_virtio_mmio_bus {
    struct vmm_vm *vm;
    unsigned count;
    struct vmm_virtio *slot[LAYOUT_VIRTIO_SLOTS];
};

void vmm__virtio_lock(struct vmm_virtio *v)
{
    pthread_mutex_lock(&v->lock);
}

void vmm__virtio_unlock(struct vmm_virtio *v)
{
    pthread_mutex_unlock(&v->lock);
}

bool vmm__virtio_live(struct vmm_virtio *v)
{
    return (v->status & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) == VIRTIO_STATUS_DRIVER_OK;
}

bool vmm__virtio_broken(struct vmm_virtio *v)
{
    return v->status & VIRTIO_STATUS_NEEDS_RESET;
}

struct vmm_vm *vmm__virtio_vm(struct vmm_virtio *v)
{
    return v->vm;
}

uint64_t vmm__virtio_features(struct vmm_virtio *v)
{
    return v->status & VIRTIO_STATUS_FEATURES_OK ? v->driver_features : 0;
}

struct vmm_virtq *vmm__virtio_queue(struct vmm_virtio *v, unsigned q)
{
    return q < v->ops->num_queues ? &v->queues[q] : NULL;
}

/* Drive the SPI from InterruptStatus (level-sensitive). v->lock held. */
static void update_irq(struct vmm_virtio *v)
{
    bool level = v->isr != 0;

    if (level != v->level) {
        v->level = level;
        vmm__irq_set(v->vm, 0, v->intid, level);
    }
}

static void guest_error(struct vmm_virtio *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void guest_error(struct vmm_virtio *v, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vmm__guest_error(v->vm, "virtio", "%s@%u: %s", v->ops->name, v->slot, msg);
}

void vmm__virtio_notify(struct vmm_virtio *v, unsigned q)
{
    pthread_mutex_lock(&v->lock);
    if (q < v->ops->num_queues && vmm__virtio_live(v) &&
        vmm__virtq_should_interrupt(&v->queues[q], vmm__virtio_features(v) >> VIRTIO_F_EVENT_IDX & 1)) {
        v->isr |= INT_VRING;
        update_irq(v);
    }
    pthread_mutex_unlock(&v->lock);
}

void vmm__virtio_config_changed(struct vmm_virtio *v)
{
    pthread_mutex_lock(&v->lock);
    v->config_generation++;
    if (v->status & VIRTIO_STATUS_DRIVER_OK) { /* §2.5.2: no notification before DRIVER_OK */
        v->isr |= INT_CONFIG;
        update_irq(v);
    }
    pthread_mutex_unlock(&v->lock);
}

void vmm__virtio_needs_reset(struct vmm_virtio *v, const char *why)
{
    pthread_mutex_lock(&v->lock);
    guest_error(v, "%s: device needs reset", why);
    if (!(v->status & VIRTIO_STATUS_NEEDS_RESET)) {
        v->status |= VIRTIO_STATUS_NEEDS_RESET;
        if (v->status & VIRTIO_STATUS_DRIVER_OK) { /* §2.1.2: tell the driver with a config notification */
            v->isr |= INT_CONFIG;
            update_irq(v);
        }
    }
    pthread_mutex_unlock(&v->lock);
}

/* Status written 0 (§2.4): back to the state after power-on. */
static void device_reset(struct vmm_virtio *v)
{
    if (v->ops->reset)
        v->ops->reset(v->dev);
    for (unsigned i = 0; i < v->ops->num_queues; i++)
        vmm__virtq_reset(&v->queues[i]);
    v->status = 0;
    v->isr = 0;
    v->device_features_sel = v->driver_features_sel = v->queue_sel = v->shm_sel = 0;
    v->driver_features = 0;
    update_irq(v);
}

/* §3.1.1 step 5-6, §6.1: VERSION_1 is mandatory (no legacy), nothing beyond what we offer, and the device agrees. */
static bool features_acceptable(struct vmm_virtio *v)
{
    uint64_t f = v->driver_features;

    if (!(f >> VIRTIO_F_VERSION_1 & 1)) {
        guest_error(v, "driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)");
        return false;
    }
    if (f & ~v->device_features) {
        guest_error(v, "driver accepted features 0x%" PRIx64 " that were not offered", f & ~v->device_features);
        return false;
    }
    return !v->ops->features_ok || v->ops->features_ok(v->dev, f);
}

static void write_status(struct vmm_virtio *v, uint32_t val)
{
    uint32_t old = v->status, set;

    if (!val) {
        device_reset(v);
        return;
    }
    val &= 0xff & ~VIRTIO_STATUS_NEEDS_RESET; /* device-owned */
    if (old & ~val & ~VIRTIO_STATUS_NEEDS_RESET)
        guest_error(v, "status 0x%02" PRIx32 " clears bits of 0x%02" PRIx32 " without a reset", val, old);
    set = val & ~old;
    if ((set & VIRTIO_STATUS_FEATURES_OK) && !features_acceptable(v))
        val &= ~VIRTIO_STATUS_FEATURES_OK; /* reads back clear: the driver gives up (§3.1.1 step 6) */
    if ((set & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
        guest_error(v, "DRIVER_OK without FEATURES_OK");
        val &= ~VIRTIO_STATUS_DRIVER_OK;
        set &= ~VIRTIO_STATUS_DRIVER_OK;
    }
    v->status = val | (old & VIRTIO_STATUS_NEEDS_RESET);
    if ((set & VIRTIO_STATUS_DRIVER_OK) && !(v->status & VIRTIO_STATUS_NEEDS_RESET)) {
        if (v->ops->driver_ok)
            v->ops->driver_ok(v->dev);
        /* buffers made available before DRIVER_OK were not consumed: look at them now */
        for (unsigned i = 0; i < v->ops->num_queues && vmm__virtio_live(v); i++)
            if (v->queues[i].ready && v->ops->queue_notify)
                v->ops->queue_notify(v->dev, i);
    }
}

static struct vmm_virtq *selected_queue(struct vmm_virtio *v)
{
    return v->queue_sel < v->ops->num_queues ? &v->queues[v->queue_sel] : NULL;
}

static uint32_t reg_read(struct vmm_virtio *v, uint64_t off)
{
    struct vmm_virtq *q = selected_queue(v);

    switch (off) {
    case REG_MAGIC:
        return VIRTIO_MMIO_MAGIC;
    case REG_VERSION:
        return VIRTIO_MMIO_VERSION;
    case REG_DEVICE_ID:
        return v->ops->device_id;
    case REG_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case REG_DEVICE_FEATURES:
        return v->device_features_sel < 2 ? (uint32_t)(v->device_features >> (32 * v->device_features_sel)) : 0;
    case REG_QUEUE_NUM_MAX:
        return q ? q->num_max : 0;
    case REG_QUEUE_NUM:
        return q ? q->num : 0;
    case REG_QUEUE_READY:
        return q && q->ready;
    case REG_INTERRUPT_STATUS:
        return v->isr;
    case REG_STATUS:
        return v->status;
    case REG_QUEUE_DESC_LOW:
        return q ? (uint32_t)q->desc_gpa : 0;
    case REG_QUEUE_DESC_HIGH:
        return q ? (uint32_t)(q->desc_gpa >> 32) : 0;
    case REG_QUEUE_DRIVER_LOW:
        return q ? (uint32_t)q->avail_gpa : 0;
    case REG_QUEUE_DRIVER_HIGH:
        return q ? (uint32_t)(q->avail_gpa >> 32) : 0;
    case REG_QUEUE_DEVICE_LOW:
        return q ? (uint32_t)q->used_gpa : 0;
    case REG_QUEUE_DEVICE_HIGH:
        return q ? (uint32_t)(q->used_gpa >> 32) : 0;
    case REG_SHM_LEN_LOW:
    case REG_SHM_LEN_HIGH:
    case REG_SHM_BASE_LOW:
    case REG_SHM_BASE_HIGH:
        return 0xffffffffu; /* no shared memory regions: length -1 */
    case REG_QUEUE_RESET:
        return 0; /* a queue reset completes at once */
    case REG_CONFIG_GENERATION:
        return v->config_generation;
    }
    guest_error(v, "read of write-only or unknown register 0x%03" PRIx64, off);
    return 0;
}

/* A queue register write is refused while the queue is live (§4.2.3.2). */
static struct vmm_virtq *queue_for_setup(struct vmm_virtio *v, uint64_t off)
{
    struct vmm_virtq *q = selected_queue(v);

    if (!q) {
        guest_error(v, "write to register 0x%03" PRIx64 " for queue %" PRIu32 ", which does not exist", off,
                    v->queue_sel);
        return NULL;
    }
    if (q->ready) {
        guest_error(v, "write to register 0x%03" PRIx64 " of live queue %u", off, q->index);
        return NULL;
    }
    return q;
}

static void set_half(uint64_t *r, bool high, uint32_t val)
{
    *r = high ? (*r & 0xffffffffULL) | (uint64_t)val << 32 : (*r & ~0xffffffffULL) | val;
}

static void reg_write(struct vmm_virtio *v, uint64_t off, uint32_t val)
{
    struct vmm_virtq *q;

    switch (off) {
    case REG_DEVICE_FEATURES_SEL:
        v->device_features_sel = val;
        return;
    case REG_DRIVER_FEATURES:
        if (v->status & VIRTIO_STATUS_FEATURES_OK)
            guest_error(v, "DriverFeatures written after FEATURES_OK");
        else if (v->driver_features_sel < 2)
            set_half(&v->driver_features, v->driver_features_sel, val);
        else if (val)
            guest_error(v, "driver accepts features in unknown word %" PRIu32, v->driver_features_sel);
        return;
    case REG_DRIVER_FEATURES_SEL:
        v->driver_features_sel = val;
        return;
    case REG_QUEUE_SEL:
        v->queue_sel = val;
        return;
    case REG_QUEUE_NUM:
        if ((q = queue_for_setup(v, off)))
            q->num = (uint16_t)(val > 0xffff ? 0 : val); /* checked when the queue goes live */
        return;
    case REG_QUEUE_READY:
        if (!(q = selected_queue(v))) {
            guest_error(v, "QueueReady for queue %" PRIu32 ", which does not exist", v->queue_sel);
        } else if (!val) {
            q->ready = false; /* §4.2.3.2: stop using the queue; its registers may be rewritten */
        } else if (!q->ready) {
            const char *why = vmm__virtq_enable(q, v->vm);
            if (why) {
                char msg[160];
                snprintf(msg, sizeof msg, "queue %u cannot go live: %s", q->index, why);
                vmm__virtio_needs_reset(v, msg);
            }
        }
        return;
    case REG_QUEUE_NOTIFY:
        if (val >= v->ops->num_queues)
            guest_error(v, "notify of queue %" PRIu32 ", which does not exist", val);
        else if (vmm__virtio_live(v) && v->queues[val].ready && v->ops->queue_notify)
            v->ops->queue_notify(v->dev, val);
        return; /* before DRIVER_OK: picked up when DRIVER_OK is set */
    case REG_INTERRUPT_ACK:
        v->isr &= ~val;
        update_irq(v);
        return;
    case REG_STATUS:
        write_status(v, val);
        return;
    case REG_QUEUE_DESC_LOW:
    case REG_QUEUE_DESC_HIGH:
        if ((q = queue_for_setup(v, off)))
            set_half(&q->desc_gpa, off == REG_QUEUE_DESC_HIGH, val);
        return;
    case REG_QUEUE_DRIVER_LOW:
    case REG_QUEUE_DRIVER_HIGH:
        if ((q = queue_for_setup(v, off)))
            set_half(&q->avail_gpa, off == REG_QUEUE_DRIVER_HIGH, val);
        return;
    case REG_QUEUE_DEVICE_LOW:
    case REG_QUEUE_DEVICE_HIGH:
        if ((q = queue_for_setup(v, off)))
            set_half(&q->used_gpa, off == REG_QUEUE_DEVICE_HIGH, val);
        return;
    case REG_SHM_SEL:
        v->shm_sel = val;
        return;
    case REG_QUEUE_RESET:
        if (val == 1 && (q = selected_queue(v)))
            vmm__virtq_reset(q);
        return;
    }
    guest_error(v, "write of 0x%" PRIx32 " to read-only or unknown register 0x%03" PRIx64, val, off);
}

static bool config_range(struct vmm_virtio *v, uint64_t off, unsigned size)
{
    if (off - REG_CONFIG + size > v->ops->config_size) {
        guest_error(v, "%u-byte config space access at 0x%03" PRIx64 " beyond its %" PRIu32 " bytes", size, off,
                    v->ops->config_size);
        return false;
    }
    return true;
}

static uint64_t virtio_mmio_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_virtio *v = dev;
    uint64_t val = 0;

    pthread_mutex_lock(&v->lock);
    if (off >= REG_CONFIG) {
        if (config_range(v, off, size) && v->ops->config_read)
            v->ops->config_read(v->dev, (uint32_t)(off - REG_CONFIG), &val, size);
    } else if (size != 4 || (off & 3)) {
        guest_error(v, "%u-byte read at 0x%03" PRIx64 ": registers are 32-bit", size, off);
    } else {
        val = reg_read(v, off);
    }
    pthread_mutex_unlock(&v->lock);
    return val;
}

static void virtio_mmio_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_virtio *v = dev;

    pthread_mutex_lock(&v->lock);
    if (off >= REG_CONFIG) {
        bool ok = config_range(v, off, size);
        if (ok && v->ops->config_write)
            v->ops->config_write(v->dev, (uint32_t)(off - REG_CONFIG), &val, size);
        else if (ok)
            guest_error(v, "write to read-only config space at 0x%03" PRIx64, off);
    } else if (size != 4 || (off & 3)) {
        guest_error(v, "%u-byte write at 0x%03" PRIx64 ": registers are 32-bit", size, off);
    } else {
        reg_write(v, off, (uint32_t)val);
    }
    pthread_mutex_unlock(&v->lock);
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

static void virtio_free(struct vmm_virtio *v)
{
    pthread_mutex_destroy(&v->lock);
    free(v->queues);
    free(v);
}

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

/* After the devices (the board destroys in reverse order): their transports. */
static void window_destroy(void *dev)
{
    struct vmm_virtio_mmio_bus *bus = dev;

    for (unsigned i = 0; i < bus->count; i++)
        virtio_free(bus->slot[i]);
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
    struct vmm_virtio_mmio_bus *bus = vm->virtio;
    pthread_mutexattr_t ma;
    struct vmm_virtio *v;
    unsigned slot;
    int rc;

    if (out)
        *out = NULL;
    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "virtio-%s: devices must be added before the VM is prepared", ops->name);
    if (ops->num_queues > VIRTIO_MMIO_MAX_QUEUES || !ops->queue_max || ops->queue_max > VIRTQ_MAX_SIZE ||
        (ops->queue_max & (ops->queue_max - 1)) || (ops->num_queues && !ops->queue_notify) ||
        (ops->config_size && !ops->config_read) || ops->config_size > LAYOUT_VIRTIO_STRIDE - REG_CONFIG)
        return vmm__set_error(vm, VMM_EINVAL, "virtio-%s: invalid device description", ops->name);
    if (!bus && (rc = vmm__virtio_mmio_init(vm)))
        return rc;
    bus = vm->virtio;
    if (bus->count >= LAYOUT_VIRTIO_SLOTS)
        return vmm__set_error(vm, VMM_ENOMEM, "virtio-%s: all %d virtio-mmio slots are in use", ops->name,
                              LAYOUT_VIRTIO_SLOTS);
    slot = bus->count;
    if (!(v = calloc(1, sizeof *v)) ||
        !(v->queues = calloc(ops->num_queues ? ops->num_queues : 1, sizeof *v->queues))) {
        free(v);
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-%s", ops->name);
    }
    v->vm = vm;
    v->ops = ops;
    v->dev = dev;
    v->slot = slot;
    v->intid = LAYOUT_SPI_INTID(LAYOUT_VIRTIO_SPI0 + slot);
    v->device_features = ops->features | TRANSPORT_FEATURES;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&v->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    for (unsigned i = 0; i < ops->num_queues; i++)
        vmm__virtq_init(&v->queues[i], v, i, ops->queue_max);
    bus->slot[slot] = v;
    bus->count++;
    vmm__log(vm, VMM_LOG_DEBUG, "virtio", "%s (device %" PRIu32 ") on virtio-mmio slot %u, INTID %u", ops->name,
             ops->device_id, slot, v->intid);
    if (out)
        *out = v;
    return 0;
}

int vmm__virtio_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, const struct vmm_device_ops *dev_ops,
                    void *dev, struct vmm_virtio **out)
{
    int rc = vmm__board_add(vm, dev_ops, dev);

    if (!rc && (rc = vmm__virtio_mmio_add(vm, ops, dev, out)))
        vmm__board_remove(vm, dev);
    return rc;
}
