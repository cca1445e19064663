/*
 * virtio.c - the virtio core (virtio 1.2 §2, §3): one device whatever its
 * transport. Status state machine, feature negotiation, queues, config space
 * and its generation, ISR bits, reset, notifications and guest errors. The
 * transport's register file (virtio_mmio.c) maps its registers onto the
 * accessors of virtio_transport.h; devices use virtio.h.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/board.h"
#include "../core/snapshot.h"
#include "virtio_transport.h"
#include "virtq.h"

/* Ring features the core implements for every device (virtq.c), and the one every driver must accept. */
#define CORE_FEATURES ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX))

/*
 * One device. `lock` (recursive) guards everything here and the queues'
 * state: the transport holds it around every register access, the core
 * around every device callback, and the device -> core calls (virtio.h) take
 * it, so a device may call them from its callbacks or its own threads. Lock
 * order: this lock, then the GIC's (the transport's interrupt op may call
 * vmm__irq_set with it held).
 */
struct vmm_virtio {
    struct vmm_vm *vm;
    const struct vmm_virtio_ops *ops;
    void *dev;
    const struct vmm_virtio_transport_ops *tops;
    void *t;
    char where[32]; /* the transport instance, "virtio-mmio.3" */
    pthread_mutex_t lock;
    uint32_t status, isr, config_generation;
    uint64_t device_features, driver_features;
    struct vmm_virtq *queues;
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

const struct vmm_virtio_ops *vmm__virtio_ops(struct vmm_virtio *v)
{
    return v->ops;
}

uint32_t vmm__virtio_device_id(struct vmm_virtio *v)
{
    return v->ops->device_id;
}

uint64_t vmm__virtio_features(struct vmm_virtio *v)
{
    return v->status & VIRTIO_STATUS_FEATURES_OK ? v->driver_features : 0;
}

struct vmm_virtq *vmm__virtio_queue(struct vmm_virtio *v, unsigned q)
{
    return q < v->ops->num_queues ? &v->queues[q] : NULL;
}

void vmm__virtio_guest_error(struct vmm_virtio *v, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vmm__guest_error(v->vm, "virtio", "%s@%s: %s", v->ops->name, v->where, msg);
}

/* The ISR gained `bits` (for queue q) or lost some (bits 0): tell the transport. Lock held. */
static void raise_isr(struct vmm_virtio *v, uint32_t bits, enum vmm_virtio_irq why, unsigned q)
{
    v->isr |= bits;
    v->tops->interrupt(v->t, v->isr, why, q);
}

static void lower_isr(struct vmm_virtio *v, uint32_t bits)
{
    v->isr &= ~bits;
    v->tops->interrupt(v->t, v->isr, VMM_VIRTIO_IRQ_LOWER, 0);
}

void vmm__virtio_notify(struct vmm_virtio *v, unsigned q)
{
    pthread_mutex_lock(&v->lock);
    if (q < v->ops->num_queues && vmm__virtio_live(v) &&
        vmm__virtq_should_interrupt(&v->queues[q], vmm__virtio_features(v) >> VIRTIO_F_EVENT_IDX & 1))
        raise_isr(v, VIRTIO_ISR_VRING, VMM_VIRTIO_IRQ_VRING, q);
    pthread_mutex_unlock(&v->lock);
}

void vmm__virtio_config_changed(struct vmm_virtio *v)
{
    pthread_mutex_lock(&v->lock);
    v->config_generation++;
    if (v->status & VIRTIO_STATUS_DRIVER_OK) /* §2.5.2: no notification before DRIVER_OK */
        raise_isr(v, VIRTIO_ISR_CONFIG, VMM_VIRTIO_IRQ_CONFIG, 0);
    pthread_mutex_unlock(&v->lock);
}

void vmm__virtio_needs_reset(struct vmm_virtio *v, const char *why)
{
    pthread_mutex_lock(&v->lock);
    vmm__virtio_guest_error(v, "%s: device needs reset", why);
    if (!(v->status & VIRTIO_STATUS_NEEDS_RESET)) {
        v->status |= VIRTIO_STATUS_NEEDS_RESET;
        if (v->status & VIRTIO_STATUS_DRIVER_OK) /* §2.1.2: tell the driver with a config notification */
            raise_isr(v, VIRTIO_ISR_CONFIG, VMM_VIRTIO_IRQ_CONFIG, 0);
    }
    pthread_mutex_unlock(&v->lock);
}

/* Status written 0 (§2.4): back to the state after power-on, transport registers included. */
static void device_reset(struct vmm_virtio *v)
{
    if (v->ops->reset)
        v->ops->reset(v->dev);
    for (unsigned i = 0; i < v->ops->num_queues; i++)
        vmm__virtq_reset(&v->queues[i]);
    v->status = 0;
    v->driver_features = 0;
    if (v->tops->reset)
        v->tops->reset(v->t);
    lower_isr(v, ~0u);
}

/* §3.1.1 step 5-6, §6.1: VERSION_1 is mandatory (no legacy), nothing beyond what we offer, and the device agrees. */
static bool features_acceptable(struct vmm_virtio *v)
{
    uint64_t f = v->driver_features;

    if (!(f >> VIRTIO_F_VERSION_1 & 1)) {
        vmm__virtio_guest_error(v, "driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)");
        return false;
    }
    if (f & ~v->device_features) {
        vmm__virtio_guest_error(v, "driver accepted features 0x%" PRIx64 " that were not offered",
                                f & ~v->device_features);
        return false;
    }
    return !v->ops->features_ok || v->ops->features_ok(v->dev, f);
}

uint32_t vmm__virtio_read_status(struct vmm_virtio *v)
{
    return v->status;
}

void vmm__virtio_write_status(struct vmm_virtio *v, uint32_t val)
{
    uint32_t old = v->status, set;

    if (!val) {
        device_reset(v);
        return;
    }
    val &= 0xff & ~VIRTIO_STATUS_NEEDS_RESET; /* device-owned */
    /* §2.1.2: only a reset clears a bit */
    if (old & ~val & ~VIRTIO_STATUS_NEEDS_RESET) {
        vmm__virtio_guest_error(v, "status 0x%02" PRIx32 " clears bits of 0x%02" PRIx32 " without a reset: kept", val,
                                old);
        val |= old & ~VIRTIO_STATUS_NEEDS_RESET; /* else DRIVER_OK could stay without FEATURES_OK */
    }
    set = val & ~old;
    if ((set & VIRTIO_STATUS_FEATURES_OK) && !features_acceptable(v))
        val &= ~VIRTIO_STATUS_FEATURES_OK; /* reads back clear: the driver gives up (§3.1.1 step 6) */
    if ((set & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
        vmm__virtio_guest_error(v, "DRIVER_OK without FEATURES_OK");
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

uint32_t vmm__virtio_device_features_word(struct vmm_virtio *v, uint32_t word)
{
    return word < 2 ? (uint32_t)(v->device_features >> (32 * word)) : 0;
}

uint32_t vmm__virtio_driver_features_word(struct vmm_virtio *v, uint32_t word)
{
    return word < 2 ? (uint32_t)(v->driver_features >> (32 * word)) : 0;
}

static void set_half(uint64_t *r, bool high, uint32_t val)
{
    *r = high ? (*r & 0xffffffffULL) | (uint64_t)val << 32 : (*r & ~0xffffffffULL) | val;
}

void vmm__virtio_write_driver_features_word(struct vmm_virtio *v, uint32_t word, uint32_t val)
{
    if (v->status & VIRTIO_STATUS_FEATURES_OK)
        vmm__virtio_guest_error(v, "driver features written after FEATURES_OK");
    else if (word < 2)
        set_half(&v->driver_features, word == 1, val);
    else if (val)
        vmm__virtio_guest_error(v, "driver accepts features in unknown word %" PRIu32, word);
}

unsigned vmm__virtio_num_queues(struct vmm_virtio *v)
{
    return v->ops->num_queues;
}

uint16_t vmm__virtio_queue_num_max(struct vmm_virtio *v, uint32_t q)
{
    return q < v->ops->num_queues ? v->queues[q].num_max : 0;
}

static const char *const reg_names[] = { "size", "descriptor area", "driver area", "device area" };

uint64_t vmm__virtio_queue_reg(struct vmm_virtio *v, uint32_t q, enum vmm_virtq_reg reg)
{
    struct vmm_virtq *vq = vmm__virtio_queue(v, q);

    if (!vq)
        return 0;
    switch (reg) {
    case VMM_VIRTQ_NUM:
        return vq->num;
    case VMM_VIRTQ_DESC:
        return vq->desc_gpa;
    case VMM_VIRTQ_DRIVER:
        return vq->avail_gpa;
    case VMM_VIRTQ_DEVICE:
        return vq->used_gpa;
    }
    return 0;
}

void vmm__virtio_set_queue_reg(struct vmm_virtio *v, uint32_t q, enum vmm_virtq_reg reg, uint64_t val)
{
    struct vmm_virtq *vq = vmm__virtio_queue(v, q);

    if (!vq) {
        vmm__virtio_guest_error(v, "write to the %s of queue %" PRIu32 ", which does not exist", reg_names[reg], q);
        return;
    }
    if (vq->ready) { /* §4.2.3.2, §4.1.4.3.2: a live queue's setup is fixed */
        vmm__virtio_guest_error(v, "write to the %s of live queue %u", reg_names[reg], vq->index);
        return;
    }
    switch (reg) {
    case VMM_VIRTQ_NUM:
        vq->num = (uint16_t)(val > 0xffff ? 0 : val); /* checked when the queue goes live */
        break;
    case VMM_VIRTQ_DESC:
        vq->desc_gpa = val;
        break;
    case VMM_VIRTQ_DRIVER:
        vq->avail_gpa = val;
        break;
    case VMM_VIRTQ_DEVICE:
        vq->used_gpa = val;
        break;
    }
}

bool vmm__virtio_queue_enabled(struct vmm_virtio *v, uint32_t q)
{
    struct vmm_virtq *vq = vmm__virtio_queue(v, q);

    return vq && vq->ready;
}

void vmm__virtio_queue_enable(struct vmm_virtio *v, uint32_t q, bool on)
{
    struct vmm_virtq *vq = vmm__virtio_queue(v, q);

    if (!vq) {
        vmm__virtio_guest_error(v, "enable of queue %" PRIu32 ", which does not exist", q);
    } else if (!on) {
        vq->ready = false; /* §4.2.3.2: stop using the queue; its registers may be rewritten */
    } else if (!vq->ready) {
        const char *why = vmm__virtq_enable(vq, v->vm);
        if (why) {
            char msg[160];
            snprintf(msg, sizeof msg, "queue %u cannot go live: %s", vq->index, why);
            vmm__virtio_needs_reset(v, msg);
        }
    }
}

void vmm__virtio_queue_kick(struct vmm_virtio *v, uint32_t q)
{
    if (q >= v->ops->num_queues)
        vmm__virtio_guest_error(v, "notify of queue %" PRIu32 ", which does not exist", q);
    else if (vmm__virtio_live(v) && v->queues[q].ready && v->ops->queue_notify)
        v->ops->queue_notify(v->dev, q);
    /* before DRIVER_OK: picked up when DRIVER_OK is set */
}

void vmm__virtio_queue_reset(struct vmm_virtio *v, uint32_t q)
{
    if (q < v->ops->num_queues)
        vmm__virtq_reset(&v->queues[q]);
}

uint32_t vmm__virtio_isr(struct vmm_virtio *v)
{
    return v->isr;
}

void vmm__virtio_ack_isr(struct vmm_virtio *v, uint32_t bits)
{
    lower_isr(v, bits);
}

uint32_t vmm__virtio_read_clear_isr(struct vmm_virtio *v)
{
    uint32_t isr = v->isr;

    if (isr)
        lower_isr(v, isr);
    return isr;
}

uint32_t vmm__virtio_config_generation(struct vmm_virtio *v)
{
    return v->config_generation;
}

static bool config_range(struct vmm_virtio *v, uint32_t off, unsigned len)
{
    if ((uint64_t)off + len > v->ops->config_size) {
        vmm__virtio_guest_error(v, "%u-byte config space access at 0x%" PRIx32 " beyond its %" PRIu32 " bytes", len,
                                off, v->ops->config_size);
        return false;
    }
    return true;
}

void vmm__virtio_config_read(struct vmm_virtio *v, uint32_t off, void *buf, unsigned len)
{
    memset(buf, 0, len);
    if (config_range(v, off, len) && v->ops->config_read)
        v->ops->config_read(v->dev, off, buf, len);
}

void vmm__virtio_config_write(struct vmm_virtio *v, uint32_t off, const void *buf, unsigned len)
{
    if (!config_range(v, off, len))
        return;
    if (v->ops->config_write)
        v->ops->config_write(v->dev, off, buf, len);
    else
        vmm__virtio_guest_error(v, "write to read-only config space at 0x%" PRIx32, off);
}

/*
 * Snapshots. Saved: status, ISR, config generation, both feature sets, then every queue (virtq.c) and
 * the transport's registers. The device's state follows in the same section (its hook). Devices serve
 * each chain completely inside queue_notify (and a snapshot is taken at a round boundary), so no chain
 * is ever popped and not yet returned: the queues' indices are the whole story of their progress.
 */
int vmm__virtio_snap(struct vmm_virtio *v, struct vmm_snap *s)
{
    uint64_t offered = v->device_features;
    uint32_t nq = v->ops->num_queues, dev_id = v->ops->device_id;

    pthread_mutex_lock(&v->lock);
    vmm__snap_u32(s, &dev_id);
    vmm__snap_u32(s, &nq);
    vmm__snap_u64(s, &offered);
    vmm__snap_u32(s, &v->status);
    vmm__snap_u32(s, &v->isr);
    vmm__snap_u32(s, &v->config_generation);
    vmm__snap_u64(s, &v->driver_features);
    if (vmm__snap_loading(s) && !vmm__snap_error(s)) {
        /* the same device, then a state the register file could have reached (§3.1.1) */
        uint64_t f = v->driver_features;
        if (dev_id != v->ops->device_id || nq != v->ops->num_queues)
            vmm__snap_fail(s, "saved virtio device %u with %u queues, this one is %u with %u", dev_id, nq,
                           v->ops->device_id, v->ops->num_queues);
        else if (offered != v->device_features)
            vmm__snap_fail(s, "saved features 0x%" PRIx64 " differ from the 0x%" PRIx64 " this device offers", offered,
                           v->device_features);
        else if (v->status & ~0xffu)
            vmm__snap_fail(s, "device status 0x%" PRIx32 " is not a byte", v->status);
        else if (v->isr & ~(VIRTIO_ISR_VRING | VIRTIO_ISR_CONFIG))
            vmm__snap_fail(s, "interrupt status 0x%" PRIx32 " has unknown bits", v->isr);
        else if ((v->status & VIRTIO_STATUS_DRIVER_OK) && !(v->status & VIRTIO_STATUS_FEATURES_OK))
            vmm__snap_fail(s, "device status 0x%" PRIx32 ": DRIVER_OK without FEATURES_OK", v->status);
        else if ((v->status & VIRTIO_STATUS_FEATURES_OK) &&
                 (!(f >> VIRTIO_F_VERSION_1 & 1) || (f & ~v->device_features)))
            vmm__snap_fail(s, "negotiated features 0x%" PRIx64 " were not offered (0x%" PRIx64 ")", f,
                           v->device_features);
        else if ((v->status & VIRTIO_STATUS_FEATURES_OK) && v->ops->features_ok && !v->ops->features_ok(v->dev, f))
            vmm__snap_fail(s, "the device refuses the negotiated features 0x%" PRIx64, f);
    }
    for (unsigned i = 0; i < v->ops->num_queues && !vmm__snap_error(s); i++)
        vmm__virtq_snap(&v->queues[i], v->vm, s);
    if (v->tops->snap && !vmm__snap_error(s))
        v->tops->snap(v->t, s);
    if (vmm__snap_loading(s) && vmm__snap_error(s)) { /* leave a clean device, not half a state */
        for (unsigned i = 0; i < v->ops->num_queues; i++)
            vmm__virtq_reset(&v->queues[i]);
        v->status = v->isr = 0;
        v->driver_features = 0;
    }
    pthread_mutex_unlock(&v->lock);
    return vmm__snap_error(s);
}

int vmm__virtio_create(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev,
                       const struct vmm_virtio_transport_ops *tops, void *t, const char *where, struct vmm_virtio **out)
{
    pthread_mutexattr_t ma;
    struct vmm_virtio *v;

    *out = NULL;
    if (ops->num_queues > VIRTIO_MAX_QUEUES || !ops->queue_max || ops->queue_max > VIRTQ_MAX_SIZE ||
        (ops->queue_max & (ops->queue_max - 1)) || (ops->num_queues && !ops->queue_notify) ||
        (ops->config_size && !ops->config_read) || ops->config_size > tops->config_max)
        return vmm__set_error(vm, VMM_EINVAL, "virtio-%s: invalid device description", ops->name);
    if (!(v = calloc(1, sizeof *v)) ||
        !(v->queues = calloc(ops->num_queues ? ops->num_queues : 1, sizeof *v->queues))) {
        free(v);
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-%s", ops->name);
    }
    v->vm = vm;
    v->ops = ops;
    v->dev = dev;
    v->tops = tops;
    v->t = t;
    snprintf(v->where, sizeof v->where, "%s", where);
    v->device_features = ops->features | CORE_FEATURES;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&v->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    for (unsigned i = 0; i < ops->num_queues; i++)
        vmm__virtq_init(&v->queues[i], v, i, ops->queue_max);
    *out = v;
    return 0;
}

void vmm__virtio_destroy(struct vmm_virtio *v)
{
    if (!v)
        return;
    if (v->tops->destroy)
        v->tops->destroy(v->t);
    pthread_mutex_destroy(&v->lock);
    free(v->queues);
    free(v);
}

int vmm__virtio_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, const struct vmm_device_ops *dev_ops,
                    void *dev, struct vmm_virtio **out)
{
    int rc = vmm__board_add(vm, dev_ops, dev);

    if (rc)
        return rc;
    rc = vm->transport == VMM_TRANSPORT_PCI ? vmm__virtio_pci_add(vm, ops, dev, out)
                                            : vmm__virtio_mmio_add(vm, ops, dev, out);
    if (rc)
        vmm__board_remove(vm, dev);
    return rc;
}
