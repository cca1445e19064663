/*
 * virtio.h - what a virtio device sees (virtio 1.2): its ops table, the
 * virtio core's device -> core calls (virtio.c) and split virtqueues
 * (virtq.c). Devices know no transport; transports use virtio_transport.h.
 */
#ifndef VMM_VIRTIO_H
#define VMM_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio_ids.h"

struct vmm_vm;
struct vmm_virtio; /* one device: the virtio core's state (virtio.c) */
struct vmm_virtq;  /* one split virtqueue (virtq.c) */

/* Feature bits the core owns (virtio 1.2 §6) */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* Device status bits (§2.1) */
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u

#define VIRTQ_MAX_SIZE 1024 /* the largest queue size a device may offer */

/*
 * What a device provides. It knows nothing of the transport: config space
 * is a byte array the transport reads and writes through these calls, and
 * queues are handed to it as struct vmm_virtq. All calls come from the
 * thread that performs the guest's register access (a vCPU thread), with the
 * device's lock (the core's, recursive) held; a device that has its own
 * threads takes it through the device -> core calls below.
 */
struct vmm_virtio_ops {
    const char *name;   /* "gpu", "dummy", ... for logs */
    uint32_t device_id; /* VIRTIO_ID_* (virtio_ids.h) */
    /* device-specific feature bits offered (the core adds VERSION_1, INDIRECT_DESC, EVENT_IDX) */
    uint64_t features;
    unsigned num_queues;
    uint16_t queue_max; /* QueueNumMax for every queue (power of 2, <= VIRTQ_MAX_SIZE) */
    uint32_t config_size;
    /* Config space accesses (off + len <= config_size, checked by the core). */
    void (*config_read)(void *dev, uint32_t off, void *buf, uint32_t len);
    void (*config_write)(void *dev, uint32_t off, const void *buf, uint32_t len); /* may be NULL: read-only */
    /* The driver set FEATURES_OK with these features; false refuses them (FEATURES_OK then reads back clear). */
    bool (*features_ok)(void *dev, uint64_t features); /* may be NULL */
    /* DRIVER_OK was set: queues are live. May be NULL. */
    void (*driver_ok)(void *dev);
    /* The driver notified queue q (QueueNotify); the device pops and pushes buffers now. */
    void (*queue_notify)(void *dev, unsigned q);
    /* Device reset (status written 0, or NEEDS_RESET recovery): drop all queue state and requests. */
    void (*reset)(void *dev);
};

/*
 * How a virtio device joins the machine, once: on the board with dev_ops (its lifecycle hooks,
 * destroy included: board.h) and on the VM's transport (vm->transport: virtio-mmio or virtio-pci).
 * `dev` is the device's opaque state; *out (may be NULL) receives the device's core handle, which the
 * device -> core calls below take. On failure neither holds the device: the caller frees it.
 */
struct vmm_device_ops;
int vmm__virtio_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, const struct vmm_device_ops *dev_ops,
                    void *dev, struct vmm_virtio **out);

/*
 * The virtio-mmio transport (virtio_mmio.c). vmm__virtio_mmio_add puts a
 * device on the next free slot (layout.h: 0x0A00_0000 + 0x200·n, SPI 16+n)
 * and in the device tree.
 */
int vmm__virtio_mmio_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev, struct vmm_virtio **out);
/* Put the virtio-mmio window on the bus and the board (board init; idempotent). */
int vmm__virtio_mmio_init(struct vmm_vm *vm);
/* The virtio-pci transport (virtio_pci.c): a function on the next free slot of PCI bus 0. */
int vmm__virtio_pci_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev, struct vmm_virtio **out);

/*
 * Device -> core. These (and vmm__virtq_pop/push) take the device's lock,
 * which is recursive: call them from the ops callbacks or from a device
 * thread. The core tells the transport to interrupt.
 */
