/*
 * pmu.c - the Performance Monitors Extension (PMUv3, Arm ARM D11 and the registers in D17.5) for a
 * vCPU whose CPU model has none that counts (the soft backend: Unicorn's PMU registers hold values
 * but nothing drives them). The clock is instructions retired (pmu.h).
 *
 * Counted: the cycle counter (CPU_CYCLES), and per event counter SW_INCR (0x00, by PMSWINC_EL0),
 * INST_RETIRED (0x08) and CPU_CYCLES (0x11); any other event number is accepted and counts nothing
 * (PMCEID0_EL0 says which are implemented). Not modelled: the PMCCFILTR/PMEVTYPER filter bits (every
 * EL counts), PMCR_EL0.D (divide by 64), X, DP, and event counter chaining.
 */
#include "../core/irq.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "arm.h"
#include "pmu.h"
#include "timer.h"

/* PMCR_EL0 (D17.5.7) */
#define PMCR_E (1u << 0)
#define PMCR_P (1u << 1)
#define PMCR_C (1u << 2)
#define PMCR_LC (1u << 6)
#define PMCR_RW 0x79u /* E, D, X, DP, LC as stored (P and C are actions, LP is RES0 in PMUv3) */
#define PMCR_IMP_ARM (0x41u << 24)
#define PMCR_N_SHIFT 11

/* PMUSERENR_EL0 (D17.5.14) */
#define USERENR_EN (1u << 0)
#define USERENR_SW (1u << 1)
#define USERENR_CR (1u << 2)
#define USERENR_ER (1u << 3)

#define EV_SW_INCR 0x00
#define EV_INST_RETIRED 0x08
#define EV_CPU_CYCLES 0x11
#define EVTYPE_MASK 0xfc0003ffu /* P, U, NSK, NSU, NSH, M; evtCount [9:0] */
#define CCFILTR_MASK 0xfc000000u

#define R(op1, crn, crm, op2) SYSREG(3, op1, crn, crm, op2)
#define PMCR_EL0 R(3, 9, 12, 0)
#define PMCNTENSET_EL0 R(3, 9, 12, 1)
#define PMCNTENCLR_EL0 R(3, 9, 12, 2)
#define PMOVSCLR_EL0 R(3, 9, 12, 3)
#define PMSWINC_EL0 R(3, 9, 12, 4)
#define PMSELR_EL0 R(3, 9, 12, 5)
#define PMCEID0_EL0 R(3, 9, 12, 6)
#define PMCEID1_EL0 R(3, 9, 12, 7)
#define PMCCNTR_EL0 R(3, 9, 13, 0)
#define PMXEVTYPER_EL0 R(3, 9, 13, 1)
#define PMXEVCNTR_EL0 R(3, 9, 13, 2)
#define PMINTENSET_EL1 R(0, 9, 14, 1)
#define PMINTENCLR_EL1 R(0, 9, 14, 2)
#define PMOVSSET_EL0 R(3, 9, 14, 3)
/* PMEVCNTR<n>_EL0: op1 3, CRn 14, CRm 0b10:n[4:3], op2 n[2:0]; PMEVTYPER<n>_EL0: CRm 0b11:n[4:3] (n = 31: PMCCFILTR) */
#define IS_EVCNTR(id) (((id) & ~0x1fu) == R(3, 14, 8, 0))
#define IS_EVTYPER(id) (((id) & ~0x1fu) == R(3, 14, 12, 0))
#define EV_INDEX(id) ((id)&0x1fu)

bool vmm__pmu_sysreg_is_ours(uint32_t id)
{
    switch (id) {
    case PMCR_EL0:
    case PMCNTENSET_EL0:
    case PMCNTENCLR_EL0:
    case PMOVSCLR_EL0:
    case PMSWINC_EL0:
    case PMSELR_EL0:
    case PMCEID0_EL0:
    case PMCEID1_EL0:
    case PMCCNTR_EL0:
    case PMXEVTYPER_EL0:
    case PMXEVCNTR_EL0:
    case PMINTENSET_EL1:
    case PMINTENCLR_EL1:
    case PMOVSSET_EL0:
        return true;
    }
    return IS_EVCNTR(id) || IS_EVTYPER(id);
}

