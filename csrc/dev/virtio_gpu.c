/* virtio_gpu.c - virtio-gpu 2D device (virtio 1.2 §5.7): resources, backing, scanout 0, flush = frame, cursor. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/run.h"
#include "virtio.h"
#include "../core/board.h"
#include "../core/budget.h"
#include "../core/snapshot.h"
#include "virtio_gpu.h"
#include "virtio_gpu_internal.h"

#define GPU_F_EDID 1 /* §5.7.3; VIRGL, RESOURCE_UUID, RESOURCE_BLOB and CONTEXT_INIT are not offered */
#define GPU_QUEUE_SIZE 256
enum { CONTROLQ = 0, CURSORQ = 1 };

/* §5.7.6.7 command and response types */
enum {
    CMD_GET_DISPLAY_INFO = 0x0100,
    CMD_RESOURCE_CREATE_2D = 0x0101,
    CMD_RESOURCE_UNREF = 0x0102,
    CMD_SET_SCANOUT = 0x0103,
    CMD_RESOURCE_FLUSH = 0x0104,
    CMD_TRANSFER_TO_HOST_2D = 0x0105,
    CMD_RESOURCE_ATTACH_BACKING = 0x0106,
    CMD_RESOURCE_DETACH_BACKING = 0x0107,
    CMD_GET_EDID = 0x010a,
    CMD_CTX_CREATE = 0x0200, /* 3D: 0x0200-0x02ff, no contexts exist without VIRGL */
    CMD_UPDATE_CURSOR = 0x0300,
    CMD_MOVE_CURSOR = 0x0301,
    RESP_OK_NODATA = 0x1100,
    RESP_OK_DISPLAY_INFO = 0x1101,
    RESP_OK_EDID = 0x1104,
    RESP_ERR_UNSPEC = 0x1200,
    RESP_ERR_OUT_OF_MEMORY = 0x1201,
    RESP_ERR_INVALID_SCANOUT_ID = 0x1202,
    RESP_ERR_INVALID_RESOURCE_ID = 0x1203,
    RESP_ERR_INVALID_CONTEXT_ID = 0x1204,
    RESP_ERR_INVALID_PARAMETER = 0x1205,
};
#define FLAG_FENCE 1u

/* Wire structures, all little-endian (§5.7.6.7); the host is little-endian (screen.c asserts it). */
struct ctrl_hdr {
    uint32_t type, flags;
    uint64_t fence_id;
    uint32_t ctx_id;
    uint8_t ring_idx, padding[3];
};
struct resp_display_info {
    struct ctrl_hdr hdr;
    struct {
        struct rect r;
        uint32_t enabled, flags;
    } pmodes[16];
};
struct resp_edid {
    struct ctrl_hdr hdr;
    uint32_t size, padding;
    uint8_t edid[1024];
};
struct req_create_2d {
    uint32_t resource_id, format, width, height;
};
struct req_resource {
    uint32_t resource_id, padding; /* UNREF, DETACH_BACKING */
};
struct req_set_scanout {
    struct rect r;
    uint32_t scanout_id, resource_id;
};
struct req_flush {
    struct rect r;
    uint32_t resource_id, padding;
};
struct req_transfer {
    struct rect r;
    uint64_t offset;
    uint32_t resource_id, padding;
};
struct req_attach_backing {
    uint32_t resource_id, nr_entries;
};
struct mem_entry {
    uint64_t addr;
    uint32_t length, padding;
};
struct req_get_edid {
    uint32_t scanout, padding;
};
struct req_cursor {
    uint32_t scanout_id, x, y, padding;
    uint32_t resource_id, hot_x, hot_y, padding2; /* UPDATE_CURSOR only */
};
_Static_assert(sizeof(struct ctrl_hdr) == 24 && sizeof(struct resp_display_info) == 408 &&
                   sizeof(struct resp_edid) == 1056 && sizeof(struct req_transfer) == 32 &&
                   sizeof(struct req_cursor) == 32,
               "virtio-gpu wire layout");

/* config space, §5.7.4 */
struct gpu_config {
    uint32_t events_read, events_clear, num_scanouts, num_capsets;
};

struct gpu_res *vmm__gpu_res_find(struct vmm_gpu *g, uint32_t id)
{
    struct gpu_res *r = g->res[id % RES_BUCKETS];
    while (r && r->id != id)
        r = r->next;
    return r;
}

static size_t res_bytes(const struct gpu_res *r)
{
    return (size_t)r->width * r->height * 4;
}

