/* gic_cpuif.c - the GICv3 CPU interface (IHI0069 §12.2): the ICC_*_EL1 system registers. */
#include "gic_internal.h"

#define ICC_PMR_EL1 SYSREG(3, 0, 4, 6, 0)
#define ICC_IAR0_EL1 SYSREG(3, 0, 12, 8, 0)
#define ICC_EOIR0_EL1 SYSREG(3, 0, 12, 8, 1)
#define ICC_HPPIR0_EL1 SYSREG(3, 0, 12, 8, 2)
#define ICC_BPR0_EL1 SYSREG(3, 0, 12, 8, 3)
#define ICC_AP0R0_EL1 SYSREG(3, 0, 12, 8, 4)
#define ICC_AP1R0_EL1 SYSREG(3, 0, 12, 9, 0)
#define ICC_DIR_EL1 SYSREG(3, 0, 12, 11, 1)
#define ICC_RPR_EL1 SYSREG(3, 0, 12, 11, 3)
#define ICC_SGI1R_EL1 SYSREG(3, 0, 12, 11, 5)
#define ICC_ASGI1R_EL1 SYSREG(3, 0, 12, 11, 6)
#define ICC_SGI0R_EL1 SYSREG(3, 0, 12, 11, 7)
#define ICC_IAR1_EL1 SYSREG(3, 0, 12, 12, 0)
#define ICC_EOIR1_EL1 SYSREG(3, 0, 12, 12, 1)
#define ICC_HPPIR1_EL1 SYSREG(3, 0, 12, 12, 2)
#define ICC_BPR1_EL1 SYSREG(3, 0, 12, 12, 3)
#define ICC_CTLR_EL1 SYSREG(3, 0, 12, 12, 4)
#define ICC_SRE_EL1 SYSREG(3, 0, 12, 12, 5)
#define ICC_IGRPEN0_EL1 SYSREG(3, 0, 12, 12, 6)
#define ICC_IGRPEN1_EL1 SYSREG(3, 0, 12, 12, 7)

/* ICC_CTLR_EL1 (§12.2.6): CBPR and EOImode are ours; PRIbits = 4 (5 bits), IDbits = 0 (16: LPIs to 65535), A3V = 0, RSS
 * = 0 */
#define CTLR_CBPR (1u << 0)
#define CTLR_EOIMODE (1u << 1)
#define CTLR_RO ((GIC_PRIBITS - 1u) << 8)

/* ICC_SRE_EL1 (§12.2.20): SRE, DFB, DIB all RAO/WI: the system register interface is the only one */
#define SRE_VALUE 0x7u

/* ICC_SGI{0,1}R_EL1 / ICC_ASGI1R_EL1 (§12.2.21) */
#define SGIR_TARGETS(v) ((v)&0xffffu)
#define SGIR_INTID(v) (((v) >> 24) & 0xfu)
#define SGIR_IRM (1ull << 40)
#define SGIR_RS(v) (((v) >> 44) & 0xfu)
#define SGIR_AFF321(v) \
    ((uint32_t)(((v) >> 16) & 0xff) << 8 | (uint32_t)(((v) >> 32) & 0xff) << 16 | (uint32_t)(((v) >> 48) & 0xff) << 24)

/* Things to log once the lock is dropped. */
enum cpuif_err { ERR_NONE = 0, ERR_EOI_NOT_ACTIVE, ERR_EOI_GROUP, ERR_EOI_RANGE };

/* ICC_IAR{0,1}_EL1: the HPPI of group `grp` if it can preempt, else 1023; it becomes active. */
static unsigned acknowledge(struct vmm_gic *g, unsigned c, unsigned grp)
{
    struct gic_cpu *cpu = &g->cpu[c];

    if (cpu->hppi_grp != grp || !vmm__gic_hppi_can_preempt(cpu))
        return GIC_SPURIOUS;
    return vmm__gic_activate(g, c);
}

/*
 * ICC_EOIR{0,1}_EL1: drop the running priority (the lowest set AP bit of the
 * group with the highest priority active interrupt, which must be `grp`);
 * with EOImode = 0 also deactivate `intid`. Special INTIDs are ignored.
 */
static bool eoi_ignored(unsigned intid)
{
    return intid >= 1020 && intid < GIC_LPI_BASE; /* the special INTIDs 1020-1023 (§2.2.1), and the reserved ones */
}

static enum cpuif_err end_of_interrupt(struct vmm_gic *g, unsigned c, unsigned grp, unsigned intid)
{
    struct gic_cpu *cpu = &g->cpu[c];
    uint32_t a0 = cpu->apr[0], a1 = cpu->apr[1];
    unsigned active_grp;

