/* virtio_gpu_snap.c - virtio-gpu's snapshot section: its resources, scanout, cursor and screen. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/run.h"
#include "../core/snapshot.h"
#include "virtio.h"
#include "virtio_gpu.h"
#include "virtio_gpu_internal.h"

/*
 * ---- snapshots ----
 *
 * After the virtio core's state: the mode offered (must be the same), events_read, every resource
 * (id, format, size, its pixels as the host holds them, and its backing as guest-physical entries
 * only: re-checked against RAM when loading, exactly as ATTACH_BACKING checks them), scanout 0 and the
 * cursor, then the screen (screen.c: the image as shown, the frame counter, held frames). Each
 * resource takes from the budget what it took when created and attached, so vmm__budget_used() is
 * the same after a restore. Chains are served completely when notified: nothing is in flight.
 */
static void snap_rect(struct vmm_snap *s, struct rect *r)
{
    vmm__snap_u32(s, &r->x);
    vmm__snap_u32(s, &r->y);
    vmm__snap_u32(s, &r->width);
    vmm__snap_u32(s, &r->height);
}

static void snap_res_save(struct vmm_gpu *g, struct gpu_res *r, struct vmm_snap *s)
{
    vmm__snap_u32(s, &r->id);
    vmm__snap_u32(s, &r->format);
    vmm__snap_u32(s, &r->width);
    vmm__snap_u32(s, &r->height);
    vmm__snap_bool(s, &r->backed);
    vmm__snap_u32(s, &r->nents);
    vmm__snap_u64(s, &r->ents_cost);
    for (uint32_t i = 0; i < r->nents; i++) {
        vmm__snap_u64(s, &r->ents[i].gpa);
        vmm__snap_u32(s, &r->ents[i].len);
    }
    vmm__snap_bytes(s, r->pix, (size_t)r->width * r->height * 4);
    (void)g;
}

/* One resource from the stream, checked as RESOURCE_CREATE_2D and ATTACH_BACKING would. */
static void snap_res_load(struct vmm_gpu *g, struct vmm_snap *s)
{
    struct gpu_res t = { 0 }, *r;

    vmm__snap_u32(s, &t.id);
    vmm__snap_u32(s, &t.format);
    vmm__snap_u32(s, &t.width);
    vmm__snap_u32(s, &t.height);
    vmm__snap_bool(s, &t.backed);
    vmm__snap_u32(s, &t.nents);
    vmm__snap_u64(s, &t.ents_cost);
    if (vmm__snap_error(s))
        return;
    if (!t.id || vmm__gpu_res_find(g, t.id)) {
        vmm__snap_fail(s, "resource id %" PRIu32 " is 0 or appears twice", t.id);
        return;
    }
    if (!vmm__gpu_format_ok(t.format) || !t.width || !t.height || t.width > GPU_MAX_DIM || t.height > GPU_MAX_DIM) {
        vmm__snap_fail(s, "resource %" PRIu32 ": format %" PRIu32 ", %" PRIu32 "x%" PRIu32, t.id, t.format, t.width,
                       t.height);
        return;
    }
    /* the table's cost counts the request's entries, zero-length ones included (cmd_attach_backing) */
    if (t.nents > MAX_BACKING_ENTRIES || (!t.backed && (t.nents || t.ents_cost)) ||
        (t.backed && (t.ents_cost % sizeof(struct backing) || t.ents_cost / sizeof(struct backing) < t.nents ||
                      t.ents_cost / sizeof(struct backing) > MAX_BACKING_ENTRIES || !t.ents_cost))) {
        vmm__snap_fail(s, "resource %" PRIu32 ": backing of %" PRIu32 " entries (cost %" PRIu64 ")", t.id, t.nents,
                       t.ents_cost);
        return;
    }
    uint64_t bytes = (uint64_t)t.width * t.height * 4;
    if (g->nres >= MAX_RESOURCES || !vmm__budget_take(&g->mem, sizeof(struct gpu_res) + bytes + t.ents_cost)) {
        vmm__snap_fail_code(s, VMM_ENOMEM, "resource %" PRIu32 " is over the GPU's memory cap", t.id);
        return;
    }
    if (!(r = calloc(1, sizeof *r)) || !(r->pix = malloc(bytes)) ||
        (t.nents && !(r->ents = malloc((size_t)t.nents * sizeof *r->ents)))) {
        if (r)
            free(r->pix);
        free(r);
        vmm__budget_give(&g->mem, sizeof(struct gpu_res) + bytes + t.ents_cost);
        vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory for resource %" PRIu32, t.id);
        return;
    }
    r->id = t.id;
    r->format = t.format;
    r->width = t.width;
    r->height = t.height;
    r->backed = t.backed;
    r->nents = t.nents;
    r->ents_cost = t.ents_cost;
    r->next = g->res[r->id % RES_BUCKETS]; /* in the table from here on: reset_locked frees it on failure */
    g->res[r->id % RES_BUCKETS] = r;
    g->nres++;
    for (uint32_t i = 0; i < t.nents && !vmm__snap_error(s); i++) {
        struct backing *e = &r->ents[i];
        vmm__snap_u64(s, &e->gpa);
        vmm__snap_u32(s, &e->len);
        e->off = r->backing_len;
        if (vmm__snap_error(s))
            break;
        if (!e->len || !vmm__gpa_ptr(g->vm, e->gpa, e->len))
            vmm__snap_fail(
                s, "resource %" PRIu32 ": backing entry %" PRIu32 " (0x%" PRIx64 "+0x%" PRIx32 ") is not in guest RAM",
                r->id, i, e->gpa, e->len);
        r->backing_len += e->len;
    }
    vmm__snap_bytes(s, r->pix, (size_t)bytes);
}

