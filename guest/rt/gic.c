/* gic.c - GICv3: distributor, per-CPU redistributor and system-register CPU interface, IRQ dispatch. */
#include "rt.h"

#define SPINS 1000000 /* register polls before giving up on RWP or ChildrenAsleep */
#define GICR_TYPER_LAST (1u << 4)
#define GICR_MAX_FRAMES 64 /* a bound on the redistributor walk if no frame says Last */
#define ICC_SRE_SRE (1u << 0)
#define ICC_SRE_DFB (1u << 1)
#define ICC_SRE_DIB (1u << 2)
#define SGI1R_IRM (1UL << 40)

static struct {
    irq_fn fn;
    void *arg;
} handlers[GIC_MAX_INTID];
static unsigned nr_intids = 32;
static irq_fn lpi_fn; /* every LPI (INTID >= 8192) goes to one handler */
static void *lpi_arg;

void gic_set_lpi_handler(irq_fn fn, void *arg)
{
    lpi_fn = 0;
    dsb(ish);
    lpi_arg = arg;
    dsb(ish);
    lpi_fn = fn;
    dsb(ish);
}

/* The frame holding intid's bits: the caller's SGI_base frame below 32, the distributor from 32. Both
   use the same offsets (GICR_ISENABLER0 == GICD_ISENABLER + 0, ...). */
static uintptr_t frame(unsigned intid)
{
    return intid < 32 ? this_cpu()->gicr + GICR_SGI_OFFSET : GICD_BASE;
}

static int wait_clear(uintptr_t reg, uint32_t bits)
{
    for (int i = 0; i < SPINS; i++)
        if (!(mmio_read32(reg) & bits))
            return 0;
    return -1;
}

/* register write pending: ICENABLER and GICD_CTLR changes take effect when RWP reads 0 */
static void wait_rwp(unsigned intid)
{
    int r = intid < 32 ? wait_clear(this_cpu()->gicr + GICR_CTLR, GICR_CTLR_RWP)
                       : wait_clear(GICD_BASE + GICD_CTLR, GICD_CTLR_RWP);
    if (r)
        printf("gic: RWP stays set (INTID %u)\n", intid);
}

/* one bit per INTID: set-/clear-style registers */
static void write_bit(unsigned reg, unsigned intid)
{
    mmio_write32(frame(intid) + reg + (intid / 32) * 4, 1u << (intid % 32));
}

static int read_bit(unsigned reg, unsigned intid)
{
    return (mmio_read32(frame(intid) + reg + (intid / 32) * 4) >> (intid % 32)) & 1;
}

/* ---- configuration ---- */

unsigned gic_num_intids(void)
{
    return nr_intids;
}

uintptr_t gic_rd_base(void)
{
    return this_cpu()->gicr;
}

void gic_set_handler(unsigned intid, irq_fn fn, void *arg)
{
    if (intid >= GIC_MAX_INTID)
        return;
    handlers[intid].fn = 0; /* never a new fn with the old arg */
    dsb(ish);
    handlers[intid].arg = arg;
    dsb(ish);
    handlers[intid].fn = fn;
    dsb(ish);
}

void gic_enable(unsigned intid)
{
    write_bit(GICD_ISENABLER, intid);
}

void gic_disable(unsigned intid)
{
    write_bit(GICD_ICENABLER, intid);
    wait_rwp(intid);
}

void gic_set_pending(unsigned intid)
{
    write_bit(GICD_ISPENDR, intid);
}

void gic_clear_pending(unsigned intid)
{
    write_bit(GICD_ICPENDR, intid);
}

int gic_is_pending(unsigned intid)
{
    return read_bit(GICD_ISPENDR, intid);
}

int gic_is_active(unsigned intid)
{
    return read_bit(GICD_ISACTIVER, intid);
}

void gic_clear_active(unsigned intid)
{
    write_bit(GICD_ICACTIVER, intid);
}

/* IPRIORITYR is byte-accessible; a 32-bit read-modify-write works on every model. Configure an INTID
   from one CPU at a time. */
void gic_set_priority(unsigned intid, uint8_t prio)
{
    uintptr_t reg = frame(intid) + GICD_IPRIORITYR + (intid & ~3u);
    unsigned shift = (intid & 3) * 8;

    mmio_write32(reg, (mmio_read32(reg) & ~(0xffu << shift)) | ((uint32_t)prio << shift));
}

/* ICFGR: two bits per INTID, the upper one set for edge-triggered */
void gic_set_edge(unsigned intid, int edge)
{
    uintptr_t reg = frame(intid) + GICD_ICFGR + (intid / 16) * 4;
    uint32_t bit = 2u << ((intid % 16) * 2);

    mmio_write32(reg, edge ? (mmio_read32(reg) | bit) : (mmio_read32(reg) & ~bit));
}