    if (eoi_ignored(intid))
        return ERR_NONE;
    if ((intid >= GIC_NR_IRQS && intid < 1020) || intid >= GIC_LPI_MAX)
        return ERR_EOI_RANGE;
    if (!a0 && !a1)
        return ERR_EOI_NOT_ACTIVE;
    active_grp = a0 && (!a1 || __builtin_ctz(a0) <= __builtin_ctz(a1)) ? 0 : 1;
    if (active_grp != grp)
        return ERR_EOI_GROUP;
    cpu->apr[grp] &= cpu->apr[grp] - 1;
    g->dirty |= 1u << c;
    if (!cpu->eoimode)
        vmm__gic_deactivate(g, c, intid);
    return ERR_NONE;
}

/*
 * Generate an SGI (ICC_SGI0R_EL1: Group 0, ICC_SGI1R_EL1: Group 1). It
 * becomes pending on each target whose copy of the SGI is configured for
 * that group. IRM = 1: every CPU but the sender; else Aff3.Aff2.Aff1 with
 * Aff0 = RS * 16 + n for each bit n of TargetList.
 */
static void generate_sgi(struct vmm_gic *g, unsigned c, uint64_t val, unsigned grp)
{
    unsigned intid = SGIR_INTID(val);
    uint32_t aff321 = SGIR_AFF321(val), bit = 1u << intid;

    for (unsigned t = 0; t < g->ncpus; t++) {
        struct gic_cpu *cpu = &g->cpu[t];
        if (val & SGIR_IRM) {
            if (t == c)
                continue;
        } else {
            unsigned aff0 = cpu->aff & 0xff;
            if ((cpu->aff & ~0xffu) != aff321 || aff0 / 16 != SGIR_RS(val) || !(SGIR_TARGETS(val) >> (aff0 % 16) & 1))
                continue;
        }
        if (((cpu->priv.group >> intid) & 1) != grp)
            continue;
        cpu->priv.pending |= bit;
        g->dirty |= 1u << t;
    }
}

/*
 * A read of a register that only this CPU's own accesses write (and, with
 * every vCPU stopped, a reset, a snapshot load or vmm_sysreg_write): no
 * lock, no HPPI work. Linux using pseudo-NMIs (irqchip.gicv3_pseudo_nmi=1)
 * reads ICC_PMR_EL1 in every local_irq_save(). Whether it was one.
 */
static bool cpuif_read_own(const struct gic_cpu *cpu, uint32_t id, uint64_t *val)
{
    switch (id) {
    case ICC_PMR_EL1:
        *val = cpu->pmr;
        return true;
    case ICC_BPR0_EL1:
        *val = cpu->bpr0;
        return true;
    case ICC_BPR1_EL1: /* with CBPR, BPR0 + 1 (saturated) */
        *val = cpu->cbpr ? (cpu->bpr0 < 7 ? cpu->bpr0 + 1u : 7u) : cpu->bpr1;
        return true;
    case ICC_CTLR_EL1:
        *val = CTLR_RO | (cpu->cbpr ? CTLR_CBPR : 0) | (cpu->eoimode ? CTLR_EOIMODE : 0);
        return true;
    case ICC_SRE_EL1:
        *val = SRE_VALUE;
        return true;
    case ICC_IGRPEN0_EL1:
    case ICC_IGRPEN1_EL1:
        *val = cpu->igrpen[id == ICC_IGRPEN1_EL1];
        return true;
    default:
        return false;
    }
}

static int cpuif_read(struct vmm_gic *g, unsigned c, uint32_t id, uint64_t *val)
{
    struct gic_cpu *cpu = &g->cpu[c];

    switch (id) { /* the others: cpuif_read_own */
    case ICC_IAR0_EL1:
    case ICC_IAR1_EL1:
        *val = acknowledge(g, c, id == ICC_IAR1_EL1);
        return 0;
    case ICC_HPPIR0_EL1: /* not masked by PMR or the running priority */
    case ICC_HPPIR1_EL1:
        *val = cpu->hppi_grp == (id == ICC_HPPIR1_EL1) ? cpu->hppi : GIC_SPURIOUS;
        return 0;
    case ICC_AP0R0_EL1:
    case ICC_AP1R0_EL1:
        *val = cpu->apr[id == ICC_AP1R0_EL1];
        return 0;
    case ICC_RPR_EL1:
        *val = vmm__gic_running_prio(cpu);
        return 0;
    default: /* write-only (EOIR, DIR, SGI*R) or not ours: UNDEFINED */
        return VMM_ENOTSUP;
    }
}

