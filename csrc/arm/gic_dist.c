/* gic_dist.c - the GICv3 distributor (IHI0069 §12.9): SPI state and routing, at LAYOUT_GICD_BASE. */
#include "gic_internal.h"

enum {
    GICD_CTLR = 0x0000,
    GICD_TYPER = 0x0004,
    GICD_IIDR = 0x0008,
    GICD_TYPER2 = 0x000c,
    GICD_ITARGETSR = 0x0800,
    GICD_SGIR = 0x0f00,
    GICD_CPENDSGIR = 0x0f10,
    GICD_SPENDSGIR = 0x0f20,
    GICD_IROUTER = 0x6000, /* + 8n, n = 32..1019 */
    GICD_IROUTER_END = 0x7fe0,
};

#define BLOCK "distributor"
#define GICD_PIDR0 0x92

/*
 * GICD_TYPER (§12.9.38): ITLinesNumber = 3 (INTIDs 0-127), CPUNumber, with
 * an ITS LPIS = 1 with IDbits = 15 (16-bit INTIDs: LPIs 8192-65535) and num_LPIs = 0
 * (IDbits bounds them). SecurityExtn, MBIS, A3V, RSS are 0; No1N = 0: 1-of-N
 * SPI routing is supported.
 */
#define GICD_TYPER_LPIS (1u << 17)

static uint32_t typer(const struct vmm_gic *g)
{
    uint32_t t = (GIC_NR_IRQS / 32 - 1) | ((g->ncpus - 1) & 7) << 5;

    if (!g->lpis) /* no ITS (vmm_config.its = 0): IDbits = 9, 10-bit INTIDs, LPIS = 0 */
        return t | 9u << 19;
    return t | GICD_TYPER_LPIS | (GIC_LPI_IDBITS - 1u) << 19;
}

/* IPRIORITYR and ITARGETSR are byte-accessible, IROUTER is 64-bit; the rest is 32-bit only (§12.1.3). */
static unsigned widths(uint64_t off)
{
    if (off >= GIC_IPRIORITYR && off < GIC_ICFGR)
        return GIC_W8 | GIC_W32;
    if (off >= GICD_IROUTER && off < GICD_IROUTER_END)
        return GIC_W32 | GIC_W64;
    return GIC_W32;
}

/* The SPI block of bitmap register word n (INTIDs 32n..32n+31), or NULL: n = 0 is RAZ/WI with ARE = 1. */
static struct gic_bits *spi_word(struct vmm_gic *g, unsigned n)
{
    return n >= 1 && n < GIC_NR_WORDS ? &g->spi[n - 1] : NULL;
}

/*
 * Registers of interrupts we do not implement (SGIs and PPIs, which live in
 * the redistributors with ARE = 1; INTIDs 128-1019) are RAZ/WI, as are the
 * registers DS = 1 and ARE = 1 disable. Returns false for offsets that are
 * reserved (and writes to read-only registers): the caller logs those.
 */
static bool dist_read(struct vmm_gic *g, uint64_t off, unsigned size, uint64_t *val)
{
    *val = 0;
    if (off >= GIC_IGROUPR && off < GIC_IPRIORITYR) { /* IGROUPR .. ICACTIVER */
        struct gic_bits *b = spi_word(g, (off & 0x7f) / 4);
        if (b)
            *val = vmm__gic_bits_read(b, off & ~0x7fu);
        return true;
    }
    if (off >= GIC_IPRIORITYR && off < GICD_ITARGETSR) {
        unsigned intid = (unsigned)(off - GIC_IPRIORITYR);
        if (intid >= GIC_NR_PRIVATE && intid < GIC_NR_IRQS)
            *val = vmm__gic_prio_read(&g->spi_prio[intid - GIC_NR_PRIVATE], size);
        return true;
    }
    if (off >= GICD_ITARGETSR && off < GIC_ICFGR) /* RAZ/WI with ARE = 1 */
        return true;
    if (off >= GIC_ICFGR && off < GIC_IGRPMODR) { /* ICFGR<n>: INTIDs 16n..16n+15 */
        struct gic_bits *b = spi_word(g, (unsigned)(off - GIC_ICFGR) / 8);
        if (b)
            *val = vmm__gic_cfg_read(b, (off / 4) & 1);
        return true;
    }
    if ((off >= GIC_IGRPMODR && off < GIC_IGRPMODR + 0x80) || (off >= GIC_NSACR && off < GIC_NSACR + 0x100))
        return true; /* RAZ/WI with DS = 1 */
    if (off == GICD_SGIR || (off >= GICD_CPENDSGIR && off < GICD_SPENDSGIR + 0x10))
        return true; /* RAZ/WI with ARE = 1 */
    if (off >= GICD_IROUTER + 8 * GIC_NR_PRIVATE && off < GICD_IROUTER_END) {
        unsigned intid = (unsigned)(off - GICD_IROUTER) / 8;
        uint64_t r = intid < GIC_NR_IRQS ? g->irouter[intid - GIC_NR_PRIVATE] : 0;
        *val = size == 8 ? r : (uint32_t)(r >> (off & 4 ? 32 : 0));
        return true;
    }
    if (off >= GIC_IDREGS && off < GIC_IDREGS_END) {
        *val = vmm__gic_id_reg(off, GICD_PIDR0);
        return true;
    }
    switch (off) {
    case GICD_CTLR: /* RWP (bit 31) is 0: our writes take effect at once */
        *val = g->ctlr | GICD_CTLR_ARE | GICD_CTLR_DS;
        return true;
    case GICD_TYPER:
        *val = typer(g);
        return true;
    case GICD_IIDR:
        *val = GIC_IIDR;
        return true;
    case GICD_TYPER2: /* GICv3.1: no vPE ID, no nASSGIcap */
        return true;
    default:
        return false;
    }
}

