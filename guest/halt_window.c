/* halt_window.c - one CPU waiting in WFI (IRQs masked) for its virtual timer, in CYCLES cycles of one wait of
   300 us and sixteen of 30 us. For tests/test_run_waits.py, on a thread per vCPU: the 300 us wait, longer than
   the 200 us halt-poll limit, closes the window; the 30 us waits open it again (10 and 20 us miss, 40 us is
   reached and kept: it doubles only while a wake-up comes after it). Prints "halt_window: N cycles". */
#include "rt.h"

#ifndef CYCLES
#define CYCLES 50
#endif

static const unsigned pattern_us[] = { 300, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30 };

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
    test_begin("halt_window");
    irq_disable();
    if (!test_check(gic_init() == 0, "gic_init failed"))
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
