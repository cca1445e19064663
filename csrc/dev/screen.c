/* screen.c - the frame store behind vmm_screen_*: scanout 0 as RGBA, frame counter, held frames, waiters. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/budget.h"
#include "../core/run.h"
#include "../core/snapshot.h"
#include "../host/host.h"
#include "virtio_gpu.h"

#define MAX_HOLDS 64
#define OPAQUE 0xff000000u /* a scanout has no alpha: captures are opaque */

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pixel conversion assumes a little-endian host");

/*
 * `lock` guards everything; the GPU calls in with its own lock held (GPU ->
 * screen), API callers take only this one. Pixels are 32-bit words that are
 * R, G, B, A bytes in memory.
 */
struct vmm_screen {
    pthread_mutex_t lock;
    struct vmm_budget *mem; /* the GPU's: the image and held frames are taken from it */
    pthread_cond_t cond;    /* CLOCK_MONOTONIC: a frame, or the run ended */
    uint32_t *img;          /* w * h pixels, NULL when 0 x 0 */
    uint32_t w, h;
    uint64_t frames;
    uint64_t converted; /* pixels converted (vmm_screen_info) */
    bool changed;       /* the image changed since frame `frames` was presented (mode set) */
    bool running;
    /*
     * The last flush, not yet converted into img: guest pixels the GPU
     * promises to leave unchanged until vmm__screen_settle() (it asks before
     * writing or freeing them). Converted when someone looks (a capture, a
     * hold, a snapshot), or when a flush that does not cover it follows: a
     * frame nobody looks at costs no conversion.
     */
    struct pending {
        const uint8_t *src; /* NULL: none */
        size_t stride;
        uint32_t format, x, y, w, h;
    } pend;
    struct hold {
        uint64_t frame; /* 0: free slot */
        bool done;      /* taken; pix NULL with done means the copy could not be allocated */
        uint32_t *pix;
        uint32_t w, h;
    } holds[MAX_HOLDS];
};

size_t vmm__screen_size(void)
{
    return sizeof(struct vmm_screen);
}

/* A copy of n pixels for a hold, taken from the budget (NULL: over budget or out of memory). */
static uint32_t *hold_copy(struct vmm_screen *s, size_t n)
{
    uint32_t *pix;

    if (!n || !vmm__budget_take(s->mem, (uint64_t)n * 4))
        return NULL;
    if (!(pix = malloc(n * 4))) {
        vmm__budget_give(s->mem, (uint64_t)n * 4);
        return NULL;
    }
    memcpy(pix, s->img, n * 4);
    return pix;
}

static void hold_free(struct vmm_screen *s, struct hold *hd)
{
    if (hd->pix)
        vmm__budget_give(s->mem, (uint64_t)hd->w * hd->h * 4);
    free(hd->pix);
    hd->pix = NULL;
}

int vmm__screen_create(struct vmm_screen **out, struct vmm_budget *mem)
{
    struct vmm_screen *s = calloc(1, sizeof *s);

    if (!s)
        return VMM_ENOMEM;
    s->mem = mem;
    pthread_mutex_init(&s->lock, NULL);
    vmm__host_cond_init(&s->cond);
    *out = s;
    return 0;
}

void vmm__screen_destroy(struct vmm_screen *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < MAX_HOLDS; i++)
        hold_free(s, &s->holds[i]);
    if (s->img)
        vmm__budget_give(s->mem, (uint64_t)s->w * s->h * 4);
    free(s->img);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

