/* pmu.c - the PMUv3 (Arm ARM D11): cycle counter, enable/disable, software increment, overflow and PPI 23. */
#include "rt.h"

/* PMCR_EL0 (D17.5.7): E, P (reset event counters), C (reset the cycle counter), LC (64-bit cycle overflow), N [15:11]
 */
#define PMCR_E (1UL << 0)
#define PMCR_P (1UL << 1)
#define PMCR_C (1UL << 2)
#define PMCR_LC (1UL << 6)
#define CYCLES (1UL << 31) /* the cycle counter's bit in PMCNTEN/PMOVS/PMINTEN */
#define EV_SW_INCR 0x00
#define INTID_PMU 23 /* PPI 7: QEMU virt and vmmpy (the DT's arm,armv8-pmuv3 node) */
#define PMUSERENR_EN (1UL << 0)

static volatile unsigned irqs;
static volatile uint64_t irq_ovs;

static void on_pmu_irq(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    irqs++;
    irq_ovs = read_sysreg(pmovsset_el0);
    write_sysreg(pmovsclr_el0, irq_ovs); /* the line drops */
    isb();
}

/* some work between two readings (volatile: not optimised away) */
static void spin(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static uint64_t cycles(void)
{
    isb();
    return read_sysreg(pmccntr_el0);
}

static void test_cycle_counter(void)
{
    write_sysreg(pmcr_el0, PMCR_E | PMCR_C | PMCR_P | PMCR_LC);
    write_sysreg(pmcntenset_el0, CYCLES);
    isb();
    uint64_t c1 = cycles();
    spin(1000);
    uint64_t c2 = cycles();
    test_check(c2 > c1, "the cycle counter does not count: %lu then %lu", c1, c2);
    printf("pmu: 1000 loop iterations took %lu cycles\n", c2 - c1); /* vmmpy, deterministic: the same every run */
    uint64_t prev = c2;
    int monotonic = 1;
    for (int i = 0; i < 1000; i++) {
        uint64_t c = cycles();
        monotonic &= c >= prev;
        prev = c;
    }
    test_check(monotonic, "the cycle counter went backwards");

    /* PMCNTENCLR stops it, PMCNTENSET starts it again from where it stopped */
    write_sysreg(pmcntenclr_el0, CYCLES);
    isb();
    uint64_t c3 = cycles();
    spin(1000);
    uint64_t c4 = cycles();
    test_check(c3 >= prev && c4 == c3, "PMCNTENCLR: the counter moved from %lu to %lu while disabled", c3, c4);
    test_check(!(read_sysreg(pmcntenset_el0) & CYCLES), "PMCNTENSET still shows the cycle counter enabled");
    write_sysreg(pmcntenset_el0, CYCLES);
    isb();
    spin(1000);
    uint64_t c5 = cycles();
    test_check(c5 > c4, "PMCNTENSET: the counter did not count again (%lu, %lu)", c4, c5);

    /* PMCR_EL0.E = 0 stops every counter */
    write_sysreg(pmcr_el0, PMCR_LC);
    isb();
    uint64_t c6 = cycles();
    spin(1000);
    uint64_t c7 = cycles();
    test_check(c7 == c6 && c6 >= c5, "PMCR_EL0.E clear: the counter moved from %lu to %lu", c6, c7);

    /* PMCR_EL0.C resets it; a write sets it. The reset is done and read with E still clear, so the counter reads
     * exactly 0: with E set, nested KVM counted 5.3 million cycles between the PMCR_EL0 trap and the read, more
     * than the 1.7 million counted before the reset (CI, 2026-12-07). */
    write_sysreg(pmcr_el0, PMCR_C | PMCR_LC);
    uint64_t c8 = cycles();
    test_check(c8 == 0, "PMCR_EL0.C: the counter reads %lu after a reset (was %lu)", c8, c7);
    write_sysreg(pmcr_el0, PMCR_E | PMCR_LC);
    write_sysreg(pmccntr_el0, 1UL << 40);
    uint64_t c9 = cycles();
    test_check(c9 >= 1UL << 40 && c9 < (1UL << 40) + 100000000, "PMCCNTR_EL0 write of 2^40 reads back as %lu", c9);
    printf("pmu: cycle counter counts, stops, resets\n");
}

static void test_cycle_overflow(void)
{
    /* LC = 0: the cycle counter overflows at 32 bits (PMOVSSET bit 31) */
    irqs = 0;
    write_sysreg(pmovsclr_el0, ~0UL);
    write_sysreg(pmintenset_el1, CYCLES);
    write_sysreg(pmcr_el0, PMCR_E);
    write_sysreg(pmccntr_el0, 0xffffffffUL - 2000);
    isb();
    irq_enable(); /* busy: the counter need not count in WFI (on vmmpy it counts instructions) */
    int ok = POLL_UNTIL(irqs > 0, 1000);
    irq_disable();
    write_sysreg(pmintenclr_el1, CYCLES);
    isb();
    test_check(ok && (irq_ovs & CYCLES), "cycle counter 32-bit overflow: %u interrupt(s), PMOVSSET 0x%lx", irqs,
               irq_ovs);
    uint64_t c = cycles();
    test_check(c >> 32 == 1, "cycle counter after the 32-bit overflow: 0x%lx (the 64 bits count on)", c);
}

static void test_swinc(unsigned nctr)
{
    if (!nctr) {
        printf("pmu: no event counters\n");
        return;
    }
    /* counter 0 counts SW_INCR (PMSELR/PMXEVTYPER/PMXEVCNTR, D17.5) */
    write_sysreg(pmcr_el0, PMCR_E | PMCR_P);
    write_sysreg(pmselr_el0, 0);
    isb();
    write_sysreg(pmxevtyper_el0, EV_SW_INCR);
    write_sysreg(pmxevcntr_el0, 0xfffffff0UL);
    write_sysreg(pmovsclr_el0, ~0UL);
    write_sysreg(pmcntenset_el0, 1);
    isb();
    for (int i = 0; i < 15; i++)
        write_sysreg(pmswinc_el0, 1);
    isb();
    uint64_t v = read_sysreg(pmevcntr0_el0);
    test_check(v == 0xffffffffUL, "PMSWINC_EL0: counter 0 reads 0x%lx after 15 increments from 0xfffffff0", v);
    test_check(!(read_sysreg(pmovsset_el0) & 1), "PMOVSSET bit 0 set before the overflow");

    /* the 16th overflows: PMOVSSET bit 0, and with PMINTENSET the PMU interrupt (PPI 23) */
    irqs = 0;
    write_sysreg(pmintenset_el1, 1);
    isb();
    write_sysreg(pmswinc_el0, 1);
    isb();
    v = read_sysreg(pmevcntr0_el0);
    /* FEAT_PMUv3p5 counters are 64 bits: with PMCR_EL0.LP clear they overflow at 32 bits and count on */
    test_check((uint32_t)v == 0, "PMSWINC_EL0: counter 0 reads 0x%lx after overflowing, want 0 in bits 31:0", v);
    test_check(read_sysreg(pmovsset_el0) & 1, "PMOVSSET bit 0 clear after the overflow");
    test_check(POLL_UNTIL(gic_is_pending(INTID_PMU), 100), "the PMU interrupt (INTID %d) is not pending", INTID_PMU);
    int ok = WFI_UNTIL(irqs > 0, 1000);
    test_check(ok && irqs == 1 && (irq_ovs & 1), "PMU overflow interrupt: taken %u time(s), PMOVSSET 0x%lx", irqs,
               irq_ovs);
    test_check(!gic_is_pending(INTID_PMU), "the PMU interrupt is still pending after PMOVSCLR");

    /* a disabled counter ignores PMSWINC; PMINTENCLR keeps the line low */
    write_sysreg(pmcntenclr_el0, 1);
    isb();
    write_sysreg(pmswinc_el0, 1);
    isb();
    test_check((uint32_t)read_sysreg(pmevcntr0_el0) == 0, "PMSWINC_EL0 incremented a disabled counter");
    write_sysreg(pmintenclr_el1, 1);
    write_sysreg(pmcntenset_el0, 1);
    write_sysreg(pmevcntr0_el0, 0xffffffffUL);
    isb();
    write_sysreg(pmswinc_el0, 1);
    isb();
    spin(100);
    test_check((read_sysreg(pmovsset_el0) & 1) && !gic_is_pending(INTID_PMU),
               "PMINTENCLR: overflow flag 0x%lx, interrupt pending %d (want flag set, not pending)",
               read_sysreg(pmovsset_el0), gic_is_pending(INTID_PMU));
    write_sysreg(pmovsclr_el0, ~0UL);
    write_sysreg(pmcntenclr_el0, ~0UL);
    printf("pmu: software increment, overflow, interrupt\n");
}

/* EL0 reads of PMCCNTR_EL0: PMUSERENR_EL0.EN decides (trapped as EC 0x18 when clear, D17.5.14) */
__asm__(".pushsection .user.text, \"ax\"\n"
        ".globl user_read_cycles\n"
        "user_read_cycles:\n"
        "    mrs x0, pmccntr_el0\n"
        "    svc #2\n"
        ".popsection\n");
extern char user_read_cycles[];
static uint8_t user_stack[4096] __attribute__((section(".user.bss"), aligned(16)));
static volatile int traps;
static volatile uint64_t trap_esr, trap_elr;
#define EL0_TRAPPED 0xdead

static int on_exception(struct exc_frame *f)
{
    if (f->vector != VEC_EL0_SYNC)
        return 0;
    if (ESR_EC(f->esr) == EC_SVC64 && (f->esr & 0xffff) == 2) {
        el0_return(f, f->x[0]);
        return 1;
    }
    traps++;
    trap_esr = f->esr;
    trap_elr = f->elr;
    el0_return(f, EL0_TRAPPED);
    return 1;
}

static void test_userenr(void)
{
    uintptr_t sp = (uintptr_t)user_stack + sizeof user_stack;

    exc_set_handler(on_exception);
    write_sysreg(pmcr_el0, PMCR_E | PMCR_LC);
    write_sysreg(pmcntenset_el0, CYCLES);
    write_sysreg(pmuserenr_el0, 0);
    isb();
    traps = 0;
    uint64_t v = el0_call((uintptr_t)user_read_cycles, sp, 0);
    /* ISS (D17.2.40 EC 0x18): Op0 3, Op2 0, Op1 3, CRn 9, Rt 0, CRm 13, direction 1 (read) */
    uint64_t iss = 3UL << 20 | 0UL << 17 | 3UL << 14 | 9UL << 10 | 0UL << 5 | 13UL << 1 | 1;
    test_check(v == EL0_TRAPPED && traps == 1 && trap_esr == ESR_MAKE(EC_SYSREG, iss) &&
                   trap_elr == (uintptr_t)user_read_cycles,
               "EL0 PMCCNTR_EL0 read with PMUSERENR_EL0.EN clear: %d trap(s), esr 0x%lx (want 0x%lx), elr 0x%lx", traps,
               trap_esr, ESR_MAKE(EC_SYSREG, iss), trap_elr);
    write_sysreg(pmuserenr_el0, PMUSERENR_EN);
    isb();
    uint64_t before = cycles();
    traps = 0;
    v = el0_call((uintptr_t)user_read_cycles, sp, 0);
    test_check(traps == 0 && v >= before && v - before < 100000000,
               "EL0 PMCCNTR_EL0 read with PMUSERENR_EL0.EN set: %d trap(s), read %lu (EL1 read %lu before)", traps, v,
               before);
    write_sysreg(pmuserenr_el0, 0);
    printf("pmu: PMUSERENR_EL0 honoured\n");
}

int main(uint64_t dtb)
{
    struct mmu_config cfg = MMU_CONFIG_DEFAULT;
    (void)dtb;

    test_begin("pmu");
    irq_disable();
    cfg.el0_base = (uintptr_t)__user_start;
    cfg.el0_size = 2UL << 20;
    if (mmu_enable(&cfg) || gic_init()) {
        test_fail("MMU or GIC setup failed");
        return test_end();
    }
    uint64_t dfr0 = read_sysreg(id_aa64dfr0_el1);
    unsigned ver = (dfr0 >> 8) & 0xf;
    uint64_t pmcr = read_sysreg(pmcr_el0);
    unsigned n = (pmcr >> 11) & 0x1f;
    printf("pmu: PMUVer %u, %u event counters\n", ver, n);
    if (!test_check(ver != 0 && ver != 0xf, "ID_AA64DFR0_EL1.PMUVer %u: no PMUv3", ver))
        return test_end();
    gic_set_handler(INTID_PMU, on_pmu_irq, 0);
    gic_enable(INTID_PMU);

    test_cycle_counter();
    test_cycle_overflow();
    test_swinc(n);
    test_userenr();
    gic_disable(INTID_PMU);
    return test_end();
}