int vmm__gpu_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_gpu *g = dev;
    bool loading = vmm__snap_loading(s);
    uint32_t width = g->width, height = g->height, nres = g->nres;

    if (vmm__virtio_snap(g->vio, s))
        return vmm__snap_error(s);
    vmm__virtio_lock(g->vio);
    pthread_mutex_lock(&g->lock);
    if (loading)
        vmm__gpu_reset_locked(g);
    vmm__snap_u32(s, &width);
    vmm__snap_u32(s, &height);
    vmm__snap_u32(s, &g->events_read);
    vmm__snap_u32(s, &nres);
    if (loading && !vmm__snap_error(s)) {
        if (width != g->width || height != g->height)
            vmm__snap_fail(s, "the GPU offered %" PRIu32 "x%" PRIu32 ", this one %" PRIu32 "x%" PRIu32, width, height,
                           g->width, g->height);
        else if (nres > MAX_RESOURCES)
            vmm__snap_fail(s, "%" PRIu32 " resources: at most %d", nres, MAX_RESOURCES);
        for (uint32_t i = 0; i < nres && !vmm__snap_error(s); i++)
            snap_res_load(g, s);
    } else if (!loading) {
        for (unsigned b = 0; b < RES_BUCKETS; b++)
            for (struct gpu_res *r = g->res[b]; r; r = r->next)
                snap_res_save(g, r, s);
    }
    vmm__snap_u32(s, &g->scanout_res);
    snap_rect(s, &g->scanout);
    vmm__snap_u32(s, &g->cursor.scanout_id);
    vmm__snap_u32(s, &g->cursor.x);
    vmm__snap_u32(s, &g->cursor.y);
    vmm__snap_u32(s, &g->cursor.resource_id);
    vmm__snap_u32(s, &g->cursor.hot_x);
    vmm__snap_u32(s, &g->cursor.hot_y);
    if (loading && !vmm__snap_error(s) && g->scanout_res) {
        struct gpu_res *r = vmm__gpu_res_find(g, g->scanout_res);
        if (!r || !g->scanout.width || !g->scanout.height || !vmm__gpu_rect_inside(&g->scanout, r->width, r->height))
            vmm__snap_fail(s,
                           "scanout 0 shows %" PRIu32 "x%" PRIu32 "+%" PRIu32 "+%" PRIu32 " of resource %" PRIu32
                           ", which does not hold it",
                           g->scanout.width, g->scanout.height, g->scanout.x, g->scanout.y, g->scanout_res);
    }
    if (!vmm__snap_error(s))
        vmm__screen_snap(g->screen, s);
    if (loading && !vmm__snap_error(s)) {
        uint32_t w, h;
        vmm__screen_mode(g->screen, &w, &h);
        if (g->scanout_res ? w != g->scanout.width || h != g->scanout.height : w || h)
            vmm__snap_fail(s, "the screen is %" PRIu32 "x%" PRIu32 ", scanout 0 %" PRIu32 "x%" PRIu32, w, h,
                           g->scanout_res ? g->scanout.width : 0, g->scanout_res ? g->scanout.height : 0);
    }
    if (loading && vmm__snap_error(s)) { /* no half-loaded device: back to power-on */
        g->scanout_res = 1;              /* so that reset_locked disables the screen whatever it holds */
        vmm__gpu_reset_locked(g);
    }
    pthread_mutex_unlock(&g->lock);
    vmm__virtio_unlock(g->vio);
    return vmm__snap_error(s);
}
