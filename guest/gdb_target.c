/* gdb_target.c - the debugger tests' guest (tests/test_gdb.py): MMU on (identity map, 2 MiB blocks), every
   other CPU started spinning on a counter of its own, then CPU 0 calls gdb_tick(n) for n = 1, 2, ... (a
   breakpoint target whose store to gdb_counter is the watchpoint target) until the debugger sets
   gdb_release, and ends with exit status gdb_status, saying how many virtual-counter ticks the last gdb_tick() call
   took: a debugger that held the VM inside it does not count, since the guest's clock stands still meanwhile.
   Before that loop, CPU 0 sets gdb_atomic to 1, 2 and 3 with atomics only (gdb_atomics), the target of a
   watchpoint on a store-exclusive, a CAS and an LDADD. */
#include "rt.h"

volatile uint64_t gdb_counter;            /* gdb_tick stores n here */
volatile uint32_t gdb_release;            /* set by the debugger: main returns */
volatile uint32_t gdb_status = 3;         /* main's exit status (the debugger may change it) */
volatile uint64_t gdb_spins[RT_MAX_CPUS]; /* what the secondaries count */
volatile uint64_t gdb_tick_ticks;         /* CNTVCT_EL0 ticks across the last gdb_tick() call */

volatile uint64_t gdb_atomic;             /* written by gdb_atomics only */

/* gdb_atomic = 1 by LDXR/STXR, then 2 by CAS and 3 by LDADD (LSE; LDXR/STXR again on a CPU without it). Each
   is followed by an ISB, which ends the translation block: a watchpoint that stops at the next block stops
   in this function. */
__attribute__((noinline)) void gdb_atomics(void)
{
    int lse = ((read_sysreg(id_aa64isar0_el1) >> 20) & 0xf) >= 2;
    register uint64_t x0 __asm__("x0") = (uintptr_t)&gdb_atomic;

    __asm__ volatile("mov x1, #1\n"
                     "1: ldxr x3, [x0]\n stxr w4, x1, [x0]\n cbnz w4, 1b\n isb\n nop\n"
                     : "+r"(x0)
                     :
                     : "x1", "x3", "x4", "memory");
    if (lse) {
        __asm__ volatile("mov x1, #1\n mov x2, #2\n .inst 0xc8a17c02\n isb\n nop\n" /* cas x1, x2, [x0] */
                         "mov x1, #1\n .inst 0xf8210003\n isb\n nop\n"                /* ldadd x1, x3, [x0] */
                         : "+r"(x0)
                         :
                         : "x1", "x2", "x3", "memory");
    } else {
        for (uint64_t v = 2; v <= 3; v++)
            __asm__ volatile("1: ldxr x3, [x0]\n stxr w4, %1, [x0]\n cbnz w4, 1b\n isb\n nop\n"
                             : "+r"(x0)
                             : "r"(v)
                             : "x3", "x4", "memory");
    }
}

__attribute__((noinline)) void gdb_tick(uint64_t n)
{
    gdb_counter = n;
}

static void spinner(void *arg)
{
    unsigned me = smp_cpu_id();
    (void)arg;
    for (;;)
        gdb_spins[me % RT_MAX_CPUS]++;
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    mmu_enable(NULL);
    for (int i = 1; i < n; i++)
        smp_start_cpu(mpidrs[i], spinner, 0);
    gdb_atomics();
    printf("gdb_target: %d cpu(s) ready, atomic %lu\n", n, (unsigned long)gdb_atomic);
    for (uint64_t i = 1; !gdb_release; i++) {
        isb();
        uint64_t t0 = read_sysreg(cntvct_el0);
        gdb_tick(i);
        isb();
        gdb_tick_ticks = read_sysreg(cntvct_el0) - t0;
        for (volatile int k = 0; k < 1000; k++)
            ;
    }
    printf("gdb_target: released at %lu, exit %u; the last gdb_tick took %lu ticks at %lu Hz\n",
           (unsigned long)gdb_counter, (unsigned)gdb_status, (unsigned long)gdb_tick_ticks,
           (unsigned long)(read_sysreg(cntfrq_el0) & 0xffffffff));
    return (int)gdb_status;
}
