/* gic_lpi.c - the redistributors' LPI side (IHI0069 §5.1): GICR_PROPBASER/PENDBASER, EnableLPIs, LPI state. */
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "gic_internal.h"

enum {
    GICR_CTLR = 0x0000,
    GICR_PROPBASER = 0x0070, /* 64-bit */
    GICR_PENDBASER = 0x0078, /* 64-bit */
};
#define GICR_CTLR_ENABLE_LPIS (1u << 0)

/* GICR_PROPBASER (IHI0069 §12, "GICR_PROPBASER"): IDbits [4:0], InnerCache [9:7], Shareability [11:10], PA [51:12],
 * OuterCache [58:56] */
#define PROPBASER_MASK 0x070fffffffffff9full
#define PROPBASER_IDBITS(v) ((unsigned)((v)&0x1f))
#define PROPBASER_PA(v) ((v)&0x000ffffffffff000ull)
/* GICR_PENDBASER (IHI0069 §12, "GICR_PENDBASER"): InnerCache, Shareability, PA [51:16], OuterCache, PTZ [62]
 * (write-only: reads 0) */
#define PENDBASER_MASK 0x070fffffffff0f80ull
#define PENDBASER_PTZ (1ull << 62)
#define PENDBASER_PA(v) ((v)&0x000fffffffff0000ull)
/* the pending table's first 1 KiB covers INTIDs 0..8191: IMPLEMENTATION DEFINED, unused here */
#define PEND_LPI_OFFSET (GIC_LPI_BASE / 8)

/* An LPI configuration byte (§5.1.1): priority [7:2] (our 5 bits: [7:3]), Enable [0]. */
#define CFG_ENABLE 1u

static struct gic_lpi *lpi_of(struct vmm_gic *g, unsigned c)
{
    return &g->cpu[c].lpi;
}

/* How many LPIs PROPBASER.IDbits gives: below 14 bits, none; at most up to GIC_LPI_MAX. */
static unsigned lpi_count(uint64_t propbaser)
{
    unsigned bits = PROPBASER_IDBITS(propbaser) + 1;

    if (bits < 14)
        return 0;
    if (bits > GIC_LPI_IDBITS)
        bits = GIC_LPI_IDBITS;
    return (1u << bits) - GIC_LPI_BASE;
}

bool vmm__gic_lpi_in_range(const struct vmm_gic *g, unsigned c, unsigned intid)
{
    const struct gic_lpi *l = &g->cpu[c].lpi;
    return l->enabled && intid >= GIC_LPI_BASE && intid - GIC_LPI_BASE < l->nr;
}

/* Copy `len` bytes of guest RAM at gpa, or report that the range is not all RAM. */
static bool ram_read(struct vmm_gic *g, uint64_t gpa, void *buf, size_t len)
{
    const void *p = vmm__gpa_ptr(g->vm, gpa, len);

    if (!p)
        return false;
    memcpy(buf, p, len);
    return true;
}

static void mark(struct vmm_gic *g, unsigned c)
{
    lpi_of(g, c)->best_stale = true;
    g->dirty |= 1u << c;
}

void vmm__gic_lpi_invalidate(struct vmm_gic *g, unsigned c, unsigned intid)
{
    struct gic_lpi *l = lpi_of(g, c);
    uint64_t table = PROPBASER_PA(l->propbaser);

    if (!l->enabled || !l->nr) /* no LPIs in range (PROPBASER.IDbits < 13): no table to read */
        return;
    if (intid) { /* one LPI */
        if (!vmm__gic_lpi_in_range(g, c, intid))
            return;
        if (!ram_read(g, table + (intid - GIC_LPI_BASE), &l->cfg[intid - GIC_LPI_BASE], 1))
            l->cfg[intid - GIC_LPI_BASE] = 0;
    } else if (!ram_read(g, table, l->cfg, l->nr)) {
        memset(l->cfg, 0, l->nr);
        vmm__guest_error(g->vm, "gic",
                         "redistributor %u: LPI configuration table 0x%llx+0x%x is not in RAM: "
                         "every LPI disabled",
                         c, (unsigned long long)table, l->nr);
    }
    mark(g, c);
}