bool vmm__pmu_el0_allowed(uint32_t id, bool is_read, uint64_t pmuserenr)
{
    if (id == PMINTENSET_EL1 || id == PMINTENCLR_EL1)
        return false; /* EL1 only */
    if (pmuserenr & USERENR_EN)
        return true;
    if (id == PMSWINC_EL0 && !is_read)
        return pmuserenr & USERENR_SW;
    if (id == PMCCNTR_EL0 && is_read)
        return pmuserenr & USERENR_CR;
    if (id == PMSELR_EL0 || ((id == PMXEVCNTR_EL0 || IS_EVCNTR(id)) && is_read))
        return pmuserenr & USERENR_ER;
    return false;
}

static uint32_t counters_mask(const struct vmm_pmu *p)
{
    return (uint32_t)((1ull << p->n) - 1) | 1u << PMU_CYCLE_BIT;
}

static bool counting(const struct vmm_pmu *p, unsigned bit)
{
    return (p->pmcr & PMCR_E) && (p->cnten >> bit & 1);
}

static bool counts_insns(const struct vmm_pmu *p, unsigned n)
{
    unsigned ev = p->evtype[n] & 0x3ff;
    return ev == EV_INST_RETIRED || ev == EV_CPU_CYCLES;
}

/* Add to event counter n (32 bits in PMUv3): a carry out of bit 31 sets its overflow flag (D11.5.3). */
static void event_add(struct vmm_pmu *p, unsigned n, uint64_t d)
{
    uint64_t v = (p->evcnt[n] & 0xffffffffu) + d;
    if (v >> 32)
        p->ovs |= 1u << n;
    p->evcnt[n] = v & 0xffffffffu;
}

/* The overflow interrupt: PMCR_EL0.E and any overflow flag whose PMINTENSET bit is set (D11.5.4). */
static void update_irq(struct vmm_vcpu *vcpu)
{
    struct vmm_pmu *p = &vcpu->pmu;
    bool level = (p->pmcr & PMCR_E) && (p->ovs & p->inten);

    if (level != p->level) {
        p->level = level;
        vmm__irq_set(vcpu->vm, vcpu->id, PMU_INTID, level);
    }
}

uint64_t vmm__pmu_clock(struct vmm_vcpu *vcpu)
{
    return vcpu->pmu.host_clock ? vmm__clock_ns(vcpu->vm, vcpu) : vcpu->insns;
}

void vmm__pmu_sync(struct vmm_vcpu *vcpu)
{
    struct vmm_pmu *p = &vcpu->pmu;
    uint64_t now = vmm__pmu_clock(vcpu), d = now - p->since;

    p->since = now;
    if (d) {
        if (counting(p, PMU_CYCLE_BIT)) {
            uint64_t old = p->ccnt;
            p->ccnt += d;
            /* PMCR_EL0.LC: overflow at 64 bits, else at 32 (the counter goes on counting) */
            if ((p->pmcr & PMCR_LC) ? p->ccnt < old : (p->ccnt >> 32) != (old >> 32))
                p->ovs |= 1u << PMU_CYCLE_BIT;
        }
        for (unsigned n = 0; n < p->n; n++)
            if (counting(p, n) && counts_insns(p, n))
                event_add(p, n, d);
    }
    update_irq(vcpu);
}

