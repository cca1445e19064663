/* offon.c - CPU 1 powered on and off again, CYCLES times (PSCI CPU_ON, and CPU_OFF when its function returns).
   Each time it is on it waits in WFI (IRQs masked) for 3 ticks of its virtual timer, 40 us apart, then powers
   off with both of its timers armed, due 80 and 130 us later, while it is off; CPU 0 busy-waits 200 us after
   each CPU_OFF before the next CPU_ON. For tests/test_run_waits.py: a vCPU thread's halt-poll window is the
   vCPU's, and the time it spends off does not reset it, so after the first cycle every such wait is ended by
   its deadline within the poll; and an off vCPU's thread waits for CPU_ON alone, not for its timers. Prints
   "offon: N cycles of 3 ticks". */
#include "rt.h"

#ifndef CYCLES
#define CYCLES 200
#endif
#define TICKS 3
#define PERIOD_US 40

static volatile uint32_t ticks;

static void ticker(void *arg)
{
    (void)arg;
    uint64_t period = timer_freq() / (1000000 / PERIOD_US);

    if (!test_check(gic_cpu_init() == 0, "cpu 1: gic_cpu_init failed"))
        return;
    write_sysreg(cntp_ctl_el0, 0);
    write_sysreg(cntv_ctl_el0, 0); /* left armed and expired at the last CPU_OFF: its level drops first */
    isb();
    gic_enable(INTID_VTIMER);
    for (int t = 0; t < TICKS; t++) {
        write_sysreg(cntv_cval_el0, timer_now() + period);
        write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
        isb();
        while (!(read_sysreg(cntv_ctl_el0) & CNT_CTL_ISTATUS))
            wfi(); /* the pending PPI ends the WFI; IRQs stay masked, so it is never taken */
        atomic_add32(&ticks, 1);
    }
    /* off with both timers armed: their deadlines pass while it is off (their PPIs disabled; both timers are
       disabled again before PPI 27 is enabled when it comes back on) */
    gic_disable(INTID_VTIMER);
    write_sysreg(cntv_cval_el0, timer_now() + timer_freq() * 80 / 1000000);
    write_sysreg(cntp_cval_el0, read_sysreg(cntpct_el0) + timer_freq() * 130 / 1000000);
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE);
    isb();
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    if (test_begin_gic("offon") || !test_check(n >= 2, "needs 2 CPUs, found %d", n))
        return test_end();
    int c = 0;
    for (; c < CYCLES; c++) {
        if (!test_check(smp_start_cpu(mpidrs[1], ticker, 0) == 0, "cycle %d: CPU_ON failed", c) ||
            !test_check(POLL_UNTIL(ticks == (uint32_t)(c + 1) * TICKS, 5000), "cycle %d: %u ticks", c, ticks) ||
            !test_check(POLL_UNTIL(psci_affinity_info(mpidrs[1], 0) == PSCI_AFF_OFF, 5000), "cycle %d: CPU 1 is on",
                        c))
            break;
        uint64_t until = timer_now() + timer_freq() / 5000; /* 200 us: CPU 1's timers come due while it is off */
        while (timer_now() < until)
            cpu_relax();
    }
    printf("offon: %d cycles of %d ticks\n", c, TICKS);
    return test_end();
}