/* Load the pending table (unless PTZ says it is zero) into our bitmap. */
static void load_pending(struct vmm_gic *g, unsigned c, bool ptz)
{
    struct gic_lpi *l = lpi_of(g, c);
    uint64_t table = PENDBASER_PA(l->pendbaser) + PEND_LPI_OFFSET;
    uint8_t *bytes = (uint8_t *)l->pend;

    memset(l->pend, 0, GIC_NR_LPI / 8);
    l->npend = 0;
    if (ptz || !l->nr)
        return;
    if (!ram_read(g, table, bytes, l->nr / 8)) {
        vmm__guest_error(g->vm, "gic", "redistributor %u: LPI pending table 0x%llx is not in RAM: read as zero", c,
                         (unsigned long long)PENDBASER_PA(l->pendbaser));
        memset(l->pend, 0, GIC_NR_LPI / 8);
        return;
    }
    /* bytes in memory are little-endian bit order: bit n of byte k is INTID 8k+n, as in our words on any host */
    for (unsigned w = 0; w < l->nr / 32; w++) {
        const uint8_t *b = bytes + 4 * w;
        l->pend[w] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        l->npend += (unsigned)__builtin_popcount(l->pend[w]);
    }
}

/* Write our pending bits back to the pending table (EnableLPIs 1 -> 0), so the guest sees them there. */
static void store_pending(struct vmm_gic *g, unsigned c)
{
    struct gic_lpi *l = lpi_of(g, c);
    uint8_t *p = vmm__gpa_ptr(g->vm, PENDBASER_PA(l->pendbaser) + PEND_LPI_OFFSET, l->nr / 8);

    if (!p)
        return;
    for (unsigned w = 0; w < l->nr / 32; w++)
        for (unsigned i = 0; i < 4; i++)
            p[4 * w + i] = (uint8_t)(l->pend[w] >> (8 * i));
}

static bool enable(struct vmm_gic *g, unsigned c, bool ptz)
{
    struct gic_lpi *l = lpi_of(g, c);

    if (!l->cfg) { /* 64 KiB per redistributor, once: only guests that enable LPIs pay it */
        l->cfg = calloc(1, GIC_NR_LPI);
        l->pend = calloc(1, GIC_NR_LPI / 8);
        if (!l->cfg || !l->pend) {
            free(l->cfg);
            free(l->pend);
            l->cfg = NULL;
            l->pend = NULL;
            vmm__log(g->vm, VMM_LOG_ERROR, "gic", "out of memory for redistributor %u's LPIs: they stay off", c);
            return false;
        }
    }
    l->nr = lpi_count(l->propbaser);
    l->enabled = true;
    load_pending(g, c, ptz);
    vmm__gic_lpi_invalidate(g, c, 0);
    return true;
}

static void disable(struct vmm_gic *g, unsigned c)
{
    struct gic_lpi *l = lpi_of(g, c);

    store_pending(g, c);
    l->enabled = false;
    l->npend = 0;
    mark(g, c);
}

bool vmm__gic_lpi_reg_read(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t *val)
{
    struct gic_lpi *l = lpi_of(g, c);
    uint64_t r;

    switch (off & ~4ull) {
    case GICR_CTLR: /* UWP, DPG*, RWP: 0 (our writes take effect at once) */
        *val = l->enabled ? GICR_CTLR_ENABLE_LPIS : 0;
        return off == GICR_CTLR;
    case GICR_PROPBASER:
        r = l->propbaser;
        break;
    case GICR_PENDBASER:
        r = l->pendbaser & ~PENDBASER_PTZ;
        break;
    default:
        return false;
    }
    *val = size == 8 ? r : (uint32_t)(r >> (off & 4 ? 32 : 0));
    return true;
}