void vmm__screen_set_running(struct vmm_screen *s, bool running)
{
    pthread_mutex_lock(&s->lock);
    s->running = running;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int vmm__screen_set_mode(struct vmm_screen *s, uint32_t w, uint32_t h)
{
    size_t n = (size_t)w * h;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    if (w != s->w || h != s->h) {
        uint32_t *img = NULL;
        if (n && !vmm__budget_take(s->mem, (uint64_t)n * 4)) {
            rc = VMM_ENOMEM;
            goto out;
        }
        if (n && !(img = malloc(n * 4))) {
            vmm__budget_give(s->mem, (uint64_t)n * 4);
            rc = VMM_ENOMEM;
            goto out;
        }
        if (s->img)
            vmm__budget_give(s->mem, (uint64_t)s->w * s->h * 4);
        free(s->img);
        s->img = img;
        s->w = w;
        s->h = h;
    }
    s->pend.src = NULL; /* the image starts over */
    for (size_t i = 0; i < n; i++)
        s->img[i] = OPAQUE;
    s->changed = true;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/*
 * One row of n guest pixels to RGBA: a tight loop per format, no call per
 * pixel. Blocks of 8 pixels have a constant trip count, which GCC's -O2
 * cost model ("very cheap": no epilogue, no alias check) vectorizes; a
 * plain loop over n stayed scalar at 2.5 ns per pixel.
 */
static void convert_row(uint32_t *restrict dst, const uint8_t *restrict src, uint32_t n, uint32_t format)
{
    uint32_t v, i = 0;

#define EACH(expr)                                    \
    for (; i + 8 <= n; i += 8) {                      \
        for (uint32_t j = 0; j < 8; j++) {            \
            memcpy(&v, src + 4 * ((size_t)i + j), 4); \
            dst[i + j] = (expr) | OPAQUE;             \
        }                                             \
    }                                                 \
    for (; i < n; i++) {                              \
        memcpy(&v, src + 4 * (size_t)i, 4);           \
        dst[i] = (expr) | OPAQUE;                     \
    }
    switch (format) {
    case GPU_FORMAT_R8G8B8A8_UNORM: /* R G B A: already in order */
    case GPU_FORMAT_R8G8B8X8_UNORM:
        EACH(v);
        break;
    case GPU_FORMAT_B8G8R8A8_UNORM: /* B G R A: swap R and B */
    case GPU_FORMAT_B8G8R8X8_UNORM:
        EACH((v & 0x0000ff00u) | ((v >> 16) & 0xffu) | ((v & 0xffu) << 16));
        break;
    case GPU_FORMAT_A8R8G8B8_UNORM: /* A R G B: drop A */
    case GPU_FORMAT_X8R8G8B8_UNORM:
        EACH(v >> 8);
        break;
    case GPU_FORMAT_A8B8G8R8_UNORM: /* A B G R: reverse */
    case GPU_FORMAT_X8B8G8R8_UNORM:
        EACH(__builtin_bswap32(v));
        break;
    default:
        break;
    }
#undef EACH
}

/* Convert the pending flush into the image (screen lock held). */
static void settle_locked(struct vmm_screen *s)
{
    const struct pending *p = &s->pend;

    if (!p->src)
        return;
    if ((uint64_t)p->x + p->w <= s->w && (uint64_t)p->y + p->h <= s->h) {
        for (uint32_t r = 0; r < p->h; r++)
            convert_row(s->img + (size_t)(p->y + r) * s->w + p->x, p->src + (size_t)r * p->stride, p->w, p->format);
        s->converted += (uint64_t)p->w * p->h;
    }
    s->pend.src = NULL;
}

/* Whether the pending flush reads guest pixels in [lo, hi) (screen lock held). */
static bool pend_reads_locked(const struct vmm_screen *s, const uint8_t *lo, const uint8_t *hi)
{
    const struct pending *p = &s->pend;
    if (!p->src || !p->w || !p->h)
        return false;
    const uint8_t *end = p->src + (size_t)(p->h - 1) * p->stride + (size_t)p->w * 4;
    return p->src < hi && lo < end;
}

bool vmm__screen_reads(struct vmm_screen *s, const uint8_t *lo, const uint8_t *hi)
{
    pthread_mutex_lock(&s->lock);
    bool r = pend_reads_locked(s, lo, hi);
    pthread_mutex_unlock(&s->lock);
    return r;
}

void vmm__screen_settle(struct vmm_screen *s, const uint8_t *lo, const uint8_t *hi)
{
    pthread_mutex_lock(&s->lock);
    if (pend_reads_locked(s, lo, hi))
        settle_locked(s);
    pthread_mutex_unlock(&s->lock);
}

bool vmm__gpu_format_ok(uint32_t format)
{
    switch (format) {
    case GPU_FORMAT_B8G8R8A8_UNORM:
    case GPU_FORMAT_B8G8R8X8_UNORM:
    case GPU_FORMAT_A8R8G8B8_UNORM:
    case GPU_FORMAT_X8R8G8B8_UNORM:
    case GPU_FORMAT_R8G8B8A8_UNORM:
    case GPU_FORMAT_X8B8G8R8_UNORM:
    case GPU_FORMAT_A8B8G8R8_UNORM:
    case GPU_FORMAT_R8G8B8X8_UNORM:
        return true;
    default:
        return false;
    }
}

void vmm__screen_draw(struct vmm_screen *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, const uint8_t *src,
                      size_t stride, uint32_t format)
{
    pthread_mutex_lock(&s->lock);
    settle_locked(s);                                         /* what came before stays underneath */
    if ((uint64_t)x + w <= s->w && (uint64_t)y + h <= s->h) { /* the caller clipped; never trust it blindly */
        for (uint32_t r = 0; r < h; r++)
            convert_row(s->img + (size_t)(y + r) * s->w + x, src + (size_t)r * stride, w, format);
        s->converted += (uint64_t)w * h;
        s->changed = true;
    }
    pthread_mutex_unlock(&s->lock);
}

void vmm__screen_flush(struct vmm_screen *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, const uint8_t *src,
                       size_t stride, uint32_t format)
{
    size_t n;

    pthread_mutex_lock(&s->lock);
    if ((uint64_t)x + w <= s->w && (uint64_t)y + h <= s->h) { /* the caller clipped; never trust it blindly */
        const struct pending *p = &s->pend;
        /* a pending flush this one covers is overwritten whole: it never needs converting */
        if (p->src && !(p->x >= x && p->y >= y && p->x + p->w <= x + w && p->y + p->h <= y + h))
            settle_locked(s);
        s->pend = (struct pending){ .src = src, .stride = stride, .format = format, .x = x, .y = y, .w = w, .h = h };
    }
    s->frames++;
    s->changed = false;
    n = (size_t)s->w * s->h;
    for (unsigned i = 0; i < MAX_HOLDS; i++) {
        struct hold *hd = &s->holds[i];
        if (hd->frame != s->frames || hd->done)
            continue;
        settle_locked(s);
        hd->done = true;
        hd->w = s->w;
        hd->h = s->h;
        hd->pix = hold_copy(s, n);
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* The screen of a VM, or an error (VMM_ENOTSUP without a GPU). */
static int screen_of(vmm_vm *vm, struct vmm_screen **s)
{
    if (!vm)
        return VMM_EINVAL;
    struct vmm_gpu *g = vmm__gpu_find(vm);
    if (!g)
        return vmm__set_error(vm, VMM_ENOTSUP, "this VM has no GPU (add one with vmm_add_gpu)");
    *s = vmm__gpu_screen(g);
    return 0;
}

VMM_EXPORT int vmm_screen_info(vmm_vm *vm, struct vmm_screen_info *info)
{
    struct vmm_screen *s = NULL;
    struct vmm_screen_info out = { 0 };
    int rc;

    if (!info || info->size < sizeof(uint32_t))
        return VMM_EINVAL;
    if ((rc = screen_of(vm, &s)))
        return rc;
    pthread_mutex_lock(&s->lock);
    out.width = s->w;
    out.height = s->h;
    out.frames = s->frames;
    out.converted = s->converted;
    pthread_mutex_unlock(&s->lock);
    out.size = info->size < sizeof out ? info->size : (uint32_t)sizeof out;
    memcpy(info, &out, out.size);
    return 0;
}

VMM_EXPORT int vmm_screen_wait_frame(vmm_vm *vm, uint64_t frame, uint64_t timeout_ns)
{
    struct vmm_screen *s = NULL;
    struct timespec dl;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ns > (uint64_t)365 * 86400 * 1000000000ULL)
        timeout_ns = (uint64_t)365 * 86400 * 1000000000ULL;
    dl.tv_sec += (time_t)(timeout_ns / 1000000000ULL);
    dl.tv_nsec += (long)(timeout_ns % 1000000000ULL);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (s->frames < frame && s->running && timeout_ns) {
        if (vmm__host_cond_timedwait(&s->cond, &s->lock, &dl) == ETIMEDOUT)
            break;
    }
    rc = s->frames >= frame ? 0 : s->running ? 1 : VMM_EEOF;
    uint64_t got = s->frames;
    pthread_mutex_unlock(&s->lock);
    if (rc == VMM_EEOF)
        vmm__set_error(vm, VMM_EEOF, "the VM is not running: %llu frames, waiting for frame %llu",
                       (unsigned long long)got, (unsigned long long)frame);
    return rc;
}

VMM_EXPORT int vmm_screen_hold(vmm_vm *vm, uint64_t frame)
{
    struct vmm_screen *s = NULL;
    struct hold *slot = NULL;
    uint64_t frames;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    if (!frame)
        return vmm__set_error(vm, VMM_EINVAL, "frames are numbered from 1");
    pthread_mutex_lock(&s->lock);
    frames = s->frames;
    for (unsigned i = 0; i < MAX_HOLDS; i++) {
        if (s->holds[i].frame == frame)
            goto out; /* already held */
    }
    /* the latest frame can still be held while the image is unchanged since it */
    if (frame < frames || (frame == frames && s->changed)) {
        rc = VMM_ESTATE;
        goto out;
    }
    for (unsigned i = 0; i < MAX_HOLDS; i++) { /* a free slot, else the oldest taken frame */
        struct hold *hd = &s->holds[i];
        if (!hd->frame) {
            slot = hd;
            break;
        }
        if (hd->done && (!slot || hd->frame < slot->frame))
            slot = hd;
    }
    if (!slot) {
        rc = VMM_EBUSY;
        goto out;
    }
    hold_free(s, slot);
    *slot = (struct hold){ .frame = frame };
    if (frame == frames) {
        settle_locked(s);
        slot->done = true;
        slot->w = s->w;
        slot->h = s->h;
        slot->pix = hold_copy(s, (size_t)s->w * s->h);
    }
out:
    pthread_mutex_unlock(&s->lock);
    if (rc == VMM_ESTATE)
        return vmm__set_error(vm, rc, "frame %llu has already been shown (%llu frames so far)",
                              (unsigned long long)frame, (unsigned long long)frames);
    if (rc == VMM_EBUSY)
        return vmm__set_error(vm, VMM_ESTATE, "%d frames are already held and pending", MAX_HOLDS);
    return 0;
}

VMM_EXPORT int vmm_screen_capture(vmm_vm *vm, uint64_t frame, void *buf, size_t len, uint32_t *width, uint32_t *height,
                                  uint64_t *frame_out)
{
    struct vmm_screen *s = NULL;
    const uint32_t *src = NULL;
    uint32_t w = 0, h = 0;
    uint64_t frames;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    if (!buf && len)
        return vmm__set_error(vm, VMM_EINVAL, "NULL buffer");
    pthread_mutex_lock(&s->lock);
    frames = s->frames;
    if (!frame) {
        settle_locked(s); /* the latest flush is converted when someone first looks at it */
        src = s->img;
        w = s->w;
        h = s->h;
    } else {
        rc = VMM_ESTATE;
        for (unsigned i = 0; i < MAX_HOLDS; i++) {
            const struct hold *hd = &s->holds[i];
            if (hd->frame == frame && hd->done) {
                rc = hd->pix || !hd->w || !hd->h ? 0 : VMM_ENOMEM;
                src = hd->pix;
                w = hd->w;
                h = hd->h;
            }
        }
    }
    size_t need = (size_t)w * h * 4;
    if (!rc) {
        if (width)
            *width = w;
        if (height)
            *height = h;
        if (frame_out)
            *frame_out = frame ? frame : frames;
        if (len < need)
            rc = VMM_ERANGE;
        else if (need)
            memcpy(buf, src, need);
    }
    pthread_mutex_unlock(&s->lock);
    switch (rc) {
    case VMM_ESTATE:
        return vmm__set_error(vm, rc, "frame %llu was not held or has not been shown yet (%llu frames so far)",
                              (unsigned long long)frame, (unsigned long long)frames);
    case VMM_ENOMEM:
        return vmm__set_error(vm, rc, "out of memory copying held frame %llu", (unsigned long long)frame);
    case VMM_ERANGE:
        return vmm__set_error(vm, rc, "buffer of %zu bytes too small for a %ux%u frame (%zu bytes)", len, w, h, need);
    default:
        return 0;
    }
}

/* The park source (run.c): the run loop parks once this many frames exist. */
uint64_t vmm__screen_frames(void *screen)
{
    struct vmm_screen *s = screen;
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->frames;
    pthread_mutex_unlock(&s->lock);
    return n;
}

VMM_EXPORT int vmm_screen_pause_at(vmm_vm *vm, uint64_t frame)
{
    struct vmm_screen *s = NULL;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    return vmm__park_arm(vm, frame);
}

VMM_EXPORT int vmm_screen_pause_wait(vmm_vm *vm, uint64_t timeout_ns)
{
    struct vmm_screen *s = NULL;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    return vmm__park_wait(vm, timeout_ns);
}

VMM_EXPORT int vmm_screen_resume(vmm_vm *vm)
{
    struct vmm_screen *s = NULL;
    int rc;

    if ((rc = screen_of(vm, &s)))
        return rc;
    vmm__park_release(vm);
    return 0;
}

/* ---- snapshots (virtio_gpu.h) ---- */

void vmm__screen_mode(struct vmm_screen *s, uint32_t *w, uint32_t *h)
{
    pthread_mutex_lock(&s->lock);
    *w = s->w;
    *h = s->h;
    pthread_mutex_unlock(&s->lock);
}

/* A w x h image: both at most GPU_MAX_DIM (the largest scanout a resource allows), or 0 x 0. */
static bool snap_dims_ok(uint32_t w, uint32_t h)
{
    return (!w && !h) || (w && h && w <= GPU_MAX_DIM && h <= GPU_MAX_DIM);
}

void vmm__screen_snap(struct vmm_screen *s, struct vmm_snap *snap)
{
    bool loading = vmm__snap_loading(snap);
    uint32_t w = s->w, h = s->h;

    if (loading && vmm__screen_set_mode(s, 0, 0)) /* cannot fail for 0 x 0 (and drops a pending flush) */
        return;
    pthread_mutex_lock(&s->lock);
    if (!loading)
        settle_locked(s); /* the image as shown: the last flush converted */
    vmm__snap_u32(snap, &w);
    vmm__snap_u32(snap, &h);
    vmm__snap_u64(snap, &s->frames);
    vmm__snap_bool(snap, &s->changed);
    if (loading && !vmm__snap_error(snap)) {
        if (!snap_dims_ok(w, h)) {
            vmm__snap_fail(snap, "screen of %" PRIu32 "x%" PRIu32 " pixels", w, h);
        } else if (w) {
            pthread_mutex_unlock(&s->lock);
            bool changed = s->changed;
            if (vmm__screen_set_mode(s, w, h))
                vmm__snap_fail_code(snap, VMM_ENOMEM, "a %" PRIu32 "x%" PRIu32 " screen is over the GPU's memory cap",
                                    w, h);
            pthread_mutex_lock(&s->lock);
            s->changed = changed;
        }
    }
    if (s->img && !vmm__snap_error(snap))
        vmm__snap_bytes(snap, s->img, (size_t)s->w * s->h * 4);
    for (unsigned i = 0; i < MAX_HOLDS && !vmm__snap_error(snap); i++) {
        struct hold *hd = &s->holds[i];
        bool has_pix = hd->pix != NULL;
        if (loading)
            hold_free(s, hd);
        vmm__snap_u64(snap, &hd->frame);
        vmm__snap_bool(snap, &hd->done);
        vmm__snap_u32(snap, &hd->w);
        vmm__snap_u32(snap, &hd->h);
        vmm__snap_bool(snap, &has_pix);
        if (vmm__snap_error(snap))
            break;
        if (loading) {
            uint64_t n = (uint64_t)hd->w * hd->h;
            if (!snap_dims_ok(hd->w, hd->h) || (has_pix && (!hd->done || !n)) || (!hd->frame && (hd->done || n))) {
                vmm__snap_fail(snap, "held frame %u is inconsistent", i);
                break;
            }
            if (has_pix) {
                if (!vmm__budget_take(s->mem, n * 4)) {
                    vmm__snap_fail_code(snap, VMM_ENOMEM, "held frame %" PRIu64 " is over the GPU's memory cap",
                                        hd->frame);
                    break;
                }
                if (!(hd->pix = malloc((size_t)n * 4))) {
                    vmm__budget_give(s->mem, n * 4);
                    vmm__snap_fail_code(snap, VMM_ENOMEM, "out of memory for held frame %" PRIu64, hd->frame);
                    break;
                }
            }
        }
        if (hd->pix)
            vmm__snap_bytes(snap, hd->pix, (size_t)hd->w * hd->h * 4);
    }
    pthread_mutex_unlock(&s->lock);
}