int gic_is_edge(unsigned intid)
{
    return (mmio_read32(frame(intid) + GICD_ICFGR + (intid / 16) * 4) >> ((intid % 16) * 2 + 1)) & 1;
}

/* GICD_IROUTER has the MPIDR affinity layout (Aff3 at [39:32], Aff2..0 at [23:0]); IRM 0 */
void gic_route(unsigned intid, uint64_t mpidr)
{
    if (intid >= 32)
        mmio_write64(GICD_BASE + GICD_IROUTER + 8UL * intid, mpidr & MPIDR_AFF_MASK);
}

/* ---- SGIs ---- */

/* ICC_SGI1R_EL1: Aff3 [55:48], RS [47:44], IRM [40], Aff2 [39:32], INTID [27:24], Aff1 [23:16],
   TargetList [15:0] (Aff0 = RS * 16 + bit) */
static void sgi1r(uint64_t value)
{
    dsb(ish); /* memory writes before the interrupt they announce */
    write_sysreg_s(ICC_SGI1R_EL1, value);
    isb();
}

void gic_send_sgi_list(unsigned intid, uint64_t aff321, uint16_t target_list)
{
    sgi1r(((aff321 >> 32) & 0xff) << 48 | ((aff321 >> 16) & 0xff) << 32 | ((aff321 >> 8) & 0xff) << 16 |
          (uint64_t)(intid & 0xf) << 24 | target_list);
}

void gic_send_sgi(unsigned intid, uint64_t mpidr)
{
    unsigned aff0 = mpidr & 0xff;

    sgi1r(((mpidr >> 32) & 0xff) << 48 | (uint64_t)(aff0 >> 4) << 44 | ((mpidr >> 16) & 0xff) << 32 |
          ((mpidr >> 8) & 0xff) << 16 | (uint64_t)(intid & 0xf) << 24 | (1u << (aff0 & 0xf)));
}

void gic_send_sgi_others(unsigned intid)
{
    sgi1r(SGI1R_IRM | (uint64_t)(intid & 0xf) << 24);
}

/* ---- dispatch ---- */

/* Acknowledge, handle, EOI (priority drop and deactivation: EOImode 0) until nothing is pending
   above the running priority. Handlers that unmask IRQs nest: the vectors saved ELR/SPSR. */
static int dispatch(struct exc_frame *f)
{
    struct cpu_data *c = this_cpu();

    (void)f;
    c->nesting++;
    for (unsigned n = 0;; n++) {
        uint64_t iar = read_sysreg_s(ICC_IAR1_EL1);
        unsigned intid = iar & 0xffffff;

        if (intid >= GIC_LPI_BASE) { /* an LPI: no active state, EOI drops the priority */
            irq_fn fn = lpi_fn;
            c->irqs++;
            if (fn) {
                fn(intid, lpi_arg);
            } else {
                c->unhandled++;
                printf("gic: cpu %u: no handler for LPI %u\n", c->id, intid);
            }
            irq_disable();
            write_sysreg_s(ICC_EOIR1_EL1, iar);
            isb();
            continue;
        }
        if (intid >= GIC_MAX_INTID) { /* 1023: nothing (more) to take */
            if (n == 0)
                c->spurious++;
            break;
        }
        c->irqs++;
        irq_fn fn = handlers[intid].fn;
        if (fn) {
            fn(intid, handlers[intid].arg);
        } else { /* disable it: a level-sensitive source would fire forever */
            c->unhandled++;
            gic_disable(intid);
            printf("gic: cpu %u: no handler for INTID %u, disabled it\n", c->id, intid);
        }
        irq_disable();
        write_sysreg_s(ICC_EOIR1_EL1, iar);
        isb();
    }
    c->nesting--;
    return 1;
}

/* ---- initialisation ---- */