/* A 32-bit write updates one half of a 64-bit register. */
static uint64_t merge(uint64_t old, uint64_t off, unsigned size, uint64_t val)
{
    unsigned shift = off & 4 ? 32 : 0;

    if (size == 8)
        return val;
    return (old & ~(0xffffffffull << shift)) | (val & 0xffffffffull) << shift;
}

bool vmm__gic_lpi_reg_write(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t val)
{
    struct gic_lpi *l = lpi_of(g, c);
    uint64_t base = off & ~4ull;

    if (off == GICR_CTLR) {
        bool on = val & GICR_CTLR_ENABLE_LPIS;
        if (on && !l->enabled)
            enable(g, c, l->pendbaser & PENDBASER_PTZ);
        else if (!on && l->enabled)
            disable(g, c);
        l->pendbaser &= ~PENDBASER_PTZ;
        return true;
    }
    if (base != GICR_PROPBASER && base != GICR_PENDBASER)
        return false;
    if (l->enabled) { /* UNPREDICTABLE while EnableLPIs = 1: ignored */
        vmm__guest_error(g->vm, "gic", "redistributor %u: GICR_%s written with EnableLPIs set: ignored", c,
                         base == GICR_PROPBASER ? "PROPBASER" : "PENDBASER");
        return true;
    }
    if (base == GICR_PROPBASER)
        l->propbaser = merge(l->propbaser, off, size, val) & PROPBASER_MASK;
    else /* PTZ is remembered until the next EnableLPIs write, and reads 0 */
        l->pendbaser = merge(l->pendbaser, off, size, val) & (PENDBASER_MASK | PENDBASER_PTZ);
    return true;
}

/* ---- pending state and the highest priority pending LPI ------------------- */

void vmm__gic_lpi_set_pending(struct vmm_gic *g, unsigned c, unsigned intid, bool pending)
{
    struct gic_lpi *l = lpi_of(g, c);
    unsigned i = intid - GIC_LPI_BASE;
    uint32_t bit = 1u << (i % 32);

    if (!vmm__gic_lpi_in_range(g, c, intid) || !(l->pend[i / 32] & bit) == !pending)
        return;
    if (pending) {
        uint8_t prio = l->cfg[i] & GIC_PRIO_MASK;
        l->pend[i / 32] |= bit;
        l->npend++;
        /* cheap update of the cached HPPI: a new candidate only competes with it */
        if (!l->best_stale && (l->cfg[i] & CFG_ENABLE) &&
            (l->best == GIC_SPURIOUS || prio < l->best_prio || (prio == l->best_prio && intid < l->best))) {
            l->best = intid;
            l->best_prio = prio;
        }
        g->dirty |= 1u << c;
    } else {
        l->pend[i / 32] &= ~bit;
        l->npend--;
        if (l->best == intid)
            l->best_stale = true;
        g->dirty |= 1u << c;
    }
}

bool vmm__gic_lpi_pending(const struct vmm_gic *g, unsigned c, unsigned intid)
{
    const struct gic_lpi *l = &g->cpu[c].lpi;
    unsigned i = intid - GIC_LPI_BASE;

    return vmm__gic_lpi_in_range(g, c, intid) && (l->pend[i / 32] >> (i % 32) & 1);
}