static int cpuif_write(struct vmm_gic *g, unsigned c, uint32_t id, uint64_t val, enum cpuif_err *err)
{
    struct gic_cpu *cpu = &g->cpu[c];
    uint8_t bpr = (uint8_t)(val & 7);

    switch (id) {
    case ICC_PMR_EL1:
        cpu->pmr = (uint8_t)val & GIC_PRIO_MASK;
        break;
    case ICC_EOIR0_EL1:
    case ICC_EOIR1_EL1:
        *err = end_of_interrupt(g, c, id == ICC_EOIR1_EL1, (unsigned)(val & 0xffffff));
        break;
    case ICC_DIR_EL1: /* only with EOImode = 1 (else UNPREDICTABLE: ignored) */
        if (cpu->eoimode && (val & 0xffffff) < GIC_NR_IRQS)
            vmm__gic_deactivate(g, c, (unsigned)(val & 0xffffff));
        break;
    case ICC_BPR0_EL1: /* values below the minimum set the minimum */
        cpu->bpr0 = bpr < GIC_MIN_BPR0 ? GIC_MIN_BPR0 : bpr;
        break;
    case ICC_BPR1_EL1: /* with CBPR, writes are ignored */
        if (!cpu->cbpr)
            cpu->bpr1 = bpr < GIC_MIN_BPR1 ? GIC_MIN_BPR1 : bpr;
        break;
    case ICC_AP0R0_EL1:
    case ICC_AP1R0_EL1:
        cpu->apr[id == ICC_AP1R0_EL1] = (uint32_t)val;
        break;
    case ICC_SGI0R_EL1:
        generate_sgi(g, c, val, 0);
        return 0;
    case ICC_SGI1R_EL1:
        generate_sgi(g, c, val, 1);
        return 0;
    case ICC_ASGI1R_EL1: /* "Group 1 of the other Security state": Secure Group 1, which is Group 0 with DS = 1 */
        generate_sgi(g, c, val, 0);
        return 0;
    case ICC_CTLR_EL1:
        cpu->cbpr = val & CTLR_CBPR;
        cpu->eoimode = val & CTLR_EOIMODE;
        break;
    case ICC_SRE_EL1:
        return 0;
    case ICC_IGRPEN0_EL1:
    case ICC_IGRPEN1_EL1:
        cpu->igrpen[id == ICC_IGRPEN1_EL1] = val & 1;
        vmm__gic_dirty_all(g); /* 1-of-N SPIs go to CPUs with the group enabled */
        return 0;
    default: /* read-only (IAR, HPPIR, RPR) or not ours: UNDEFINED */
        return VMM_ENOTSUP;
    }
    /*
     * PMR, BPR, CTLR and the APRs decide whether the HPPI can preempt, not which interrupt it is; an EOI or a
     * deactivation that changes the HPPI marks its CPU dirty itself. Not rescanning the pending bits took an
     * ICC_PMR_EL1 write (every local_irq_save() under Linux's pseudo-NMIs) from 38.5 to 33 ns, the fastest of
     * ten runs each of bench_exits' row under load (within that row's spread).
     */
    g->reline |= 1u << c;
    return 0;
}

int vmm__gic_sysreg(struct vmm_gic *gic, unsigned cpu, uint32_t id, bool is_read, uint64_t *val)
{
    enum cpuif_err err = ERR_NONE;
    uint64_t v = is_read ? 0 : *val;
    int rc;

    if (cpu >= gic->ncpus)
        return VMM_EINVAL;
    if (is_read && cpuif_read_own(&gic->cpu[cpu], id, val))
        return 0;
    /*
     * An EOI of a special INTID changes nothing (end_of_interrupt ignores it): no lock, and no recomputation of
     * the CPU's highest pending interrupt at the unlock, which was a third of an EOIR1 write of 1023 (perf).
     */
    if (!is_read && (id == ICC_EOIR0_EL1 || id == ICC_EOIR1_EL1) && eoi_ignored((unsigned)(v & 0xffffff)))
        return 0;
    vmm__gic_lock(gic);
    rc = is_read ? cpuif_read(gic, cpu, id, &v) : cpuif_write(gic, cpu, id, v, &err);
    vmm__gic_unlock(gic);
    if (is_read && rc == 0)
        *val = v;
    switch (err) {
    case ERR_EOI_NOT_ACTIVE:
        vmm__guest_error(gic->vm, "gic", "vCPU %u: EOI of INTID %u with no active interrupt: ignored", cpu,
                         (unsigned)(v & 0xffffff));
        break;
    case ERR_EOI_GROUP:
        vmm__guest_error(gic->vm, "gic", "vCPU %u: EOI of INTID %u through the other group's EOIR: ignored", cpu,
                         (unsigned)(v & 0xffffff));
        break;
    case ERR_EOI_RANGE:
        vmm__guest_error(gic->vm, "gic", "vCPU %u: EOI of unimplemented INTID %u: ignored", cpu,
                         (unsigned)(v & 0xffffff));
        break;
    case ERR_NONE:
        break;
    }
    return rc;
}
