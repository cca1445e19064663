/* halt_window.c - one CPU waiting in WFI (IRQs masked) for its virtual timer, CYCLES times a pattern of waits. For
   tests/test_run_waits.py, on a thread per vCPU, where the halt-poll window starts at 0, opens at 10 us after a
   wait shorter than the 200 us limit, doubles after a wait longer than itself and within the limit, at most to
   the limit, and closes after a wait past the limit.
   - halt_window: one wait of 300 us and sixteen of 30 us. The long wait closes the window; the short ones open
     it again (10 and 20 us miss, 40 us is reached and kept: 40 us polls end at their deadline).
   - halt_window_cap (-DCAP): waits of 45, 45, 60, 80, 120, 185 and 300 us, each longer than the window it
     meets (0, 10, 20, 40, 80, 160, 200 us): every poll misses, and the 185 us wait takes the window to the
     200 us cap, not to 320 us, which would have covered the 300 us wait. Each but that last is at most 50 us
     longer than its window, so that after the poll it is spun to, not slept for (a sleep can end late, past
     the limit).
   Prints "halt_window: N cycles", and the verdict under its own name. */
#include "rt.h"

#ifndef CYCLES
#define CYCLES 50
#endif

#ifdef CAP
#define NAME "halt_window_cap"
static const unsigned pattern_us[] = { 45, 45, 60, 80, 120, 185, 300 };
#else
#define NAME "halt_window"
static const unsigned pattern_us[] = { 300, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30 };
#endif

/* one wait in WFI until the timer's condition holds, `us` from now */
static void wait_us(uint64_t us)
{
    write_sysreg(cntv_cval_el0, timer_now() + timer_freq() * us / 1000000);
    write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
    isb();
    while (!(read_sysreg(cntv_ctl_el0) & CNT_CTL_ISTATUS))
        wfi(); /* the pending PPI ends the WFI; IRQs stay masked, so it is never taken */
}

int main(uint64_t dtb)
{
    (void)dtb;
    if (test_begin_gic(NAME))
        return test_end();
    gic_enable(INTID_VTIMER);
    for (int c = 0; c < CYCLES; c++)
        for (unsigned i = 0; i < sizeof pattern_us / sizeof pattern_us[0]; i++)
            wait_us(pattern_us[i]);
    write_sysreg(cntv_ctl_el0, 0);
    isb();
    printf("halt_window: %d cycles\n", CYCLES);
    return test_end();
}