static bool dist_write(struct vmm_gic *g, uint64_t off, unsigned size, uint64_t val)
{
    if (off >= GIC_IGROUPR && off < GIC_IPRIORITYR) {
        struct gic_bits *b = spi_word(g, (off & 0x7f) / 4);
        if (b) {
            vmm__gic_bits_write(b, off & ~0x7fu, (uint32_t)val);
            vmm__gic_dirty_all(g); /* a group change can move a 1-of-N SPI */
        }
        return true;
    }
    if (off >= GIC_IPRIORITYR && off < GICD_ITARGETSR) {
        unsigned intid = (unsigned)(off - GIC_IPRIORITYR);
        if (intid >= GIC_NR_PRIVATE && intid < GIC_NR_IRQS) {
            vmm__gic_prio_write(&g->spi_prio[intid - GIC_NR_PRIVATE], size, (uint32_t)val);
            vmm__gic_dirty_all(g);
        }
        return true;
    }
    if (off >= GICD_ITARGETSR && off < GIC_ICFGR)
        return true;
    if (off >= GIC_ICFGR && off < GIC_IGRPMODR) {
        struct gic_bits *b = spi_word(g, (unsigned)(off - GIC_ICFGR) / 8);
        unsigned half = (off / 4) & 1;
        if (b) {
            vmm__gic_cfg_write(b, half, (uint32_t)val, 0xffffu << (16 * half));
            vmm__gic_dirty_all(g);
        }
        return true;
    }
    if ((off >= GIC_IGRPMODR && off < GIC_IGRPMODR + 0x80) || (off >= GIC_NSACR && off < GIC_NSACR + 0x100))
        return true;
    if (off == GICD_SGIR || (off >= GICD_CPENDSGIR && off < GICD_SPENDSGIR + 0x10))
        return true;
    if (off >= GICD_IROUTER + 8 * GIC_NR_PRIVATE && off < GICD_IROUTER_END) {
        unsigned intid = (unsigned)(off - GICD_IROUTER) / 8;
        uint64_t *r;
        if (intid >= GIC_NR_IRQS)
            return true;
        r = &g->irouter[intid - GIC_NR_PRIVATE];
        if (size == 4) { /* one half */
            unsigned shift = off & 4 ? 32 : 0;
            val = (*r & ~(0xffffffffull << shift)) | (val & 0xffffffffull) << shift;
        }
        *r = val & GICD_IROUTER_MASK;
        vmm__gic_dirty_all(g);
        return true;
    }
    if (off == GICD_CTLR) {
        g->ctlr = (uint32_t)val & (GICD_CTLR_EN_GRP0 | GICD_CTLR_EN_GRP1);
        vmm__gic_dirty_all(g);
        return true;
    }
    return false; /* TYPER, IIDR, TYPER2, ID registers (read-only) and reserved offsets */
}

static uint64_t gicd_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_gic *g = dev;
    uint64_t val;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(off), false))
        return 0;
    /* the identification registers are constants: read without the lock */
    if (off == GICD_TYPER || off == GICD_IIDR || off == GICD_TYPER2 || (off >= GIC_IDREGS && off < GIC_IDREGS_END)) {
        dist_read(g, off, size, &val);
        return val;
    }
    vmm__gic_lock(g);
    ok = dist_read(g, off, size, &val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, false);
    return val;
}

static void gicd_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_gic *g = dev;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(off), true))
        return;
    vmm__gic_lock(g);
    ok = dist_write(g, off, size, val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, true);
}

const struct vmm_mmio_ops vmm__gic_dist_ops = { .read = gicd_read, .write = gicd_write };