int gic_cpu_init(void)
{
    struct cpu_data *c = this_cpu();
    uint64_t mpidr = read_sysreg(mpidr_el1) & MPIDR_AFF_MASK;
    uint32_t want = (uint32_t)((mpidr & 0xffffff) | ((mpidr >> 32) & 0xff) << 24); /* Aff3.Aff2.Aff1.Aff0 */
    uintptr_t rd = 0;

    c->id = smp_cpu_id();
    c->mpidr = mpidr;
    for (unsigned i = 0; i < GICR_MAX_FRAMES; i++) {
        uintptr_t fr = GICR_BASE + i * GICR_STRIDE;
        uint64_t typer = mmio_read64(fr + GICR_TYPER);

        if ((uint32_t)(typer >> 32) == want) {
            rd = fr;
            break;
        }
        if (typer & GICR_TYPER_LAST)
            break;
    }
    if (!rd) {
        printf("gic: no redistributor has affinity 0x%x (GICR_TYPER)\n", want);
        return -1;
    }
    c->gicr = rd;

    /* wake it: ProcessorSleep 0, then ChildrenAsleep reads 0 */
    mmio_write32(rd + GICR_WAKER, mmio_read32(rd + GICR_WAKER) & ~GICR_WAKER_PROCESSOR_SLEEP);
    if (wait_clear(rd + GICR_WAKER, GICR_WAKER_CHILDREN_ASLEEP)) {
        printf("gic: redistributor 0x%lx: GICR_WAKER.ChildrenAsleep stays set\n", rd);
        return -1;
    }

    /* SGIs and PPIs: Group 1, disabled, nothing pending or active, default priority */
    uintptr_t sgi = rd + GICR_SGI_OFFSET;
    mmio_write32(sgi + GICD_IGROUPR, 0xffffffff);
    mmio_write32(sgi + GICD_ICENABLER, 0xffffffff);
    wait_rwp(0);
    mmio_write32(sgi + GICD_ICPENDR, 0xffffffff);
    mmio_write32(sgi + GICD_ICACTIVER, 0xffffffff);
    for (unsigned i = 0; i < 32; i += 4)
        mmio_write32(sgi + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);

    /* CPU interface: system registers on, every priority unmasked, no subpriority, EOImode 0 */
    write_sysreg_s(ICC_SRE_EL1, read_sysreg_s(ICC_SRE_EL1) | ICC_SRE_SRE | ICC_SRE_DFB | ICC_SRE_DIB);
    isb();
    if (!(read_sysreg_s(ICC_SRE_EL1) & ICC_SRE_SRE)) {
        printf("gic: ICC_SRE_EL1.SRE stays 0 (no system register interface)\n");
        return -1;
    }
    write_sysreg_s(ICC_PMR_EL1, 0xff);
    write_sysreg_s(ICC_BPR1_EL1, 0);
    write_sysreg_s(ICC_CTLR_EL1, 0);
    write_sysreg_s(ICC_IGRPEN1_EL1, 1);
    isb();
    return 0;
}

int gic_init(void)
{
    uint64_t me = read_sysreg(mpidr_el1) & MPIDR_AFF_MASK;
    uint32_t lines = mmio_read32(GICD_BASE + GICD_TYPER) & 0x1f;

    nr_intids = 32 * (lines + 1);
    if (nr_intids > GIC_MAX_INTID)
        nr_intids = GIC_MAX_INTID;

    /* off, then affinity routing on (IROUTER needs it) before anything else */
    mmio_write32(GICD_BASE + GICD_CTLR, 0);
    wait_rwp(32);
    mmio_write32(GICD_BASE + GICD_CTLR, GICD_CTLR_ARE_NS);
    wait_rwp(32);
    if (!(mmio_read32(GICD_BASE + GICD_CTLR) & GICD_CTLR_ARE_NS)) {
        printf("gic: GICD_CTLR.ARE_NS stays 0 (no affinity routing)\n");
        return -1;
    }

    /* SPIs: Group 1, disabled, nothing pending or active, default priority, level, to this CPU */
    for (unsigned i = 32; i < nr_intids; i += 32) {
        mmio_write32(GICD_BASE + GICD_IGROUPR + i / 8, 0xffffffff);
        mmio_write32(GICD_BASE + GICD_ICENABLER + i / 8, 0xffffffff);
        mmio_write32(GICD_BASE + GICD_ICPENDR + i / 8, 0xffffffff);
        mmio_write32(GICD_BASE + GICD_ICACTIVER + i / 8, 0xffffffff);
    }
    wait_rwp(32);
    for (unsigned i = 32; i < nr_intids; i += 4)
        mmio_write32(GICD_BASE + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);
    for (unsigned i = 32; i < nr_intids; i += 16)
        mmio_write32(GICD_BASE + GICD_ICFGR + i / 4, 0);
    for (unsigned i = 32; i < nr_intids; i++)
        gic_route(i, me);

    mmio_write32(GICD_BASE + GICD_CTLR, GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1NS);
    wait_rwp(32);
    if ((mmio_read32(GICD_BASE + GICD_CTLR) & (GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1NS)) !=
        (GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1NS)) {
        printf("gic: GICD_CTLR 0x%x: Group 1 not enabled\n", mmio_read32(GICD_BASE + GICD_CTLR));
        return -1;
    }

    if (gic_cpu_init())
        return -1;
    exc_set_irq_handler(dispatch);
    return 0;
}