uint64_t vmm__pmu_next_overflow(struct vmm_vcpu *vcpu)
{
    const struct vmm_pmu *p = &vcpu->pmu;
    uint64_t left = UINT64_MAX;

    if (!(p->pmcr & PMCR_E) || !(p->inten & p->cnten))
        return UINT64_MAX;
    if (counting(p, PMU_CYCLE_BIT) && (p->inten >> PMU_CYCLE_BIT & 1))
        left = (p->pmcr & PMCR_LC) ? -p->ccnt : (1ull << 32) - (p->ccnt & 0xffffffffu);
    for (unsigned n = 0; n < p->n; n++)
        if (counting(p, n) && (p->inten >> n & 1) && counts_insns(p, n) && (1ull << 32) - p->evcnt[n] < left)
            left = (1ull << 32) - p->evcnt[n];
    if (!left)
        left = 1;
    return left > UINT64_MAX - p->since ? UINT64_MAX : p->since + left;
}

static void swinc(struct vmm_pmu *p, uint64_t val)
{
    for (unsigned n = 0; n < p->n; n++)
        if ((val >> n & 1) && counting(p, n) && (p->evtype[n] & 0x3ff) == EV_SW_INCR)
            event_add(p, n, 1);
}

static void write_pmcr(struct vmm_pmu *p, uint64_t val)
{
    if (val & PMCR_C)
        p->ccnt = 0;
    if (val & PMCR_P)
        for (unsigned n = 0; n < p->n; n++)
            p->evcnt[n] = 0;
    p->pmcr = val & PMCR_RW;
}

/* Event counter or type n (n == 31: the cycle counter's filter) through PMSELR_EL0 or directly. */
static int event_reg(struct vmm_vcpu *vcpu, unsigned n, bool type, bool is_read, uint64_t *val)
{
    struct vmm_pmu *p = &vcpu->pmu;

    if (type && n == 31) {
        if (is_read)
            *val = p->ccfiltr;
        else
            p->ccfiltr = (uint32_t)*val & CCFILTR_MASK;
        return 0;
    }
    if (n >= p->n)
        return VMM_ENOTSUP;
    if (is_read)
        *val = type ? p->evtype[n] : p->evcnt[n];
    else if (type)
        p->evtype[n] = (uint32_t)*val & EVTYPE_MASK;
    else
        p->evcnt[n] = *val & 0xffffffffu;
    return 0;
}

static int pmu_read(struct vmm_vcpu *vcpu, uint32_t id, uint64_t *val)
{
    struct vmm_pmu *p = &vcpu->pmu;

    switch (id) {
    case PMCR_EL0:
        *val = p->pmcr | PMCR_IMP_ARM | (uint64_t)p->n << PMCR_N_SHIFT;
        return 0;
    case PMCNTENSET_EL0:
    case PMCNTENCLR_EL0:
        *val = p->cnten;
        return 0;
    case PMINTENSET_EL1:
    case PMINTENCLR_EL1:
        *val = p->inten;
        return 0;
    case PMOVSSET_EL0:
    case PMOVSCLR_EL0:
        *val = p->ovs;
        return 0;
    case PMSWINC_EL0:
        *val = 0; /* write-only: RAZ (D17.5.12) */
        return 0;
    case PMSELR_EL0:
        *val = p->selr;
        return 0;
    case PMCEID0_EL0:
        *val = 1u << EV_SW_INCR | 1u << EV_INST_RETIRED | 1u << EV_CPU_CYCLES;
        return 0;
    case PMCEID1_EL0:
        *val = 0;
        return 0;
    case PMCCNTR_EL0:
        *val = p->ccnt;
        return 0;
    }
    return VMM_ENOTSUP;
}

