/*
 * virtio_transport.h - between the virtio core (virtio.c) and a transport
 * (virtio_mmio.c; later virtio_pci.c). Not for devices: they use virtio.h.
 *
 * The core owns everything a device has whatever its transport (virtio 1.2
 * §2): status, feature negotiation (64 bits), the queues, config space and
 * its generation, the ISR bits, reset and the device's recursive lock. A
 * transport owns its register file (selectors included), where the device
 * sits (slot, BAR, ...) and how an interrupt reaches the guest. It maps each
 * register onto the accessors below, calling them with the device lock held
 * (vmm__virtio_lock), as the core calls the transport's ops.
 */
#ifndef VMM_VIRTIO_TRANSPORT_H
#define VMM_VIRTIO_TRANSPORT_H

#include <stdarg.h>

#include "virtio.h"

#define VIRTIO_MAX_QUEUES 64

struct vmm_snap;

/* ISR bits (§4.1.4.5, §4.2.2 InterruptStatus: the same two bits on every transport) */
#define VIRTIO_ISR_VRING 1u
#define VIRTIO_ISR_CONFIG 2u

/* Why the core calls the transport's interrupt op */
enum vmm_virtio_irq {
    VMM_VIRTIO_IRQ_LOWER,  /* ISR bits were cleared (acknowledged, reset): nothing new to signal */
    VMM_VIRTIO_IRQ_VRING,  /* a used-buffer notification for queue q */
    VMM_VIRTIO_IRQ_CONFIG, /* a configuration change notification (config generation, NEEDS_RESET) */
};

struct vmm_virtio_transport_ops {
    const char *name;    /* "virtio-mmio": for logs */
    uint32_t config_max; /* the largest device config space the register file can show */
    /*
     * The ISR is now `isr`, because of `why` (for VRING: queue q). Device lock
     * held; may call into the GIC (lock order: device -> GIC). A level-
     * triggered transport (MMIO, PCI INTx) drives its line from isr != 0; an
     * MSI-X transport sends the queue's (or the config) vector on VRING /
     * CONFIG and ignores LOWER.
     */
    void (*interrupt)(void *t, uint32_t isr, enum vmm_virtio_irq why, unsigned q);
    /* Device reset (status 0): put the transport's own registers (selectors, vectors) back. May be NULL. */
    void (*reset)(void *t);
    /*
     * Snapshots: sync the transport's own registers (selectors, vectors) into / out of the device's
     * section, after the core's state (vmm__virtio_snap); when loading, drive the interrupt for the
     * loaded ISR as it was. Device lock held. May be NULL (nothing of its own).
     */
    void (*snap)(void *t, struct vmm_snap *s);
    /* Free the transport's state once the device is gone (vmm__virtio_destroy). May be NULL. */
    void (*destroy)(void *t);
};

/*
 * Create the core of a device on a transport. `where` names the transport
 * instance in guest errors ("virtio-mmio.3"). Checks the device description
 * (queue count and sizes, config size against tops->config_max). The device
 * is live from here on: the transport must not fail after this call (or must
 * call vmm__virtio_destroy).
 */
int vmm__virtio_create(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev,
                       const struct vmm_virtio_transport_ops *tops, void *t, const char *where,
                       struct vmm_virtio **out);
/* ops->destroy(dev), then tops->destroy(t), then the core itself. No vCPU may run. */
void vmm__virtio_destroy(struct vmm_virtio *v);

/* Transport -> core accessors: call with the device lock held (vmm__virtio_lock, virtio.h). */
const struct vmm_virtio_ops *vmm__virtio_ops(struct vmm_virtio *v);
uint32_t vmm__virtio_device_id(struct vmm_virtio *v);

/* Device status (§2.1): reading, and writing with the §3.1.1 state machine (0 resets the device). */
uint32_t vmm__virtio_read_status(struct vmm_virtio *v);
void vmm__virtio_write_status(struct vmm_virtio *v, uint32_t val);

/* Features, 32-bit word `word` (0: bits 0-31, 1: bits 32-63; beyond: 0 / refused). */
uint32_t vmm__virtio_device_features_word(struct vmm_virtio *v, uint32_t word);
uint32_t vmm__virtio_driver_features_word(struct vmm_virtio *v, uint32_t word);
void vmm__virtio_write_driver_features_word(struct vmm_virtio *v, uint32_t word, uint32_t val);

/* Queues. A queue index beyond the device's reads as absent (max 0); writes to it are guest errors. */
enum vmm_virtq_reg {
    VMM_VIRTQ_NUM,    /* queue size (QueueNum / queue_size) */
    VMM_VIRTQ_DESC,   /* descriptor area */
    VMM_VIRTQ_DRIVER, /* driver (avail) area */
    VMM_VIRTQ_DEVICE, /* device (used) area */
};
unsigned vmm__virtio_num_queues(struct vmm_virtio *v);
uint16_t vmm__virtio_queue_num_max(struct vmm_virtio *v, uint32_t q);
uint64_t vmm__virtio_queue_reg(struct vmm_virtio *v, uint32_t q, enum vmm_virtq_reg reg);
/* Refused (guest error) for a missing queue or a live one (§4.2.3.2, §4.1.4.3.2). */
void vmm__virtio_set_queue_reg(struct vmm_virtio *v, uint32_t q, enum vmm_virtq_reg reg, uint64_t val);
bool vmm__virtio_queue_enabled(struct vmm_virtio *v, uint32_t q);
/* 1: check the rings and go live (refused: NEEDS_RESET); 0: stop using the queue. */
void vmm__virtio_queue_enable(struct vmm_virtio *v, uint32_t q, bool on);
/* The driver's available-buffer notification (§2.9): served now if the device is live. */
void vmm__virtio_queue_kick(struct vmm_virtio *v, uint32_t q);
/* Per-queue reset (§2.6.1, VIRTIO_F_RING_RESET style): the queue back to its power-on state. */
void vmm__virtio_queue_reset(struct vmm_virtio *v, uint32_t q);

/* ISR: read without side effect (MMIO InterruptStatus), acknowledge bits (MMIO InterruptACK), or read and
 * clear (PCI ISR capability, §4.1.4.5). Lowering bits calls the transport's interrupt op with LOWER. */
uint32_t vmm__virtio_isr(struct vmm_virtio *v);
void vmm__virtio_ack_isr(struct vmm_virtio *v, uint32_t bits);
uint32_t vmm__virtio_read_clear_isr(struct vmm_virtio *v);

/* Device config space: offsets relative to its start; out-of-range accesses are guest errors (read 0). */
uint32_t vmm__virtio_config_generation(struct vmm_virtio *v);
void vmm__virtio_config_read(struct vmm_virtio *v, uint32_t off, void *buf, unsigned len);
void vmm__virtio_config_write(struct vmm_virtio *v, uint32_t off, const void *buf, unsigned len);

#endif
