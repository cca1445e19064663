/* virtio_dummy.c - a test device for the virtio-mmio conformance suite: an echo queue, a sink queue, a config space. */
#include <stdlib.h>
#include <string.h>

#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "virtio.h"

/*
 * Device id 0xfff0 is not assigned by the virtio specification (§5); no
 * guest driver binds to it. Offered features: bit 0 (DUMMY_F_A) and bit 1
 * (DUMMY_F_B), which depends on A: a driver that accepts B without A has
 * FEATURES_OK refused, to test device-side refusal.
 *
 * Config space (little-endian, 16 bytes):
 *   0  magic    RO  0x796d7564 ("dumy")
 *   4  scratch  RW
 *   8  trigger  RW  a write bumps ConfigGeneration and raises the config interrupt; reads the count of such writes
 *   12 chains   RO  chains completed on queue 0 since reset
 *
 * Queue 0 echoes: each chain's readable bytes (the first 4 KiB), reversed,
 * are written into its writable part (as much as fits) and the chain is
 * returned with that length. Queue 1 is a sink: chains are returned with length 0.
 */
#define DUMMY_F_A 0
#define DUMMY_F_B 1
#define DUMMY_MAGIC 0x796d7564u
#define DUMMY_QUEUE_MAX 16
#define DUMMY_ECHO_MAX 4096

struct dummy_config {
    uint32_t magic, scratch, trigger, chains;
};

struct vmm_virtio_dummy {
    struct vmm_virtio *v;
    struct dummy_config cfg;
    struct virtq_chain chain;
    uint8_t in[DUMMY_ECHO_MAX], out[DUMMY_ECHO_MAX];
};

static void dummy_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_virtio_dummy *d = dev;
    memcpy(buf, (uint8_t *)&d->cfg + off, len);
}

static void dummy_config_write(void *dev, uint32_t off, const void *buf, uint32_t len)
{
    struct vmm_virtio_dummy *d = dev;
    uint32_t trigger = d->cfg.trigger;

    for (uint32_t i = 0; i < len; i++) {
        uint32_t at = off + i;
        if (at >= offsetof(struct dummy_config, scratch) && at < offsetof(struct dummy_config, chains))
            ((uint8_t *)&d->cfg)[at] = ((const uint8_t *)buf)[i];
    }
    if (off + len > offsetof(struct dummy_config, trigger) && off < offsetof(struct dummy_config, chains)) {
        d->cfg.trigger = trigger + 1;
        vmm__virtio_config_changed(d->v);
    }
}

static bool dummy_features_ok(void *dev, uint64_t features)
{
    (void)dev;
    return !(features >> DUMMY_F_B & 1) || (features >> DUMMY_F_A & 1);
}

static void dummy_queue_notify(void *dev, unsigned qi)
{
    struct vmm_virtio_dummy *d = dev;
    struct vmm_virtq *q = vmm__virtio_queue(d->v, qi);
    struct virtq_chain *c = &d->chain;
    bool pushed = false;

    while (vmm__virtq_pop(q, c) > 0) {
        uint32_t written = 0;
        if (qi == 0) {
            size_t n = vmm__virtq_read(c, 0, d->in, sizeof d->in);
            for (size_t i = 0; i < n; i++)
                d->out[i] = d->in[n - 1 - i];
            written = (uint32_t)vmm__virtq_write(c, 0, d->out, n); /* as much as fits */
            d->cfg.chains++;
        }
        vmm__virtq_push(q, c, written);
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(d->v, qi);
}

static void dummy_reset(void *dev)
{
    struct vmm_virtio_dummy *d = dev;
    d->cfg.chains = 0;
}

static void dummy_destroy(void *dev)
{
    free(dev);
}

static const struct vmm_virtio_ops dummy_ops = {
    .name = "dummy",
    .device_id = VIRTIO_ID_DUMMY,
    .features = (1ULL << DUMMY_F_A) | (1ULL << DUMMY_F_B),
    .num_queues = 2,
    .queue_max = DUMMY_QUEUE_MAX,
    .config_size = sizeof(struct dummy_config),
    .config_read = dummy_config_read,
    .config_write = dummy_config_write,
    .features_ok = dummy_features_ok,
    .queue_notify = dummy_queue_notify,
    .reset = dummy_reset,
};

/* Snapshots: the core's state, then the config space's writable fields and the chain count. */
static int dummy_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_virtio_dummy *d = dev;

    if (vmm__virtio_snap(d->v, s))
        return vmm__snap_error(s);
    vmm__snap_u32(s, &d->cfg.scratch);
    vmm__snap_u32(s, &d->cfg.trigger);
    vmm__snap_u32(s, &d->cfg.chains);
    return vmm__snap_error(s);
}

static const struct vmm_device_ops dummy_device = {
    .name = "virtio-dummy",
    .save = dummy_snap,
    .load = dummy_snap,
    .snap_version = 1,
    .destroy = dummy_destroy,
};

int vmm__dev_add_test_device(struct vmm_vm *vm)
{
    struct vmm_virtio_dummy *d = calloc(1, sizeof *d);
    int rc;

    if (!vm) {
        free(d);
        return VMM_EINVAL;
    }
    if (!d)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the virtio test device");
    d->cfg.magic = DUMMY_MAGIC;
    if ((rc = vmm__virtio_add(vm, &dummy_ops, &dummy_device, d, &d->v)))
        free(d);
    return rc;
}
