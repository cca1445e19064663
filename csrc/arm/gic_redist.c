/* gic_redist.c - the GICv3 redistributors (IHI0069 §12.10-12.11): per vCPU an RD_base and an SGI_base frame. */
#include "../core/layout.h"
#include "gic_internal.h"

/* RD_base frame */
enum {
    GICR_CTLR = 0x0000,
    GICR_IIDR = 0x0004,
    GICR_TYPER = 0x0008, /* 64-bit */
    GICR_WAKER = 0x0014,
};
#define GICR_SGI_BASE 0x10000 /* the SGI_base frame follows RD_base */

#define GICR_TYPER_PLPIS (1u << 0)
#define GICR_TYPER_LAST (1u << 4)
#define GICR_PROPBASER 0x0070
#define GICR_PENDBASER 0x0078
#define GICR_WAKER_PROCESSOR_SLEEP (1u << 1)
#define GICR_WAKER_CHILDREN_ASLEEP (1u << 2)

#define BLOCK "redistributor"
#define GICR_PIDR0 0x93

/*
 * GICR_TYPER (§12.10.33): Affinity_Value = the vCPU's MPIDR affinity,
 * Processor_Number = its index, Last on the last redistributor. With an ITS
 * physical LPIs (PLPIS = 1; the ITS names redistributors by Processor_Number, its
 * GITS_TYPER.PTA = 0), no DirectLPI, no virtual LPIs, PPInum = 0 (16 PPIs).
 */
static uint64_t typer(const struct vmm_gic *g, unsigned c)
{
    return (uint64_t)g->cpu[c].aff << 32 | (uint64_t)c << 8 | (c == g->ncpus - 1 ? GICR_TYPER_LAST : 0) |
           (g->lpis ? GICR_TYPER_PLPIS : 0);
}

static unsigned widths(const struct vmm_gic *g, uint64_t frame_off)
{
    if (frame_off == GICR_TYPER || (g->lpis && (frame_off == GICR_PROPBASER || frame_off == GICR_PENDBASER)))
        return GIC_W32 | GIC_W64;
    if (frame_off >= GICR_SGI_BASE + GIC_IPRIORITYR && frame_off < GICR_SGI_BASE + GIC_IPRIORITYR + GIC_NR_PRIVATE)
        return GIC_W8 | GIC_W32;
    return GIC_W32;
}

/* The identification registers: constants, read without the lock. Whether off is one of them. */
static bool rd_read_fixed(const struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t *val)
{
    switch (off) {
    case GICR_IIDR:
        *val = GIC_IIDR;
        return true;
    case GICR_TYPER:
        *val = size == 8 ? typer(g, c) : (uint32_t)typer(g, c);
        return true;
    case GICR_TYPER + 4:
        *val = typer(g, c) >> 32;
        return true;
    default:
        if (off >= GIC_IDREGS && off < GIC_IDREGS_END) {
            *val = vmm__gic_id_reg(off, GICR_PIDR0);
            return true;
        }
        return false;
    }
}

static bool rd_read(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t *val)
{
    if (g->lpis && vmm__gic_lpi_reg_read(g, c, off, size, val)) /* CTLR, PROPBASER, PENDBASER */
        return true;
    switch (off) {
    case GICR_CTLR: /* without LPIs: EnableLPIs RAZ/WI, RWP 0 */
        return true;
    case GICR_WAKER: /* ChildrenAsleep follows ProcessorSleep at once */
        *val = g->cpu[c].sleep ? GICR_WAKER_PROCESSOR_SLEEP | GICR_WAKER_CHILDREN_ASLEEP : 0;
        return true;
    default:
        return rd_read_fixed(g, c, off, size, val);
    }
}