struct vmm_virtq *vmm__virtio_queue(struct vmm_virtio *v, unsigned q);
/* Raise the used-buffer interrupt for q if the driver wants it (EVENT_IDX / NO_INTERRUPT honoured). */
void vmm__virtio_notify(struct vmm_virtio *v, unsigned q);
/* The device's config space changed: bump ConfigGeneration, raise the configuration interrupt. */
void vmm__virtio_config_changed(struct vmm_virtio *v);
/* A counted, rate-limited guest error naming the device and its transport instance ("rng@virtio-mmio.2"). */
void vmm__virtio_guest_error(struct vmm_virtio *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The driver broke the rules: set DEVICE_NEEDS_RESET (and the config interrupt), log a guest error. */
void vmm__virtio_needs_reset(struct vmm_virtio *v, const char *why);
uint64_t vmm__virtio_features(struct vmm_virtio *v); /* negotiated */
/*
 * The device lock (recursive; the transport holds it around register
 * accesses, the core around callbacks). A device thread that delivers host
 * input holds it around its queue work, so it never races a vCPU in the
 * device's callbacks. Order: device lock -> GIC -> vm->lock.
 */
void vmm__virtio_lock(struct vmm_virtio *v);
void vmm__virtio_unlock(struct vmm_virtio *v);
/* Whether the queues may be processed now: DRIVER_OK and not NEEDS_RESET. */
bool vmm__virtio_live(struct vmm_virtio *v);
/* NEEDS_RESET is set: the device ignores its queues until the driver resets it. */
bool vmm__virtio_broken(struct vmm_virtio *v);
struct vmm_vm *vmm__virtio_vm(struct vmm_virtio *v);

/*
 * Snapshots (snapshot.h, docs/snapshots.md): sync the core's state (status, features, every queue's
 * setup and progress, ISR, config generation) and the transport's registers into / out of the open
 * section. A virtio device's save and load hooks call it first, then sync their own state, so one
 * section holds the whole device. Loading validates every value as a register write would and fails
 * with vmm__snap_fail(); the rings' contents are in guest RAM and are not touched. Takes the lock.
 */
struct vmm_snap;
int vmm__virtio_snap(struct vmm_virtio *v, struct vmm_snap *s);

/*
 * A descriptor chain popped from the available ring, resolved to host
 * memory. Every segment was bounds-checked against guest RAM. Readable
 * (driver -> device) segments come first, then writable ones (§2.7.4.2);
 * a chain that mixes them otherwise, loops, is longer than the queue, or
 * points outside RAM is refused (NEEDS_RESET).
 */
#define VIRTQ_MAX_SEGS 256
struct virtq_seg {
    uint8_t *host;
    uint32_t len;
};
struct virtq_chain {
    uint16_t head;
    unsigned nread, nwrite;               /* segment counts */
    struct virtq_seg seg[VIRTQ_MAX_SEGS]; /* nread readable, then nwrite writable */
    uint64_t read_len, write_len;         /* bytes in each direction */
    uint16_t ndesc;                       /* descriptors of the queue's table it uses (an indirect table: 1) */
};

/* 1: *c holds the next chain; 0: the ring is empty; negative: the queue is broken (NEEDS_RESET is set). */
int vmm__virtq_pop(struct vmm_virtq *q, struct virtq_chain *c);
/*
 * Give back the last n chains popped and not pushed (the device could not use them now, e.g.
 * virtio-net found too few receive buffers for a whole frame): the next pops return them again.
 */
void vmm__virtq_unpop(struct vmm_virtq *q, uint16_t n);
/* Return a chain to the used ring with `written` bytes written by the device (does not interrupt). */
void vmm__virtq_push(struct vmm_virtq *q, const struct virtq_chain *c, uint32_t written);
/* Copy out of the readable part / into the writable part, from byte `off`; return the bytes copied. */
size_t vmm__virtq_read(const struct virtq_chain *c, uint64_t off, void *buf, size_t len);
size_t vmm__virtq_write(const struct virtq_chain *c, uint64_t off, const void *buf, size_t len);
bool vmm__virtq_ready(const struct vmm_virtq *q);
uint16_t vmm__virtq_size(const struct vmm_virtq *q);

#endif
