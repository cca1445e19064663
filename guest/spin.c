/* spin.c - every CPU spins in guest code forever, without an exit (no WFI, no MMIO, no HVC): the host can only
   end the run by kicking each vCPU out of the guest (a stop, the timeout). CPU 0 prints "spin: N cpus
   spinning" once every secondary has counted, then spins too.

   spin_tick (-DTICK): each secondary runs a 1 kHz virtual timer tick while it spins with IRQs unmasked, so only
   the host's kick at its own deadline makes it take each tick; the CPUs' ticks fall in three phases; CPU 0 has no
   timer. CPU 0 waits (5 s) until
   every secondary has taken TICKS ticks, prints "spin_tick: N cpus, TICKS ticks each" and "PASS spin_tick", or
   "FAIL spin_tick: ..." and each CPU's count.

   spin_off (-DOFF): CPU 0 powers the VM off (PSCI SYSTEM_OFF) while the secondaries spin: the vCPU thread that
   ends the run must kick the others out of the guest.

   spin_idle0 (-DIDLE0): CPU 0 waits in WFI for ever (IRQs masked, no timer) while the secondaries spin: in
   deterministic mode each round's length is a secondary's, never CPU 0's.

   spin_timer0 (-DTIMER0): CPU 0 waits in WFI for its virtual timer TICKS times, 1.007 ms apart, while the secondaries
   spin; its handler records how late it ran (CNTVCT - CVAL). It prints "spin_timer0: N cpus, latest L ticks" and
   powers off. In deterministic mode the deadline passes while a secondary runs, and CPU 0 (first in each round)
   must take it in the next round, not one round after. */
#include "rt.h"

#define TICKS 20

#ifdef TIMER0
static volatile uint64_t late_max;
static volatile uint32_t fired;

static void on_timer0(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    uint64_t late = read_sysreg(cntvct_el0) - read_sysreg(cntv_cval_el0);
    if (late > late_max)
        late_max = late;
    write_sysreg(cntv_ctl_el0, 0); /* the line drops; CPU 0 re-arms */
    isb();
    fired++;
}
#endif

static volatile uint64_t count[RT_MAX_CPUS];

static __attribute__((noreturn)) void spin(void)
{
    volatile uint64_t *c = &count[smp_cpu_id() % RT_MAX_CPUS];

    for (;;)
        *c += 1;
}

#ifdef TICK
static volatile uint32_t ticks[RT_MAX_CPUS];
static uint64_t period;

static void on_tick(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    write_sysreg(cntv_cval_el0, read_sysreg(cntv_cval_el0) + period);
    isb();
    ticks[smp_cpu_id() % RT_MAX_CPUS]++;
}

static int all_ticked(int n)
{
    for (int c = 1; c < n; c++)
        if (ticks[c] < TICKS)
            return 0;
    return 1;
}
#endif

static void secondary(void *arg)
{
    (void)arg;
#ifdef TICK
    if (gic_cpu_init()) {
        printf("FAIL spin_tick: cpu %u: gic_cpu_init failed\n", smp_cpu_id());
        count[smp_cpu_id() % RT_MAX_CPUS] = 1; /* CPU 0 goes on to its check, which then fails */
        return;
    }
    gic_enable(INTID_VTIMER);
    /* three phases: CPU c's first deadline is (c mod 3) * 0.3 ms later than the others', so that with 3 CPUs
       each passes alone and a kick for one CPU's deadline finds the next CPU's still ahead */
    write_sysreg(cntv_cval_el0, timer_now() + period + (smp_cpu_id() % 3) * (period * 3 / 10));
    write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
    isb();
    irq_enable();
#endif
    spin();
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    irq_disable();
#ifdef TIMER0
    if (mmu_enable(NULL) != 0 || gic_init() != 0) {
        printf("FAIL spin_timer0: mmu_enable or gic_init failed\n");
        return 1;
    }
    gic_set_handler(INTID_VTIMER, on_timer0, 0);
    gic_enable(INTID_VTIMER);
#endif
#ifdef TICK
    test_begin("spin_tick");
    if (!test_check(mmu_enable(NULL) == 0, "mmu_enable failed") || !test_check(gic_init() == 0, "gic_init failed"))
        return test_end();
    period = timer_freq() / 1000;
    gic_set_handler(INTID_VTIMER, on_tick, 0);
#endif
    for (int c = 1; c < n; c++)
        if (smp_start_cpu(mpidrs[c], secondary, 0) != 0) {
            printf("FAIL spin: CPU_ON(0x%lx) failed\n", mpidrs[c]);
            return 1;
        }
    for (int c = 1; c < n; c++)
        while (count[c] == 0)
            ;
#ifdef TICK
    if (!test_check(POLL_UNTIL(all_ticked(n), 5000), "not every secondary took %d ticks within 5 s", TICKS)) {
        for (int c = 1; c < n; c++)
            printf("spin_tick: cpu %d took %u ticks\n", c, ticks[c]);
        return test_end();
    }
    printf("spin_tick: %d cpus, %d ticks each\n", n, TICKS);
    return test_end();
#elif defined(OFF)
    printf("spin_off: %d cpus spinning, powering off\n", n);
    return 0;
#elif defined(TIMER0)
    /* 1 ms and 7 us apart: the deadline's phase within the 100 us quantum moves on by 7 us a tick, so the 20
       ticks meet the round boundaries at every phase */
    uint64_t period = timer_freq() / 1000 + timer_freq() * 7 / 1000000, cval = timer_now();
    for (uint32_t i = 0; i < TICKS; i++) {
        cval += period;
        write_sysreg(cntv_cval_el0, cval);
        write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
        isb();
        while (fired == i) {
            wfi(); /* IRQs masked: wakes when one is pending; it is taken below */
            irq_enable();
            isb();
            irq_disable();
        }
    }
    printf("spin_timer0: %d cpus, latest %lu ticks\n", n, (unsigned long)late_max);
    return 0;
#elif defined(IDLE0)
    printf("spin_idle0: %d cpus spinning, cpu 0 waits\n", n);
    for (;;)
        wfi();
#else
    printf("spin: %d cpus spinning\n", n);
    spin();
#endif
}
