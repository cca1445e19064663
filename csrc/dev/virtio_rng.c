/* virtio_rng.c - virtio-rng (virtio 1.2 §5.4): an entropy source fed by the host's CSPRNG; vmm_add_rng(). */
#include <errno.h>
#include <stdlib.h>

#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "../host/host.h"
#include "virtio.h"

/*
 * One request queue, no features, no config space. Each chain's writable
 * buffers are filled from getrandom() (at most RNG_CHAIN_MAX bytes a chain,
 * the rest left unused: the driver asks again) and returned with the bytes
 * written. A chain with no writable part is returned with length 0.
 */
#define RNG_QUEUE_MAX 64
#define RNG_CHAIN_MAX (64u * 1024)

struct vmm_virtio_rng {
    struct vmm_virtio *v;
    struct virtq_chain chain;
};

/* Fill up to `want` bytes of the chain's writable part; returns the bytes written. */
static uint32_t rng_fill(const struct virtq_chain *c, uint64_t want)
{
    uint64_t done = 0;

    for (unsigned i = c->nread; i < c->nread + c->nwrite && done < want; i++) {
        uint8_t *p = c->seg[i].host;
        uint64_t n = c->seg[i].len;
        if (n > want - done)
            n = want - done;
        if (vmm__host_random(p, (size_t)n))
            return (uint32_t)done;
        done += n;
    }
    return (uint32_t)done;
}

static void rng_queue_notify(void *dev, unsigned qi)
{
    struct vmm_virtio_rng *r = dev;
    struct vmm_virtq *q = vmm__virtio_queue(r->v, qi);
    struct virtq_chain *c = &r->chain;
    bool pushed = false;

    while (vmm__virtq_pop(q, c) > 0) {
        uint64_t want = c->write_len < RNG_CHAIN_MAX ? c->write_len : RNG_CHAIN_MAX;
        vmm__virtq_push(q, c, rng_fill(c, want));
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(r->v, qi);
}

static void rng_destroy(void *dev)
{
    free(dev);
}

static const struct vmm_virtio_ops rng_ops = {
    .name = "rng",
    .device_id = VIRTIO_ID_ENTROPY,
    .num_queues = 1,
    .queue_max = RNG_QUEUE_MAX,
    .queue_notify = rng_queue_notify,
};

/* Snapshots: the core's state only (chains are served at once; the entropy is the host's). */
static int rng_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_virtio_rng *r = dev;
    return vmm__virtio_snap(r->v, s);
}

static const struct vmm_device_ops rng_device = {
    .name = "virtio-rng",
    .save = rng_snap,
    .load = rng_snap,
    .snap_version = 1,
    .destroy = rng_destroy,
};

int vmm__dev_add_rng(struct vmm_vm *vm)
{
    struct vmm_virtio_rng *r;
    int rc;

    if (!vm)
        return VMM_EINVAL;
    if (!(r = calloc(1, sizeof *r)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-rng");
    if ((rc = vmm__virtio_add(vm, &rng_ops, &rng_device, r, &r->v)))
        free(r);
    return rc;
}