/* The screen must not read buf after this (it converts what it still needs). */
static void settle_buf(struct vmm_gpu *g, const struct gpu_res *r, const uint8_t *buf)
{
    if (buf)
        vmm__screen_settle(g->screen, buf, buf + res_bytes(r));
}

static void spare_free(struct vmm_gpu *g, struct gpu_res *r)
{
    if (!r->spare)
        return;
    settle_buf(g, r, r->spare);
    free(r->spare);
    r->spare = NULL;
    vmm__budget_give(&g->mem, res_bytes(r));
}

/* Give the budget the spare buffers back (a request needs it more). Whether there were any. */
static bool spares_free(struct vmm_gpu *g)
{
    bool any = false;
    for (unsigned b = 0; b < RES_BUCKETS; b++) {
        for (struct gpu_res *r = g->res[b]; r; r = r->next) {
            any |= r->spare != NULL;
            spare_free(g, r);
        }
    }
    return any;
}

static void res_free(struct vmm_gpu *g, struct gpu_res *r)
{
    struct gpu_res **pp = &g->res[r->id % RES_BUCKETS];
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    g->nres--;
    spare_free(g, r);
    settle_buf(g, r, r->pix);
    vmm__budget_give(&g->mem, sizeof *r + (uint64_t)r->width * r->height * 4 + r->ents_cost);
    free(r->pix);
    free(r->ents);
    free(r);
}

static void disable_scanout(struct vmm_gpu *g)
{
    g->scanout_res = 0;
    g->scanout = (struct rect){ 0 };
    vmm__screen_set_mode(g->screen, 0, 0); /* cannot fail for 0 x 0 */
}

void vmm__gpu_reset_locked(struct vmm_gpu *g)
{
    for (unsigned b = 0; b < RES_BUCKETS; b++) {
        while (g->res[b])
            res_free(g, g->res[b]);
    }
    if (g->scanout_res)
        disable_scanout(g);
    memset(&g->cursor, 0, sizeof g->cursor);
    g->events_read = 0;
}

/* rect inside a w x h area, without overflow */
bool vmm__gpu_rect_inside(const struct rect *r, uint32_t w, uint32_t h)
{
    return (uint64_t)r->x + r->width <= w && (uint64_t)r->y + r->height <= h;
}

