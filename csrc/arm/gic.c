/* gic.c - GICv3 model (Arm IHI0069): creation, locking, pending and priority logic, the CPUs' IRQ lines. */
#include <inttypes.h>
#include <stdlib.h>

#include "../core/layout.h"
#include "gic_internal.h"

_Static_assert(VMM_MAX_CPUS <= 32, "CPU sets are 32-bit masks");

static unsigned lowest_bit(uint32_t x)
{
    return (unsigned)__builtin_ctz(x);
}

int vmm__gic_create(struct vmm_vm *vm, struct vmm_gic **out)
{
    struct vmm_gic *g;
    int rc;

    g = calloc(1, sizeof *g);
    if (!g)
        return vmm__set_error(vm, VMM_ENOMEM, "gic: out of memory");
    g->vm = vm;
    g->ncpus = vm->ncpus;
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->report_lock, NULL);
    /* reset values (§12.9-12.11): everything Group 0, disabled, priority 0, level-sensitive, routed to Aff 0.0.0.0 */
    for (unsigned c = 0; c < g->ncpus; c++) {
        struct gic_cpu *cpu = &g->cpu[c];
        uint64_t mpidr = vm->vcpus[c].mpidr;
        cpu->priv.edge = (1u << GIC_NR_SGI) - 1; /* SGIs are always edge-triggered */
        cpu->aff = (uint32_t)(mpidr & 0xffffff) | (uint32_t)((mpidr >> 32) & 0xff) << 24;
        cpu->sleep = true;
        cpu->bpr0 = GIC_MIN_BPR0;
        cpu->bpr1 = GIC_MIN_BPR1;
        cpu->hppi = GIC_SPURIOUS;
        cpu->hppi_prio = GIC_IDLE_PRIO;
    }
    vmm__gic_its_reset(g);
    g->lpis = vm->its;
    if ((rc = vmm__bus_add(vm, LAYOUT_GICD_BASE, LAYOUT_GICD_SIZE, "gicv3-dist", &vmm__gic_dist_ops, g)) ||
        (g->lpis && (rc = vmm__bus_add(vm, LAYOUT_GITS_BASE, LAYOUT_GITS_SIZE, "gicv3-its", &vmm__gic_its_ops, g))) ||
        (rc = vmm__bus_add(vm, LAYOUT_GICR_BASE, LAYOUT_GICR_STRIDE * g->ncpus, "gicv3-redist", &vmm__gic_redist_ops,
                           g))) {
        /* the VM is being torn down: nothing will reach a region left on the bus */
        vmm__gic_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

void vmm__gic_destroy(struct vmm_gic *gic)
{
    if (!gic)
        return;
    vmm__gic_lpi_free(gic);
    pthread_mutex_destroy(&gic->lock);
    pthread_mutex_destroy(&gic->report_lock);
    free(gic);
}

/* ---- state accessors ---------------------------------------------------- */

struct gic_bits *vmm__gic_bank(struct vmm_gic *g, unsigned cpu, unsigned intid)
{
    return intid < GIC_NR_PRIVATE ? &g->cpu[cpu].priv : &g->spi[intid / 32 - 1];
}

uint8_t *vmm__gic_prio(struct vmm_gic *g, unsigned cpu, unsigned intid)
{
    return intid < GIC_NR_PRIVATE ? &g->cpu[cpu].prio[intid] : &g->spi_prio[intid - GIC_NR_PRIVATE];
}

/*
 * GICD_IROUTER<n> (§12.9.22). IRM = 0: the vCPU whose affinity matches, if
 * any. IRM = 1 (1 of N): we pick the lowest-numbered CPU whose interface has
 * the interrupt's group enabled (CPU 0 if none has).
 */
unsigned vmm__gic_spi_target(const struct vmm_gic *g, unsigned intid)
{
    uint64_t r = g->irouter[intid - GIC_NR_PRIVATE];
    unsigned grp;

    if (!(r & GICD_IROUTER_IRM)) {
        uint32_t aff = (uint32_t)(r & 0xffffff) | (uint32_t)((r >> 32) & 0xff) << 24;
        for (unsigned c = 0; c < g->ncpus; c++)
            if (g->cpu[c].aff == aff)
                return c;
        return GIC_NO_CPU;
    }
    grp = (g->spi[intid / 32 - 1].group >> (intid % 32)) & 1;
    for (unsigned c = 0; c < g->ncpus; c++)
        if (g->cpu[c].igrpen[grp])
            return c;
    return 0;
}

void vmm__gic_dirty_irq(struct vmm_gic *g, unsigned cpu, unsigned intid)
{
    if (intid >= GIC_NR_PRIVATE)
        cpu = vmm__gic_spi_target(g, intid);
    if (cpu < g->ncpus)
        g->dirty |= 1u << cpu;
}

void vmm__gic_dirty_all(struct vmm_gic *g)
{
    g->dirty = g->ncpus >= 32 ? ~0u : (1u << g->ncpus) - 1;
}

/* ---- priorities (§4.8) ---------------------------------------------------- */

/*
 * The group priority bits of a priority for an interrupt of group `grp`:
 * BPR0 = n splits at [7:n+1]; BPR1 = n at [7:n]; with CBPR, Group 1 uses BPR0.
 */
unsigned vmm__gic_gprio_mask(const struct gic_cpu *c, unsigned grp)
{
    unsigned shift = grp == 0 || c->cbpr ? c->bpr0 + 1u : c->bpr1;
    return (0xffu << shift) & 0xffu;
}

/* ICC_RPR_EL1: the group priority of the highest priority active interrupt, from the AP registers. */
unsigned vmm__gic_running_prio(const struct gic_cpu *c)
{
    uint32_t a = c->apr[0] | c->apr[1];
    return a ? lowest_bit(a) << GIC_PRIO_SHIFT : GIC_IDLE_PRIO;
}

/* The HPPI is above the priority mask and its group priority beats the running priority. */
bool vmm__gic_hppi_can_preempt(const struct gic_cpu *c)
{
    unsigned rprio, mask;

    if (c->hppi == GIC_SPURIOUS || c->hppi_prio >= c->pmr)
        return false;
    rprio = vmm__gic_running_prio(c);
    if (rprio == GIC_IDLE_PRIO)
        return true;
    mask = vmm__gic_gprio_mask(c, c->hppi_grp);
    return (c->hppi_prio & mask) < (rprio & mask);
}

/*
 * The highest priority pending interrupt that can reach CPU c: pending,
 * enabled, not active, its group enabled in GICD_CTLR and ICC_IGRPENn, and
 * (SPIs) routed to c. Ties go to the lowest INTID. LPIs (always Group 1,
 * no active state, §5.1) come from c's redistributor (gic_lpi.c).
 */
static void update_hppi(struct vmm_gic *g, unsigned c)
{
    struct gic_cpu *cpu = &g->cpu[c];
    uint32_t grp0 = (g->ctlr & GICD_CTLR_EN_GRP0) && cpu->igrpen[0] ? ~0u : 0;
    uint32_t grp1 = (g->ctlr & GICD_CTLR_EN_GRP1) && cpu->igrpen[1] ? ~0u : 0;
    unsigned best = GIC_SPURIOUS, best_prio = GIC_IDLE_PRIO + 1;

    for (unsigned w = 0; w < GIC_NR_WORDS; w++) {
        const struct gic_bits *b = w ? &g->spi[w - 1] : &cpu->priv;
        uint32_t cand = gic_bits_pending(b) & b->enable & ~b->active & ((b->group & grp1) | (~b->group & grp0));
        while (cand) {
            unsigned intid = w * 32 + lowest_bit(cand);
            unsigned prio = *vmm__gic_prio(g, c, intid);
            cand &= cand - 1;
            if (prio < best_prio && (w == 0 || vmm__gic_spi_target(g, intid) == c)) {
                best = intid;
                best_prio = prio;
            }
        }
    }
    if (grp1) {
        uint8_t lpi_prio;
        unsigned lpi = vmm__gic_lpi_hppi(g, c, &lpi_prio);
        if (lpi != GIC_SPURIOUS && lpi_prio < best_prio) {
            best = lpi;
            best_prio = lpi_prio;
        }
    }
    cpu->hppi = best;
    cpu->hppi_prio = best == GIC_SPURIOUS ? GIC_IDLE_PRIO : (uint8_t)best_prio;
    if (best == GIC_SPURIOUS)
        cpu->hppi_grp = 0;
    else
        cpu->hppi_grp = best >= GIC_LPI_BASE ? 1 : (vmm__gic_bank(g, c, best)->group >> (best % 32)) & 1;
}

unsigned vmm__gic_activate(struct vmm_gic *g, unsigned c)
{
    struct gic_cpu *cpu = &g->cpu[c];
    unsigned intid = cpu->hppi;
    unsigned gprio = cpu->hppi_prio & vmm__gic_gprio_mask(cpu, cpu->hppi_grp);

    cpu->apr[cpu->hppi_grp] |= 1u << (gprio >> GIC_PRIO_SHIFT);
    if (intid >= GIC_LPI_BASE) { /* an LPI has no active state: acknowledging it only clears its pending bit */
        vmm__gic_lpi_set_pending(g, c, intid, false);
    } else {
        struct gic_bits *b = vmm__gic_bank(g, c, intid);
        b->active |= 1u << (intid % 32);
        b->pending &= ~(1u << (intid % 32)); /* a level interrupt whose input is still high stays pending */
    }
    g->dirty |= 1u << c;
    vmm__count(g->vm, &g->vm->stats.irqs);
    return intid;
}

void vmm__gic_deactivate(struct vmm_gic *g, unsigned cpu, unsigned intid)
{
    if (intid >= GIC_NR_IRQS)
        return; /* LPIs have no active state */
    vmm__gic_bank(g, cpu, intid)->active &= ~(1u << (intid % 32));
    vmm__gic_dirty_irq(g, cpu, intid);
}

/* ---- locking and the IRQ lines --------------------------------------------- */

void vmm__gic_lock(struct vmm_gic *g)
{
    pthread_mutex_lock(&g->lock);
}

/*
 * Recompute the marked CPUs, then report the lines that changed with the
 * state lock dropped. The thread that changes a line reports it itself (the
 * run thread can then apply its own IAR/EOI at once), and report_lock, taken
 * before the state lock is released, keeps the reports in the order of the
 * changes: the last report for a CPU carries its current line.
 * Group 0 interrupts would be FIQs, which the vCPUs do not have: only a
 * Group 1 HPPI raises the IRQ line.
 */
void vmm__gic_unlock(struct vmm_gic *g)
{
    uint32_t report = 0;
    bool level[VMM_MAX_CPUS];

    for (uint32_t d = g->dirty | g->reline; d; d &= d - 1) {
        unsigned c = lowest_bit(d);
        struct gic_cpu *cpu = &g->cpu[c];
        if (g->dirty & 1u << c)
            update_hppi(g, c);
        cpu->line = cpu->hppi_grp == 1 && vmm__gic_hppi_can_preempt(cpu);
        if (cpu->line != cpu->reported) {
            cpu->reported = level[c] = cpu->line;
            report |= 1u << c;
        }
    }
    g->dirty = g->reline = 0;
    if (!report) {
        pthread_mutex_unlock(&g->lock);
        return;
    }
    pthread_mutex_lock(&g->report_lock);
    pthread_mutex_unlock(&g->lock);
    for (; report; report &= report - 1) {
        unsigned c = lowest_bit(report);
        vmm__irq_line_changed(g->vm, c, level[c]);
    }
    pthread_mutex_unlock(&g->report_lock);
}

bool vmm__gic_irq_line(struct vmm_gic *gic, unsigned cpu)
{
    bool line;

    if (cpu >= gic->ncpus)
        return false;
    pthread_mutex_lock(&gic->lock);
    line = gic->cpu[cpu].line;
    pthread_mutex_unlock(&gic->lock);
    return line;
}

/*
 * An input line. Edge-triggered interrupts latch pending on a rising edge;
 * level-sensitive ones are pending while the input is high (gic_bits_pending).
 */
void vmm__gic_set_level(struct vmm_gic *gic, unsigned cpu, unsigned intid, bool level)
{
    struct gic_bits *b;
    uint32_t bit = 1u << (intid % 32);

    if (intid >= GIC_NR_IRQS)
        return; /* not an interrupt we implement */
    if (intid >= GIC_NR_PRIVATE)
        cpu = 0; /* SPIs are not banked */
    else if (cpu >= gic->ncpus)
        return;
    vmm__gic_lock(gic);
    b = vmm__gic_bank(gic, cpu, intid);
    if (!(b->level & bit) != !level) {
        if (level) {
            b->level |= bit;
            b->pending |= b->edge & bit;
        } else {
            b->level &= ~bit;
        }
        vmm__gic_dirty_irq(gic, cpu, intid);
    }
    vmm__gic_unlock(gic);
}

/* ---- register semantics shared by the distributor and the redistributors -- */

uint32_t vmm__gic_bits_read(const struct gic_bits *b, unsigned reg)
{
    switch (reg) {
    case GIC_IGROUPR:
        return b->group;
    case GIC_ISENABLER:
    case GIC_ICENABLER:
        return b->enable;
    case GIC_ISPENDR:
    case GIC_ICPENDR:
        return gic_bits_pending(b);
    default: /* GIC_ISACTIVER, GIC_ICACTIVER */
        return b->active;
    }
}

/* Writing 1 sets (IS*) or clears (IC*) a bit; 0 has no effect. IGROUPR is a plain register. */
void vmm__gic_bits_write(struct gic_bits *b, unsigned reg, uint32_t val)
{
    switch (reg) {
    case GIC_IGROUPR:
        b->group = val;
        break;
    case GIC_ISENABLER:
        b->enable |= val;
        break;
    case GIC_ICENABLER:
        b->enable &= ~val;
        break;
    case GIC_ISPENDR:
        b->pending |= val;
        break;
    case GIC_ICPENDR: /* clears the latch: a level interrupt whose input is high stays pending */
        b->pending &= ~val;
        break;
    case GIC_ISACTIVER:
        b->active |= val;
        break;
    default: /* GIC_ICACTIVER */
        b->active &= ~val;
        break;
    }
}

/* ICFGR (§12.9.9): two bits per interrupt, bit 2n+1 = edge-triggered, bit 2n RES0. */
uint32_t vmm__gic_cfg_read(const struct gic_bits *b, unsigned half)
{
    uint32_t edge = b->edge >> (16 * half), val = 0;

    for (unsigned i = 0; i < 16; i++)
        val |= ((edge >> i) & 1) << (2 * i + 1);
    return val;
}

void vmm__gic_cfg_write(struct gic_bits *b, unsigned half, uint32_t val, uint32_t writable)
{
    uint32_t edge = 0;

    for (unsigned i = 0; i < 16; i++)
        edge |= ((val >> (2 * i + 1)) & 1) << (i + 16 * half);
    b->edge = (b->edge & ~writable) | (edge & writable);
}

uint32_t vmm__gic_prio_read(const uint8_t *p, unsigned n)
{
    uint32_t val = 0;

    for (unsigned i = 0; i < n; i++)
        val |= (uint32_t)p[i] << (8 * i);
    return val;
}

void vmm__gic_prio_write(uint8_t *p, unsigned n, uint32_t val)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(val >> (8 * i)) & GIC_PRIO_MASK;
}