void vmm__gic_lpi_move_all(struct vmm_gic *g, unsigned from, unsigned to)
{
    struct gic_lpi *l = lpi_of(g, from), *t = lpi_of(g, to);

    if (from == to || !l->enabled || !l->npend)
        return;
    /*
     * A word at a time: a guest can have all 57,344 LPIs pending and queue hundreds of MOVALLs per
     * batch (gic_its.c ITS_BATCH), so a bit at a time would hold the GIC lock for millions of steps.
     * What `to` cannot take (its LPIs off, or beyond its PROPBASER.IDbits) is dropped, as one
     * vmm__gic_lpi_set_pending would drop it.
     */
    unsigned tw = t->enabled ? t->nr / 32 : 0;
    for (unsigned w = 0; w < l->nr / 32; w++) {
        uint32_t bits = l->pend[w];
        if (!bits)
            continue;
        l->pend[w] = 0;
        l->npend -= (unsigned)__builtin_popcount(bits);
        if (w < tw) {
            t->npend += (unsigned)__builtin_popcount(bits & ~t->pend[w]);
            t->pend[w] |= bits;
        }
    }
    l->best_stale = t->best_stale = true; /* both rescan once (rescan below) */
    g->dirty |= 1u << from | 1u << to;
}

/* The full scan (at most GIC_NR_LPI / 32 words), only when the cached answer went stale. */
static void rescan(struct gic_lpi *l)
{
    unsigned best = GIC_SPURIOUS, best_prio = GIC_IDLE_PRIO + 1;

    for (unsigned w = 0; w < l->nr / 32 && l->npend; w++)
        for (uint32_t bits = l->pend[w]; bits; bits &= bits - 1) {
            unsigned i = 32 * w + (unsigned)__builtin_ctz(bits);
            unsigned prio = l->cfg[i] & GIC_PRIO_MASK;
            if ((l->cfg[i] & CFG_ENABLE) && prio < best_prio) {
                best = GIC_LPI_BASE + i;
                best_prio = prio;
            }
        }
    l->best = best;
    l->best_prio = best == GIC_SPURIOUS ? GIC_IDLE_PRIO : (uint8_t)best_prio;
    l->best_stale = false;
}

unsigned vmm__gic_lpi_hppi(struct vmm_gic *g, unsigned c, uint8_t *prio)
{
    struct gic_lpi *l = lpi_of(g, c);

    if (!l->enabled || !l->npend) {
        *prio = GIC_IDLE_PRIO;
        return GIC_SPURIOUS;
    }
    if (l->best_stale)
        rescan(l);
    *prio = l->best_prio;
    return l->best;
}

void vmm__gic_lpi_free(struct vmm_gic *g)
{
    for (unsigned c = 0; c < g->ncpus; c++) {
        free(g->cpu[c].lpi.cfg);
        free(g->cpu[c].lpi.pend);
    }
}

/* ---- snapshots -------------------------------------------------------------- */

/*
 * Per redistributor: the two base registers, EnableLPIs and, when enabled, the pending bits. The
 * configuration cache is re-read from the (restored) table: the cache may be refreshed at any time.
 */
void vmm__gic_lpi_snap(struct vmm_gic *g, struct vmm_snap *s)
{
    for (unsigned c = 0; c < g->ncpus && !vmm__snap_error(s); c++) {
        struct gic_lpi *l = lpi_of(g, c);
        bool on = l->enabled;
        vmm__snap_u64(s, &l->propbaser);
        vmm__snap_u64(s, &l->pendbaser);
        vmm__snap_bool(s, &on);
        if (!vmm__snap_loading(s)) {
            if (on)
                vmm__snap_bytes(s, l->pend, l->nr / 8);
            continue;
        }
        if (vmm__snap_error(s))
            return;
        if ((l->propbaser & ~PROPBASER_MASK) || (l->pendbaser & ~PENDBASER_MASK)) {
            vmm__snap_fail(s, "redistributor %u: GICR_PROPBASER/PENDBASER have reserved bits", c);
            return;
        }
        if (on && enable(g, c, true)) /* a fresh VM: LPIs off until here */
            vmm__snap_bytes(s, l->pend, l->nr / 8);
        else if (on)
            vmm__snap_fail_code(s, VMM_ENOMEM, "redistributor %u: no memory for its LPIs", c);
        l->npend = 0;
        for (unsigned w = 0; on && w < l->nr / 32; w++)
            l->npend += (unsigned)__builtin_popcount(l->pend[w]); /* enable() marked the cached HPPI stale */
    }
}