/* The index of the last backing entry of r that starts at or before offset `off` (r has entries). */
static uint32_t backing_entry(const struct gpu_res *r, uint64_t off)
{
    uint32_t lo = 0, hi = r->nents;

    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->ents[mid].off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Where [off, off + len) of r's backing is in host memory when one entry holds all of it, else NULL. */
static const uint8_t *backing_span(struct vmm_gpu *g, const struct gpu_res *r, uint64_t off, uint64_t len)
{
    if (!r->nents)
        return NULL;
    const struct backing *e = &r->ents[backing_entry(r, off)];
    if (off < e->off || off - e->off > e->len || len > e->len - (off - e->off))
        return NULL;
    return vmm__gpa_ptr(g->vm, e->gpa + (off - e->off), len);
}

/* Copy len bytes at backing offset `off` of r (the caller checked off + len <= backing_len). */
static bool backing_read(struct vmm_gpu *g, const struct gpu_res *r, uint64_t off, uint8_t *dst, uint64_t len)
{
    for (uint32_t i = backing_entry(r, off); len && i < r->nents; i++) {
        const struct backing *e = &r->ents[i];
        uint64_t in = off - e->off, n = e->len - in < len ? e->len - in : len;
        const uint8_t *p = vmm__gpa_ptr(g->vm, e->gpa + in, n);
        if (!p)
            return false;
        memcpy(dst, p, n);
        dst += n;
        off += n;
        len -= n;
    }
    return len == 0;
}

/* ---- commands: each returns a response type (and fills `resp` past the header for OK_* with data) ---- */

static uint32_t cmd_create_2d(struct vmm_gpu *g, const struct req_create_2d *c)
{
    if (!c->resource_id || vmm__gpu_res_find(g, c->resource_id))
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (!vmm__gpu_format_ok(c->format) || !c->width || !c->height || c->width > GPU_MAX_DIM || c->height > GPU_MAX_DIM)
        return RESP_ERR_INVALID_PARAMETER;
    uint64_t bytes = (uint64_t)c->width * c->height * 4; /* <= 2^30: no overflow */
    if (g->nres >= MAX_RESOURCES)
        return RESP_ERR_OUT_OF_MEMORY;
    if (!vmm__budget_take(&g->mem, sizeof(struct gpu_res) + bytes) &&
        !(spares_free(g) && vmm__budget_take(&g->mem, sizeof(struct gpu_res) + bytes)))
        return RESP_ERR_OUT_OF_MEMORY;
    struct gpu_res *r = calloc(1, sizeof *r);
    if (!r || !(r->pix = calloc(1, bytes))) {
        free(r);
        vmm__budget_give(&g->mem, sizeof(struct gpu_res) + bytes);
        return RESP_ERR_OUT_OF_MEMORY;
    }
    r->id = c->resource_id;
    r->format = c->format;
    r->width = c->width;
    r->height = c->height;
    r->next = g->res[r->id % RES_BUCKETS];
    g->res[r->id % RES_BUCKETS] = r;
    g->nres++;
    return RESP_OK_NODATA;
}

static uint32_t cmd_unref(struct vmm_gpu *g, const struct req_resource *c)
{
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (g->scanout_res == r->id)
        disable_scanout(g);
    res_free(g, r);
    return RESP_OK_NODATA;
}

/* The entries follow the request in the readable part, at `at`. */
static uint32_t cmd_attach_backing(struct vmm_gpu *g, const struct req_attach_backing *c, uint64_t at)
{
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (r->backed)
        return RESP_ERR_UNSPEC; /* detach first */
    if (!c->nr_entries || c->nr_entries > MAX_BACKING_ENTRIES)
        return RESP_ERR_INVALID_PARAMETER;
    if (g->chain.read_len < at || (g->chain.read_len - at) / sizeof(struct mem_entry) < c->nr_entries)
        return RESP_ERR_UNSPEC; /* short request: fewer entries than announced */
    /* the request's entries and the table (2^18 entries: 4 + 6 MiB), whatever the resource's size */
    uint64_t in_cost = (uint64_t)c->nr_entries * sizeof(struct mem_entry);
    uint64_t ents_cost = (uint64_t)c->nr_entries * sizeof(struct backing);
    if (!vmm__budget_take(&g->mem, in_cost + ents_cost) &&
        !(spares_free(g) && vmm__budget_take(&g->mem, in_cost + ents_cost)))
        return RESP_ERR_OUT_OF_MEMORY;
    struct mem_entry *in = malloc(in_cost);
    struct backing *ents = malloc(ents_cost);
    uint32_t n = 0;
    uint64_t total = 0;
    uint32_t rc = RESP_OK_NODATA;
    if (!in || !ents) {
        rc = RESP_ERR_OUT_OF_MEMORY;
        goto out;
    }
    vmm__virtq_read(&g->chain, at, in, (size_t)c->nr_entries * sizeof *in);
    for (uint32_t i = 0; i < c->nr_entries; i++) {
        if (!in[i].length)
            continue;
        if (!vmm__gpa_ptr(g->vm, in[i].addr, in[i].length)) {
            vmm__guest_error(g->vm, "gpu", "backing entry %u of resource %u (0x%" PRIx64 "+0x%x) is not RAM", i, r->id,
                             in[i].addr, in[i].length);
            rc = RESP_ERR_INVALID_PARAMETER;
            goto out;
        }
        /* an entry that continues the previous one joins it (Linux hands a buffer over in pieces; guest RAM is
           one host mapping, so the joined span is too): a transfer then copies whole spans */
        struct backing *prev = n ? &ents[n - 1] : NULL;
        if (prev && prev->gpa + prev->len == in[i].addr && (uint64_t)prev->len + in[i].length <= UINT32_MAX &&
            vmm__gpa_ptr(g->vm, prev->gpa, (uint64_t)prev->len + in[i].length))
            prev->len += in[i].length;
        else
            ents[n++] = (struct backing){ .gpa = in[i].addr, .off = total, .len = in[i].length };
        total += in[i].length;
    }
    r->ents = ents;
    r->nents = n;
    r->backing_len = total;
    r->backed = true;
    r->ents_cost = ents_cost;
    ents = NULL;
out:
    free(in);
    vmm__budget_give(&g->mem, in_cost + (rc == RESP_OK_NODATA ? 0 : ents_cost));
    free(ents);
    return rc;
}

static uint32_t cmd_detach_backing(struct vmm_gpu *g, const struct req_resource *c)
{
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (!r->backed)
        return RESP_ERR_UNSPEC;
    free(r->ents);
    vmm__budget_give(&g->mem, r->ents_cost);
    r->ents_cost = 0;
    r->ents = NULL;
    r->nents = 0;
    r->backing_len = 0;
    r->backed = false;
    return RESP_OK_NODATA;
}

static void present(struct vmm_gpu *g, const struct gpu_res *r, const struct rect *d)
{
    const uint8_t *src = r->pix + ((size_t)d->y * r->width + d->x) * 4;
    vmm__screen_draw(g->screen, d->x - g->scanout.x, d->y - g->scanout.y, d->width, d->height, src,
                     (size_t)r->width * 4, r->format);
}

static uint32_t cmd_set_scanout(struct vmm_gpu *g, const struct req_set_scanout *c)
{
    if (c->scanout_id != 0)
        return RESP_ERR_INVALID_SCANOUT_ID;
    if (!c->resource_id || !c->r.width || !c->r.height) { /* disable, as QEMU also does for an empty rectangle */
        disable_scanout(g);
        return RESP_OK_NODATA;
    }
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (!vmm__gpu_rect_inside(&c->r, r->width, r->height))
        return RESP_ERR_INVALID_PARAMETER;
    if (vmm__screen_set_mode(g->screen, c->r.width, c->r.height))
        return RESP_ERR_OUT_OF_MEMORY;
    g->scanout_res = r->id;
    g->scanout = c->r;
    present(g, r, &c->r); /* the resource's current content shows at once; a flush makes it a frame */
    return RESP_OK_NODATA;
}

/* Before a transfer writes rect of r: the screen must no longer read those pixels. */
static void make_writable(struct vmm_gpu *g, struct gpu_res *r, const struct rect *rc)
{
    uint8_t *lo = r->pix + ((size_t)rc->y * r->width + rc->x) * 4;
    uint8_t *hi = r->pix + ((size_t)(rc->y + rc->height - 1) * r->width + rc->x + rc->width) * 4;

    if (!vmm__screen_reads(g->screen, lo, hi))
        return;
    /* a full transfer replaces every pixel: write into the spare and leave the screen the old ones */
    if (rc->x == 0 && rc->y == 0 && rc->width == r->width && rc->height == r->height) {
        if (!r->spare && vmm__budget_take(&g->mem, res_bytes(r)) && !(r->spare = malloc(res_bytes(r))))
            vmm__budget_give(&g->mem, res_bytes(r));
        if (r->spare) {
            uint8_t *t = r->pix;
            r->pix = r->spare;
            r->spare = t;
            return;
        }
    }
    vmm__screen_settle(g->screen, lo, hi);
}

static uint32_t cmd_transfer(struct vmm_gpu *g, const struct req_transfer *c)
{
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (!vmm__gpu_rect_inside(&c->r, r->width, r->height))
        return RESP_ERR_INVALID_PARAMETER;
    if (!r->backed)
        return RESP_ERR_UNSPEC;
    if (!c->r.width || !c->r.height)
        return RESP_OK_NODATA;
    /* row k is read from offset + k * stride, width * 4 bytes: all of it must lie in the backing */
    uint64_t stride = (uint64_t)r->width * 4, row = (uint64_t)c->r.width * 4;
    uint64_t span = stride * (c->r.height - 1) + row; /* < 2^31 */
    if (c->offset > r->backing_len || span > r->backing_len - c->offset)
        return RESP_ERR_INVALID_PARAMETER;
    make_writable(g, r, &c->r);
    if (c->r.width == r->width) { /* whole rows: one span on both sides, one memcpy per backing entry */
        if (!backing_read(g, r, c->offset, r->pix + (size_t)c->r.y * stride, span))
            return RESP_ERR_UNSPEC;
        return RESP_OK_NODATA;
    }
    const uint8_t *src = backing_span(g, r, c->offset, span); /* one entry holds every row: no lookups */
    for (uint32_t k = 0; k < c->r.height; k++) {
        uint8_t *dst = r->pix + (size_t)(c->r.y + k) * stride + (size_t)c->r.x * 4;
        if (src)
            memcpy(dst, src + k * stride, row);
        else if (!backing_read(g, r, c->offset + k * stride, dst, row))
            return RESP_ERR_UNSPEC;
    }
    return RESP_OK_NODATA;
}

static uint32_t cmd_flush(struct vmm_gpu *g, const struct req_flush *c)
{
    struct gpu_res *r = vmm__gpu_res_find(g, c->resource_id);
    if (!r)
        return RESP_ERR_INVALID_RESOURCE_ID;
    if (!vmm__gpu_rect_inside(&c->r, r->width, r->height))
        return RESP_ERR_INVALID_PARAMETER;
    if (g->scanout_res != r->id)
        return RESP_OK_NODATA;
    /* the part of the flushed rectangle that scanout 0 shows */
    const struct rect *s = &g->scanout;
    uint32_t x0 = c->r.x > s->x ? c->r.x : s->x, y0 = c->r.y > s->y ? c->r.y : s->y;
    uint32_t x1 = c->r.x + c->r.width < s->x + s->width ? c->r.x + c->r.width : s->x + s->width;
    uint32_t y1 = c->r.y + c->r.height < s->y + s->height ? c->r.y + c->r.height : s->y + s->height;
    if (x0 >= x1 || y0 >= y1)
        return RESP_OK_NODATA;
    const uint8_t *src = r->pix + ((size_t)y0 * r->width + x0) * 4;
    vmm__screen_flush(g->screen, x0 - s->x, y0 - s->y, x1 - x0, y1 - y0, src, (size_t)r->width * 4, r->format);
    return RESP_OK_NODATA;
}

static uint32_t cmd_cursor(struct vmm_gpu *g, uint32_t type, const struct req_cursor *c)
{
    if (c->scanout_id != 0)
        return RESP_ERR_INVALID_SCANOUT_ID;
    if (type == CMD_UPDATE_CURSOR) {
        if (c->resource_id && !vmm__gpu_res_find(g, c->resource_id))
            return RESP_ERR_INVALID_RESOURCE_ID;
        g->cursor.resource_id = c->resource_id;
        g->cursor.hot_x = c->hot_x;
        g->cursor.hot_y = c->hot_y;
    }
    g->cursor.scanout_id = c->scanout_id;
    g->cursor.x = c->x;
    g->cursor.y = c->y;
    return RESP_OK_NODATA;
}

/* ---- EDID 1.4 base block for the configured mode (VESA E-EDID A2) ---- */

static void make_edid(uint8_t e[128], uint32_t w, uint32_t h)
{
    static const uint8_t header[8] = { 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00 };
    /* sRGB primaries and D65 white point, 10-bit fractions: Rx Ry Gx Gy Bx By Wx Wy */
    static const uint16_t chroma[8] = { 655, 338, 307, 614, 154, 61, 320, 337 };
    const uint32_t hblank = 160, hfp = 48, hsync = 32, vblank = 30, vfp = 3, vsync = 6;
    uint32_t wmm = w * 254 / 960, hmm = h * 254 / 960;                          /* 96 dpi */
    uint64_t clk = ((uint64_t)(w + hblank) * (h + vblank) * 60 + 9999) / 10000; /* 60 Hz, in 10 kHz */

    if (clk > 0xffff)
        clk = 0xffff; /* very large modes: a lower refresh rate */
    memset(e, 0, 128);
    memcpy(e, header, 8);
    e[8] = 0x59; /* manufacturer "VMM": 5-bit letters, big-endian */
    e[9] = 0xad;
    e[10] = 0x01; /* product code 1 */
    e[16] = 1;    /* week 1 of */
    e[17] = 34;   /* 2024 */
    e[18] = 1;    /* EDID 1.4 */
    e[19] = 4;
    e[20] = 0xa0;                                                        /* digital input, 8 bits per colour */
    e[21] = (uint8_t)(wmm / 10 ? (wmm / 10 > 255 ? 255 : wmm / 10) : 1); /* screen size in cm */
    e[22] = (uint8_t)(hmm / 10 ? (hmm / 10 > 255 ? 255 : hmm / 10) : 1);
    e[23] = 120;  /* gamma 2.2 */
    e[24] = 0x06; /* sRGB default colour space, preferred timing is native */
    e[25] = (uint8_t)((chroma[0] & 3) << 6 | (chroma[1] & 3) << 4 | (chroma[2] & 3) << 2 | (chroma[3] & 3));
    e[26] = (uint8_t)((chroma[4] & 3) << 6 | (chroma[5] & 3) << 4 | (chroma[6] & 3) << 2 | (chroma[7] & 3));
    for (int i = 0; i < 8; i++)
        e[27 + i] = (uint8_t)(chroma[i] >> 2);
    for (int i = 38; i < 54; i++) /* no standard timings */
        e[i] = 0x01;
    /* descriptor 1: the preferred detailed timing */
    uint8_t *d = e + 54;
    d[0] = (uint8_t)clk;
    d[1] = (uint8_t)(clk >> 8);
    d[2] = (uint8_t)w;
    d[3] = (uint8_t)hblank;
    d[4] = (uint8_t)((w >> 8) << 4 | hblank >> 8);
    d[5] = (uint8_t)h;
    d[6] = (uint8_t)vblank;
    d[7] = (uint8_t)((h >> 8) << 4 | vblank >> 8);
    d[8] = (uint8_t)hfp;
    d[9] = (uint8_t)hsync;
    d[10] = (uint8_t)((vfp & 15) << 4 | (vsync & 15));
    d[11] = (uint8_t)((hfp >> 8) << 6 | (hsync >> 8) << 4 | (vfp >> 4) << 2 | vsync >> 4);
    d[12] = (uint8_t)wmm;
    d[13] = (uint8_t)hmm;
    d[14] = (uint8_t)(((wmm >> 8) & 15) << 4 | ((hmm >> 8) & 15));
    d[17] = 0x1e; /* digital separate sync, both polarities positive */
    /* descriptor 2: monitor name; 3: range limits; 4: dummy */
    static const uint8_t name[18] = {
        0, 0, 0, 0xfc, 0, 'v', 'm', 'm', 'p', 'y', '\n', ' ', ' ', ' ', ' ', ' ', ' ', ' '
    };
    memcpy(e + 72, name, 18);
    d = e + 90;
    d[3] = 0xfd;
    d[5] = 1; /* vertical 1-120 Hz */
    d[6] = 120;
    d[7] = 1; /* horizontal 1-255 kHz */
    d[8] = 255;
    d[9] = 66;    /* max pixel clock in 10 MHz units */
    d[10] = 0x01; /* range limits only */
    d[11] = 0x0a;
    memset(d + 12, ' ', 6);
    e[108 + 3] = 0x10;
    uint8_t sum = 0;
    for (int i = 0; i < 127; i++)
        sum = (uint8_t)(sum + e[i]);
    e[127] = (uint8_t)(0x100 - sum);
}

/* ---- request dispatch ---- */

/* Request sizes past the header; 0 for commands we refuse outright. */
static size_t req_size(uint32_t type)
{
    switch (type) {
    case CMD_GET_DISPLAY_INFO:
        return 0;
    case CMD_RESOURCE_CREATE_2D:
        return sizeof(struct req_create_2d);
    case CMD_RESOURCE_UNREF:
    case CMD_RESOURCE_DETACH_BACKING:
        return sizeof(struct req_resource);
    case CMD_SET_SCANOUT:
        return sizeof(struct req_set_scanout);
    case CMD_RESOURCE_FLUSH:
        return sizeof(struct req_flush);
    case CMD_TRANSFER_TO_HOST_2D:
        return sizeof(struct req_transfer);
    case CMD_RESOURCE_ATTACH_BACKING:
        return sizeof(struct req_attach_backing);
    case CMD_GET_EDID:
        return sizeof(struct req_get_edid);
    case CMD_UPDATE_CURSOR:
        return sizeof(struct req_cursor);
    case CMD_MOVE_CURSOR:
        return sizeof(struct req_cursor);
    default:
        return 0;
    }
}

static const char *type_ok(uint32_t type, unsigned q)
{
    bool cursor = type == CMD_UPDATE_CURSOR || type == CMD_MOVE_CURSOR;
    if (cursor != (q == CURSORQ))
        return cursor ? "cursor command on the control queue" : "control command on the cursor queue";
    return NULL;
}

/*
 * Serve g->chain (popped from queue q): returns the bytes written into its
 * writable part. Called with g->lock held.
 */
static uint32_t serve(struct vmm_gpu *g, unsigned q)
{
    const struct virtq_chain *c = &g->chain;
    struct ctrl_hdr hdr = { 0 };
    union {
        struct ctrl_hdr hdr;
        struct resp_display_info info;
        struct resp_edid edid;
    } resp;
    union {
        struct req_create_2d create;
        struct req_resource res;
        struct req_set_scanout scanout;
        struct req_flush flush;
        struct req_transfer transfer;
        struct req_attach_backing attach;
        struct req_get_edid edid;
        struct req_cursor cursor;
    } req = { 0 };
    size_t resp_len = sizeof(struct ctrl_hdr);
    uint32_t type;
    const char *why;

    memset(&resp, 0, sizeof resp);
    if (vmm__virtq_read(c, 0, &hdr, sizeof hdr) < sizeof hdr) {
        vmm__guest_error(g->vm, "gpu", "request of %" PRIu64 " bytes is shorter than its header", c->read_len);
        type = RESP_ERR_UNSPEC;
        goto respond;
    }
    size_t need = req_size(hdr.type);
    if ((why = type_ok(hdr.type, q))) {
        vmm__guest_error(g->vm, "gpu", "%s (type 0x%x)", why, hdr.type);
        type = RESP_ERR_UNSPEC;
    } else if (c->read_len < sizeof hdr + need) {
        vmm__guest_error(g->vm, "gpu", "command 0x%x: %" PRIu64 " bytes, needs %zu", hdr.type, c->read_len,
                         sizeof hdr + need);
        type = RESP_ERR_UNSPEC;
    } else {
        vmm__virtq_read(c, sizeof hdr, &req, need);
        switch (hdr.type) {
        case CMD_GET_DISPLAY_INFO:
            resp.info.pmodes[0].r = (struct rect){ 0, 0, g->width, g->height };
            resp.info.pmodes[0].enabled = 1;
            resp_len = sizeof resp.info;
            type = RESP_OK_DISPLAY_INFO;
            break;
        case CMD_GET_EDID:
            if (!(vmm__virtio_features(g->vio) & (1ull << GPU_F_EDID))) {
                type = RESP_ERR_UNSPEC;
            } else if (req.edid.scanout != 0) {
                type = RESP_ERR_INVALID_SCANOUT_ID;
            } else {
                make_edid(resp.edid.edid, g->width, g->height);
                resp.edid.size = 128;
                resp_len = sizeof resp.edid;
                type = RESP_OK_EDID;
            }
            break;
        case CMD_RESOURCE_CREATE_2D:
            type = cmd_create_2d(g, &req.create);
            break;
        case CMD_RESOURCE_UNREF:
            type = cmd_unref(g, &req.res);
            break;
        case CMD_RESOURCE_ATTACH_BACKING:
            type = cmd_attach_backing(g, &req.attach, sizeof hdr + need);
            break;
        case CMD_RESOURCE_DETACH_BACKING:
            type = cmd_detach_backing(g, &req.res);
            break;
        case CMD_SET_SCANOUT:
            type = cmd_set_scanout(g, &req.scanout);
            break;
        case CMD_TRANSFER_TO_HOST_2D:
            type = cmd_transfer(g, &req.transfer);
            break;
        case CMD_RESOURCE_FLUSH:
            type = cmd_flush(g, &req.flush);
            break;
        case CMD_UPDATE_CURSOR:
        case CMD_MOVE_CURSOR:
            type = cmd_cursor(g, hdr.type, &req.cursor);
            break;
        default:
            /* 3D commands name a context, and none can exist without VIRGL */
            type = hdr.type > CMD_CTX_CREATE && hdr.type < 0x0300 ? RESP_ERR_INVALID_CONTEXT_ID : RESP_ERR_UNSPEC;
            break;
        }
        if (type >= RESP_ERR_UNSPEC)
            vmm__guest_error(g->vm, "gpu", "command 0x%x failed with 0x%x", hdr.type, type);
    }
respond:
    if (type >= RESP_ERR_UNSPEC)
        resp_len = sizeof(struct ctrl_hdr);
    if (c->write_len < resp_len) {
        if (q == CONTROLQ)
            vmm__guest_error(g->vm, "gpu", "command 0x%x: %" PRIu64 " bytes for a %zu-byte response", hdr.type,
                             c->write_len, resp_len);
        if (c->write_len < sizeof(struct ctrl_hdr))
            return 0; /* no room to say anything (normal on the cursor queue) */
        resp_len = sizeof(struct ctrl_hdr);
        type = RESP_ERR_UNSPEC;
    }
    resp.hdr.type = type;
    if (hdr.flags & FLAG_FENCE) { /* §5.7.6.7: commands complete in order, so the fence is done */
        resp.hdr.flags = FLAG_FENCE;
        resp.hdr.fence_id = hdr.fence_id;
        resp.hdr.ctx_id = hdr.ctx_id;
    }
    return (uint32_t)vmm__virtq_write(c, 0, &resp, resp_len);
}

/* ---- transport glue ---- */

static void gpu_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_gpu *g = dev;
    struct gpu_config cfg = { .num_scanouts = 1 };

    pthread_mutex_lock(&g->lock);
    cfg.events_read = g->events_read;
    pthread_mutex_unlock(&g->lock);
    memcpy(buf, (const uint8_t *)&cfg + off, len);
}

