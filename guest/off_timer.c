/* off_timer.c - secondaries that power off with their timers still armed (CTL.ENABLE, the PPIs never enabled at
   the GIC): the virtual timer already expired (CVAL in the past), the physical one due 20 ms later, while they
   are off. An off vCPU's timer must not keep its host thread busy, neither before its deadline nor after it.
   CPU 0 then waits 300 ms in WFI, checks that every secondary is OFF (PSCI AFFINITY_INFO) and prints
   "off_timer: N cpus off, timers armed". */
#include "rt.h"

static volatile uint32_t armed;

static void secondary(void *arg)
{
    (void)arg;
    write_sysreg(cntv_cval_el0, timer_now() - 1);
    write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
    write_sysreg(cntp_cval_el0, read_sysreg(cntpct_el0) + timer_freq() / 50);
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE);
    isb();
    atomic_add32(&armed, 1);
    /* returning makes the runtime call PSCI CPU_OFF */
}

static int all_off(uint64_t *mpidrs, int n)
{
    for (int c = 1; c < n; c++)
        if (psci_affinity_info(mpidrs[c], 0) != PSCI_AFF_OFF)
            return 0;
    return 1;
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    test_begin("off_timer");
    irq_disable();
    if (!test_check(mmu_enable(NULL) == 0, "mmu_enable failed") || !test_check(gic_init() == 0, "gic_init failed"))
        return test_end();
    for (int c = 1; c < n; c++)
        test_check(smp_start_cpu(mpidrs[c], secondary, 0) == 0, "CPU_ON(0x%lx) failed", mpidrs[c]);
    if (!test_check(POLL_UNTIL(armed == (uint32_t)n - 1 && all_off(mpidrs, n), 5000), "%u of %d secondaries armed",
                    armed, n - 1))
        return test_end();
    (void)WFI_UNTIL(0, 300); /* a WFI sleep of 300 ms: the off secondaries' threads are watched meanwhile */
    test_check(all_off(mpidrs, n), "a secondary is not OFF after 300 ms");
    printf("off_timer: %d cpus off, timers armed\n", n - 1);
    return test_end();
}
