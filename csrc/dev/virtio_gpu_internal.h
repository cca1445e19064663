/*
 * virtio_gpu_internal.h - what virtio_gpu.c (the device's commands) and
 * virtio_gpu_snap.c (its snapshot section) share: the device and resource
 * structures and the helpers both use. Not for other files.
 */
#ifndef VMM_VIRTIO_GPU_INTERNAL_H
#define VMM_VIRTIO_GPU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/budget.h"
#include "virtq.h"

struct vmm_snap;

#define MAX_RESOURCES 65536
#define MAX_BACKING_ENTRIES (1u << 18) /* a 1 GiB resource in 4 KiB pages */
#define RES_BUCKETS 256

struct rect {
    uint32_t x, y, width, height;
};

struct gpu_res {
    struct gpu_res *next; /* hash chain */
    uint32_t id, format, width, height;
    uint8_t *pix; /* width * height * 4 bytes, in the guest's format */
    /*
     * A second buffer for full transfers while the screen still reads pix
     * (its last flush, not yet converted): the transfer fills this one and
     * the two swap, so neither a flush nor a transfer converts anything.
     * Allocated on first need, from the budget; dropped when it runs short.
     */
    uint8_t *spare;
    /* backing: guest-physical entries, checked at attach and resolved at transfer */
    struct backing {
        uint64_t gpa, off; /* off: where this entry starts in the backing */
        uint32_t len;
    } * ents;
    uint32_t nents;
    bool backed;
    uint64_t backing_len;
    uint64_t ents_cost; /* taken from the budget for ents */
};

/*
 * `lock` guards the device: commands run on a vCPU thread (the transport's
 * lock held), reset likewise; the screen has its own lock, taken inside.
 */
struct vmm_gpu {
    struct vmm_vm *vm;
    struct vmm_virtio *vio;
    uint32_t width, height; /* the mode offered (vmm_add_gpu) */
    /*
     * Every host allocation the guest causes: resources, their backing tables (and the request's
     * copy while attaching), the scanout image and held frames (screen.c). Capped by max_mem.
     */
    struct vmm_budget mem;
    pthread_mutex_t lock;
    uint32_t events_read;
    struct gpu_res *res[RES_BUCKETS];
    unsigned nres;
    /* scanout 0 */
    uint32_t scanout_res; /* 0: disabled */
    struct rect scanout;
    struct {
        uint32_t scanout_id, x, y, resource_id, hot_x, hot_y;
    } cursor;
    struct vmm_screen *screen;
    struct virtq_chain chain; /* the request being served (large: kept off the stack) */
};

/* The resource `id`, or NULL. g->lock held. */
struct gpu_res *vmm__gpu_res_find(struct vmm_gpu *g, uint32_t id);
/* Back to power-on: every resource freed, scanout and cursor off. g->lock held. */
void vmm__gpu_reset_locked(struct vmm_gpu *g);
/* Whether r lies inside a w x h area (64-bit sums: no wrap-around). */
bool vmm__gpu_rect_inside(const struct rect *r, uint32_t w, uint32_t h);
/* The device's snapshot section (virtio_gpu_snap.c): saves or loads, as s says. */
int vmm__gpu_snap(void *dev, struct vmm_snap *s);

#endif