static void gpu_config_write(void *dev, uint32_t off, const void *buf, uint32_t len)
{
    struct vmm_gpu *g = dev;
    uint32_t v = 0;

    if (off != offsetof(struct gpu_config, events_clear) || len != 4) {
        vmm__guest_error(g->vm, "gpu", "write to read-only config bytes %u+%u", off, len);
        return;
    }
    memcpy(&v, buf, 4);
    pthread_mutex_lock(&g->lock);
    g->events_read &= ~v;
    pthread_mutex_unlock(&g->lock);
}

static void gpu_queue_notify(void *dev, unsigned q)
{
    struct vmm_gpu *g = dev;
    struct vmm_virtq *vq = vmm__virtio_queue(g->vio, q);
    bool pushed = false;

    if (!vq || q > CURSORQ)
        return;
    pthread_mutex_lock(&g->lock);
    while (vmm__virtq_pop(vq, &g->chain) == 1) {
        uint32_t written = serve(g, q);
        vmm__virtq_push(vq, &g->chain, written);
        pushed = true;
    }
    pthread_mutex_unlock(&g->lock);
    if (pushed)
        vmm__virtio_notify(g->vio, q);
}

static void gpu_reset(void *dev)
{
    struct vmm_gpu *g = dev;

    pthread_mutex_lock(&g->lock);
    vmm__gpu_reset_locked(g);
    pthread_mutex_unlock(&g->lock);
}

