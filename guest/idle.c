/* idle.c - an idle guest for bench/idle.py: a 100 Hz virtual timer tick (no timer at all in idle_notick,
   built with -DHZ=0), WFI forever; prints a line every 100 ticks. The host stops it (--timeout). With -DSTOP=N
   (IDLE_STOP) the tick stops after N ticks ("idle: N ticks, quiet") and the guest idles on with no timer. */
#include "rt.h"

#ifndef HZ
#define HZ 100
#endif
#ifndef STOP
#define STOP 0 /* IDLE_STOP=N: after N ticks the timer is disabled and the guest idles with no timer at all */
#endif

static uint64_t period;
static volatile uint32_t ticks;

static void on_tick(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    /* re-arm from the previous deadline (no drift); the condition is false again: the level drops */
    write_sysreg(cntv_cval_el0, read_sysreg(cntv_cval_el0) + period);
    isb();
    ticks++;
}

int main(uint64_t dtb)
{
    (void)dtb;
    irq_disable();
    if (gic_init())
        return 1;
    if (HZ == 0) {
        printf("idle: ready, no timer\n");
        for (;;)
            wfi();
    }
    period = timer_freq() / (HZ ? HZ : 1);
    gic_set_handler(INTID_VTIMER, on_tick, 0);
    gic_enable(INTID_VTIMER);
    write_sysreg(cntv_cval_el0, timer_now() + period);
    write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
    isb();
    printf("idle: ready, %u Hz tick\n", (unsigned)HZ);
    for (uint32_t reported = 0;;) {
        wfi(); /* IRQs masked: wakes when one is pending; it is taken below */
        irq_enable();
        isb();
        irq_disable();
        if (STOP && ticks >= STOP) {
            write_sysreg(cntv_ctl_el0, 0);
            isb();
            printf("idle: %u ticks, quiet\n", (unsigned)ticks);
            for (;;)
                wfi();
        }
        if (ticks - reported >= 100) {
            reported = ticks;
            printf("idle: %u ticks\n", reported);
        }
    }
}