/* ---- MMIO helpers ----------------------------------------------------------- */

bool vmm__gic_access_ok(struct vmm_gic *g, const char *block, uint64_t off, unsigned size, unsigned widths,
                        bool is_write)
{
    if (size <= 8 && (widths & size) == size && !(off & (size - 1)))
        return true;
    vmm__guest_error(g->vm, "gic", "%s: %u-byte %s at offset 0x%04" PRIx64 ": unsupported access size, RAZ/WI", block,
                     size, is_write ? "write" : "read", off);
    return false;
}

void vmm__gic_bad_offset(struct vmm_gic *g, const char *block, uint64_t off, unsigned size, bool is_write)
{
    vmm__guest_error(g->vm, "gic", "%s: %u-byte %s at reserved or read-only offset 0x%04" PRIx64 ": ignored", block,
                     size, is_write ? "write" : "read", off);
}

/* PIDR4..7, PIDR0..3, CIDR0..3 (§12.1.4): Arm, GICv3 (PIDR2.ArchRev = 3); pidr0 tells the frames apart. */
uint32_t vmm__gic_id_reg(uint64_t off, uint8_t pidr0)
{
    static const uint8_t ids[12] = { 0x44, 0x00, 0x00, 0x00, 0x00, 0xb4, 0x3b, 0x00, 0x0d, 0xf0, 0x05, 0xb1 };
    unsigned i = (unsigned)(off - GIC_IDREGS) / 4;

    return i == 4 ? pidr0 : ids[i];
}