static const struct vmm_virtio_ops gpu_ops = {
    .name = "gpu",
    .device_id = VIRTIO_ID_GPU,
    .features = 1ull << GPU_F_EDID,
    .num_queues = 2,
    .queue_max = GPU_QUEUE_SIZE,
    .config_size = sizeof(struct gpu_config),
    .config_read = gpu_config_read,
    .config_write = gpu_config_write,
    .queue_notify = gpu_queue_notify,
    .reset = gpu_reset,
};

static void gpu_destroy(void *dev)
{
    struct vmm_gpu *g = dev;

    vmm__gpu_reset_locked(g);
    vmm__screen_destroy(g->screen);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* vmm_run started (or is about to) / ended: screen waiters see VMM_EEOF once it is false. */
static void gpu_set_running(void *dev, bool running)
{
    struct vmm_gpu *g = dev;
    vmm__screen_set_running(g->screen, running);
}

/* The guest's resources (counted against max_mem) and the frame store's images. */
static uint64_t gpu_host_mem(void *dev)
{
    struct vmm_gpu *g = dev;

    return sizeof *g + vmm__screen_size() + vmm__budget_used(&g->mem);
}

static const struct vmm_device_ops gpu_device = {
    .name = "virtio-gpu",
    .save = vmm__gpu_snap,
    .load = vmm__gpu_snap,
    .snap_version = 1,
    .set_running = gpu_set_running,
    .host_mem = gpu_host_mem,
    .destroy = gpu_destroy,
};

int vmm__dev_add_gpu(struct vmm_vm *vm, const struct vmm_gpu_config *cfg)
{
    struct vmm_gpu_config c = { .size = sizeof c };
    struct vmm_gpu *g;
    int rc;

    if (!vm || (cfg && (cfg->size < sizeof(uint32_t) || cfg->size > 4096)))
        return VMM_EINVAL;
    if (cfg)
        memcpy(&c, cfg, cfg->size < sizeof c ? cfg->size : sizeof c);
    if (!c.width && !c.height) {
        c.width = 1280;
        c.height = 800;
    }
    if (!c.max_mem)
        c.max_mem = 256ULL << 20;
    if (vmm__board_find(vm, &gpu_device, 0))
        return vmm__set_error(vm, VMM_ESTATE, "the VM already has a GPU (one screen per VM)");
    if (!c.width || !c.height || c.width > GPU_MAX_MODE_DIM || c.height > GPU_MAX_MODE_DIM)
        return vmm__set_error(vm, VMM_EINVAL, "GPU mode %ux%u: width and height must be 1..%u", c.width, c.height,
                              GPU_MAX_MODE_DIM);
    if (!(g = calloc(1, sizeof *g)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the GPU");
    g->vm = vm;
    g->width = c.width;
    g->height = c.height;
    vmm__budget_init(&g->mem, c.max_mem);
    pthread_mutex_init(&g->lock, NULL);
    if ((rc = vmm__screen_create(&g->screen, &g->mem))) {
        gpu_destroy(g);
        return vmm__set_error(vm, rc, "out of memory for the GPU");
    }
    if ((rc = vmm__virtio_add(vm, &gpu_ops, &gpu_device, g, &g->vio))) {
        gpu_destroy(g);
        return rc;
    }
    vmm__park_source(vm, vmm__screen_frames, g->screen); /* vmm_screen_pause_at() */
    return 0;
}

struct vmm_gpu *vmm__gpu_find(struct vmm_vm *vm)
{
    return vmm__board_find(vm, &gpu_device, 0);
}

struct vmm_screen *vmm__gpu_screen(struct vmm_gpu *g)
{
    return g->screen;
}
