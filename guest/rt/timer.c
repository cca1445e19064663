/* timer.c - the generic timer's counter, deadlines, and WFI waits bounded by the physical timer. */
#include "rt.h"

#define DEFAULT_FREQ 62500000UL /* QEMU virt and vmmpy */
#define STUCK_CHECKS 10000000u  /* equal counter reads before a deadline gives up on the counter */

uint64_t timer_freq(void)
{
    uint64_t f = read_sysreg(cntfrq_el0) & 0xffffffff;
    return f ? f : DEFAULT_FREQ;
}

uint64_t timer_now(void)
{
    isb(); /* no earlier read of the counter, and no speculation past it */
    return read_sysreg(cntvct_el0);
}

uint64_t timer_ms_to_ticks(uint64_t ms)
{
    uint64_t f = timer_freq();
    return ms / 1000 * f + ms % 1000 * f / 1000;
}

uint64_t timer_ticks_to_us(uint64_t ticks)
{
    uint64_t f = timer_freq();
    return ticks / f * 1000000 + ticks % f * 1000000 / f;
}

void deadline_set(struct deadline *d, uint64_t ms)
{
    d->last = timer_now();
    d->end = d->last + timer_ms_to_ticks(ms);
    d->same = 0;
}

int deadline_passed(struct deadline *d)
{
    uint64_t now = timer_now();

    if (now >= d->end)
        return 1;
    if (now != d->last) {
        d->last = now;
        d->same = 0;
        return 0;
    }
    return ++d->same >= STUCK_CHECKS;
}

/* ---- WFI waits: the physical timer (PPI 30) ends the WFI at the deadline ---- */

static void wake_handler(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    write_sysreg(cntp_ctl_el0, 0); /* the output drops: no second interrupt */
    isb();
    this_cpu()->wake_fired = 1;
}

void wfi_wait_begin(struct wfi_wait *w, uint64_t ms)
{
    struct cpu_data *c = this_cpu();

    w->daif = irq_save();
    if (!c->wake_ready) {
        gic_set_handler(INTID_PTIMER, wake_handler, 0);
        gic_set_priority(INTID_PTIMER, GIC_PRIO_WAKEUP);
        gic_enable(INTID_PTIMER);
        c->wake_ready = 1;
    }
    deadline_set(&w->d, ms);
    c->wake_fired = 0;
    /* CNTP compares with the physical count: CNTPCT - CNTVCT is CNTVOFF */
    isb();
    uint64_t offset = read_sysreg(cntpct_el0) - read_sysreg(cntvct_el0);
    write_sysreg(cntp_cval_el0, w->d.end + offset);
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE);
    isb();
}

int wfi_wait_step(struct wfi_wait *w)
{
    if (deadline_passed(&w->d))
        return 0;
    wfi();        /* wakes on a pending IRQ although PSTATE.I is set */
    irq_enable(); /* take it (and anything else pending) here */
    isb();
    irq_disable();
    return 1;
}

int wfi_wait_end(struct wfi_wait *w)
{
    write_sysreg(cntp_ctl_el0, 0);
    isb();
    int fired = this_cpu()->wake_fired;
    irq_restore(w->daif);
    return fired;
}
