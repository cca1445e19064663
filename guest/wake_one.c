/* wake_one.c - CPU 0 wakes CPU 1 from a sleep in WFI with an SGI, WAKES times, 1 ms apart; the other CPUs
   stay off. For tests/test_run_waits.py: an interrupt for a vCPU whose thread sleeps wakes that thread
   alone, not the threads of the vCPUs asleep beside it. The gap is far longer than the 200 us past which a
   vCPU thread stops halt polling (also under a sanitizer), so CPU 1 sleeps for each SGI. Prints "wake_one: N wake-ups, M cpus off". */
#include "rt.h"

#define WAKES 100
#define GAP_US 1000
#define SGI_WAKE 1

static volatile uint32_t woken, ready;

static void on_sgi(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    woken++;
}

static void sleeper(void *arg)
{
    (void)arg;
    if (!test_check(gic_cpu_init() == 0, "cpu 1: gic_cpu_init failed"))
        return;
    gic_enable(SGI_WAKE);
    ready = 1;
    test_check(WFI_UNTIL(woken == WAKES, 10000), "cpu 1: %u of %d SGIs within 10 s", woken, WAKES);
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    if (test_begin_gic("wake_one") || !test_check(n >= 2, "needs 2 CPUs, found %d", n))
        return test_end();
    gic_set_handler(SGI_WAKE, on_sgi, 0);
    if (!test_check(smp_start_cpu(mpidrs[1], sleeper, 0) == 0, "CPU_ON failed") ||
        !test_check(POLL_UNTIL(ready, 5000), "cpu 1 not ready within 5 s"))
        return test_end();
    uint64_t gap = timer_freq() / (1000000 / GAP_US);
    uint32_t i = 0;
    for (; i < WAKES; i++) {
        uint64_t until = timer_now() + gap;
        while (timer_now() < until) /* busy: CPU 0 itself never sleeps */
            cpu_relax();
        gic_send_sgi(SGI_WAKE, mpidrs[1]);
        if (!test_check(POLL_UNTIL(woken == i + 1, 1000), "SGI %u not taken within 1 s", i))
            break;
    }
    printf("wake_one: %u wake-ups, %d cpus off\n", i, n - 2);
    return test_end();
}