static bool rd_write(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t val)
{
    if (g->lpis && vmm__gic_lpi_reg_write(g, c, off, size, val)) /* CTLR, PROPBASER, PENDBASER */
        return true;
    switch (off) {
    case GICR_CTLR:
        return true;
    case GICR_WAKER: /* ProcessorSleep is state only: it does not gate delivery (as in QEMU) */
        g->cpu[c].sleep = val & GICR_WAKER_PROCESSOR_SLEEP;
        return true;
    default:
        return false;
    }
}

/* The SGI_base frame: SGIs and PPIs (§12.11). The extended-PPI registers (GICv3.1) are reserved: PPInum = 0. */
static bool sgi_read(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t *val)
{
    struct gic_cpu *cpu = &g->cpu[c];

    if (off >= GIC_IGROUPR && off < GIC_IPRIORITYR && !(off & 0x7f)) { /* IGROUPR0 .. ICACTIVER0 */
        *val = vmm__gic_bits_read(&cpu->priv, (unsigned)off);
        return true;
    }
    if (off >= GIC_IPRIORITYR && off < GIC_IPRIORITYR + GIC_NR_PRIVATE) {
        *val = vmm__gic_prio_read(&cpu->prio[off - GIC_IPRIORITYR], size);
        return true;
    }
    switch (off) {
    case GIC_ICFGR: /* SGIs: edge-triggered, RAO/WI */
    case GIC_ICFGR + 4:
        *val = vmm__gic_cfg_read(&cpu->priv, off == GIC_ICFGR ? 0 : 1);
        return true;
    case GIC_IGRPMODR: /* RAZ/WI with DS = 1 */
    case GIC_NSACR:
        return true;
    default:
        return false;
    }
}

static bool sgi_write(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t val)
{
    struct gic_cpu *cpu = &g->cpu[c];

    if (off >= GIC_IGROUPR && off < GIC_IPRIORITYR && !(off & 0x7f)) {
        vmm__gic_bits_write(&cpu->priv, (unsigned)off, (uint32_t)val);
    } else if (off >= GIC_IPRIORITYR && off < GIC_IPRIORITYR + GIC_NR_PRIVATE) {
        vmm__gic_prio_write(&cpu->prio[off - GIC_IPRIORITYR], size, (uint32_t)val);
    } else if (off == GIC_ICFGR + 4) { /* PPIs: configurable */
        vmm__gic_cfg_write(&cpu->priv, 1, (uint32_t)val, 0xffff0000u);
    } else if (off == GIC_ICFGR || off == GIC_IGRPMODR || off == GIC_NSACR) {
        return true;
    } else {
        return false;
    }
    g->dirty |= 1u << c;
    return true;
}

/* One region covers every redistributor: vCPU n's frames are at n * LAYOUT_GICR_STRIDE. */
static uint64_t gicr_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_gic *g = dev;
    unsigned c = (unsigned)(off / LAYOUT_GICR_STRIDE);
    uint64_t frame_off = off % LAYOUT_GICR_STRIDE, val = 0;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(g, frame_off), false))
        return 0;
    if (frame_off < GICR_SGI_BASE && rd_read_fixed(g, c, frame_off, size, &val))
        return val;
    vmm__gic_lock(g);
    if (frame_off < GICR_SGI_BASE)
        ok = rd_read(g, c, frame_off, size, &val);
    else
        ok = sgi_read(g, c, frame_off - GICR_SGI_BASE, size, &val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, false);
    return val;
}

static void gicr_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_gic *g = dev;
    unsigned c = (unsigned)(off / LAYOUT_GICR_STRIDE);
    uint64_t frame_off = off % LAYOUT_GICR_STRIDE;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(g, frame_off), true))
        return;
    vmm__gic_lock(g);
    if (frame_off < GICR_SGI_BASE)
        ok = rd_write(g, c, frame_off, size, val);
    else
        ok = sgi_write(g, c, frame_off - GICR_SGI_BASE, size, val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, true);
}

const struct vmm_mmio_ops vmm__gic_redist_ops = { .read = gicr_read, .write = gicr_write };