static int pmu_write(struct vmm_vcpu *vcpu, uint32_t id, uint64_t val)
{
    struct vmm_pmu *p = &vcpu->pmu;
    uint32_t bits = (uint32_t)val & counters_mask(p);

    switch (id) {
    case PMCR_EL0:
        write_pmcr(p, val);
        return 0;
    case PMCNTENSET_EL0:
        p->cnten |= bits;
        return 0;
    case PMCNTENCLR_EL0:
        p->cnten &= ~bits;
        return 0;
    case PMINTENSET_EL1:
        p->inten |= bits;
        return 0;
    case PMINTENCLR_EL1:
        p->inten &= ~bits;
        return 0;
    case PMOVSSET_EL0:
        p->ovs |= bits;
        return 0;
    case PMOVSCLR_EL0:
        p->ovs &= ~bits;
        return 0;
    case PMSWINC_EL0:
        swinc(p, val);
        return 0;
    case PMSELR_EL0:
        p->selr = (uint32_t)val & 0x1f;
        return 0;
    case PMCCNTR_EL0:
        p->ccnt = val;
        return 0;
    case PMCEID0_EL0:
    case PMCEID1_EL0:
        return VMM_ENOTSUP; /* read-only */
    }
    return VMM_ENOTSUP;
}

int vmm__pmu_sysreg(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val)
{
    struct vmm_pmu *p = &vcpu->pmu;
    int rc;

    vmm__pmu_sync(vcpu); /* counts and flags as of now, before any change */
    if (id == PMXEVTYPER_EL0 || id == PMXEVCNTR_EL0) {
        rc = event_reg(vcpu, p->selr, id == PMXEVTYPER_EL0, is_read, val);
        if (rc) { /* PMSELR_EL0 names no counter: CONSTRAINED UNPREDICTABLE, we answer RAZ/WI */
            vmm__guest_error(vcpu->vm, "pmu", "vCPU %u: PMXEV* with PMSELR_EL0 = %u (%u counters): RAZ/WI", vcpu->id,
                             p->selr, p->n);
            if (is_read)
                *val = 0;
            rc = 0;
        }
    } else if (IS_EVCNTR(id) || IS_EVTYPER(id)) {
        rc = event_reg(vcpu, EV_INDEX(id), IS_EVTYPER(id), is_read, val);
    } else {
        rc = is_read ? pmu_read(vcpu, id, val) : pmu_write(vcpu, id, *val);
    }
    update_irq(vcpu);
    return rc;
}

void vmm__pmu_snap(struct vmm_vcpu *vcpu, struct vmm_snap *s)
{
    struct vmm_pmu *p = &vcpu->pmu;
    unsigned n = p->n;

    vmm__pmu_sync(vcpu); /* saving: counts as of now */
    vmm__snap_unsigned(s, &n);
    vmm__snap_u64(s, &p->pmcr);
    vmm__snap_u32(s, &p->cnten);
    vmm__snap_u32(s, &p->inten);
    vmm__snap_u32(s, &p->ovs);
    vmm__snap_u32(s, &p->selr);
    vmm__snap_u64(s, &p->ccnt);
    vmm__snap_u32(s, &p->ccfiltr);
    for (unsigned i = 0; i < PMU_COUNTERS; i++) {
        vmm__snap_u64(s, &p->evcnt[i]);
        vmm__snap_u32(s, &p->evtype[i]);
    }
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    uint32_t mask = counters_mask(p);
    if (n != p->n)
        vmm__snap_fail(s, "%u PMU event counters where this CPU model has %u", n, p->n);
    else if ((p->pmcr & ~(uint64_t)PMCR_RW) || ((p->cnten | p->inten | p->ovs) & ~mask) || p->selr > 31 ||
             (p->ccfiltr & ~CCFILTR_MASK))
        vmm__snap_fail(s, "a PMU register has bits this PMU does not have");
    for (unsigned i = 0; i < PMU_COUNTERS && !vmm__snap_error(s); i++)
        if (p->evcnt[i] > 0xffffffffu || (p->evtype[i] & ~EVTYPE_MASK) || (i >= p->n && (p->evcnt[i] || p->evtype[i])))
            vmm__snap_fail(s, "PMU event counter %u is out of range", i);
    p->since = vmm__pmu_clock(vcpu);                      /* the counts are as of the restored instruction count */
    p->level = (p->pmcr & PMCR_E) && (p->ovs & p->inten); /* as the restored GIC has the line */
}
