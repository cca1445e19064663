/* bench_dbg.c - what the guest's debug and PMU features cost while they are on and after they are off:
   a load/add/store loop timed with CNTVCT_EL0; the same ELF runs on vmmpy and on QEMU -M virt (TCG). */
#include "rt.h"

#ifndef N
#define N 200000
#endif
#define REPEATS 3 /* the host keeps the minimum */

#define MDSCR_KDE (1UL << 13)
#define MDSCR_MDE (1UL << 15)

/* each in a page of its own: a store into a page that holds code costs a retranslation check */
static volatile uint64_t cell __attribute__((aligned(4096))), watched __attribute__((aligned(4096)));

static void loop_mem(uint64_t n)
{
    __asm__ volatile("1: ldr x9, [%1]\n add x9, x9, #1\n str x9, [%1]\n subs %0, %0, #1\n b.ne 1b"
                     : "+r"(n)
                     : "r"(&cell)
                     : "cc", "memory", "x9");
}

static void measure(const char *name)
{
    for (int r = 0; r < REPEATS; r++) {
        isb();
        uint64_t t0 = timer_now();
        loop_mem(N);
        uint64_t t1 = timer_now();
        printf("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", name, (unsigned)N, t1 - t0, timer_freq());
    }
}

int main(uint64_t dtb)
{
    (void)dtb;
    mmu_enable(NULL);
    measure("plain");
    /* a watchpoint on another doubleword: every load and store is checked, none matches (the OS lock,
       set at reset, would hold it off) */
    write_sysreg(oslar_el1, 0);
    write_sysreg(mdscr_el1, MDSCR_MDE | MDSCR_KDE);
    write_sysreg(dbgwvr0_el1, (uintptr_t)&watched);
    write_sysreg(dbgwcr0_el1, 1UL | 3UL << 1 | 3UL << 3 | 0xffUL << 5); /* E, EL0+EL1, load+store, 8 bytes */
    isb();
    __asm__ volatile("msr daifclr, #8\n isb" ::: "memory");
    measure("watchpoint_armed");
    __asm__ volatile("msr daifset, #8\n isb" ::: "memory");
    write_sysreg(dbgwcr0_el1, 0);
    write_sysreg(mdscr_el1, 0);
    isb();
    measure("watchpoint_off");
    /* the cycle counter and an event counter counting */
    write_sysreg(pmcr_el0, 1);
    write_sysreg(pmcntenset_el0, 1UL << 31 | 1);
    write_sysreg(pmevtyper0_el0, 0x11);
    isb();
    measure("pmu_counting");
    write_sysreg(pmcr_el0, 0);
    printf("BENCH done\n");
    return 0;
}
