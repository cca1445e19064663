/* timer.c - the EL1 virtual timer (PPI 27): CVAL/TVAL, ENABLE/IMASK/ISTATUS and the PPI's level, 100 Hz ticks
   with WFI, a TVAL one-shot; then the EL1 physical timer (PPI 30) once. */
#include "rt.h"

#define HZ 100
#define TICKS 50
#define LEVEL_MS 1000 /* bound for a timer output change to show in GICR_ISPENDR0 */

static uint64_t freq, period;

/* ---- the virtual timer's handler: count ticks, re-arm from the previous deadline (no drift) ---- */
static volatile unsigned ticks, early, tick_stop;
static volatile uint64_t last_tick_at;

static void vtimer_tick(unsigned intid, void *arg)
{
    uint64_t now = timer_now(), cval = read_sysreg(cntv_cval_el0), ctl = read_sysreg(cntv_ctl_el0);

    (void)intid;
    (void)arg;
    if (now < cval || !(ctl & CNT_CTL_ISTATUS)) /* taken before its deadline */
        early++;
    last_tick_at = now;
    if (++ticks < tick_stop)
        write_sysreg(cntv_cval_el0, cval + period); /* the condition is false again: the level drops */
    else
        write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE | CNT_CTL_IMASK);
    isb();
}

/* ---- the physical timer's handler, and the virtual timer as its watchdog ---- */
static volatile unsigned ptimer_irqs, ptimer_early, watchdog;

static void ptimer_handler(unsigned intid, void *arg)
{
    uint64_t now = read_sysreg(cntpct_el0), cval = read_sysreg(cntp_cval_el0), ctl = read_sysreg(cntp_ctl_el0);

    (void)intid;
    (void)arg;
    if (now < cval || !(ctl & CNT_CTL_ISTATUS))
        ptimer_early++;
    ptimer_irqs++;
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE | CNT_CTL_IMASK);
    isb();
}

static void vtimer_watchdog(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    watchdog = 1;
    write_sysreg(cntv_ctl_el0, 0);
    isb();
}

/* IRQs taken for ms: to see that nothing (more) comes */
static void idle_ms(uint64_t ms)
{
    irq_enable();
    POLL_UNTIL(0, ms);
    irq_disable();
}

static int vpending(void)
{
    return gic_is_pending(INTID_VTIMER);
}

static uint64_t vctl(uint64_t ctl)
{
    write_sysreg(cntv_ctl_el0, ctl);
    isb();
    return read_sysreg(cntv_ctl_el0);
}

/* IMASK/ISTATUS and the PPI's level, with PSTATE.I set so nothing is taken */
static void control_bits(void)
{
    uint64_t now = timer_now();

    gic_enable(INTID_VTIMER);
    vctl(0);
    write_sysreg(cntv_cval_el0, now + 10 * freq);
    test_check(!(vctl(CNT_CTL_ENABLE | CNT_CTL_IMASK) & CNT_CTL_ISTATUS), "ISTATUS set with CVAL 10 s ahead");
    test_check(!(vctl(CNT_CTL_ENABLE) & CNT_CTL_ISTATUS), "ISTATUS set with CVAL 10 s ahead (unmasked)");
    test_check(!POLL_UNTIL(vpending(), 10), "PPI 27 pending before the deadline");

    vctl(CNT_CTL_ENABLE | CNT_CTL_IMASK);
    write_sysreg(cntv_cval_el0, timer_now() - 1);
    isb();
    test_check(read_sysreg(cntv_ctl_el0) & CNT_CTL_ISTATUS, "ISTATUS clear with CVAL in the past (IMASK set)");
    test_check(!POLL_UNTIL(vpending(), 10), "PPI 27 pending although IMASK is set");

    test_check(vctl(CNT_CTL_ENABLE) & CNT_CTL_ISTATUS, "ISTATUS clear with CVAL in the past");
    test_check(POLL_UNTIL(vpending(), LEVEL_MS), "PPI 27 not pending: expired, enabled, unmasked");
    test_check(vctl(CNT_CTL_ENABLE | CNT_CTL_IMASK) & CNT_CTL_ISTATUS, "IMASK cleared ISTATUS");
    test_check(POLL_UNTIL(!vpending(), LEVEL_MS), "PPI 27 still pending after IMASK (level must follow the output)");

    vctl(CNT_CTL_ENABLE);
    test_check(POLL_UNTIL(vpending(), LEVEL_MS), "PPI 27 not pending after IMASK cleared again");
    write_sysreg(cntv_cval_el0, timer_now() + 10 * freq);
    isb();
    test_check(!(read_sysreg(cntv_ctl_el0) & CNT_CTL_ISTATUS), "ISTATUS stays set after CVAL moved ahead");
    test_check(POLL_UNTIL(!vpending(), LEVEL_MS), "PPI 27 still pending after CVAL moved ahead");

    write_sysreg(cntv_cval_el0, timer_now() - 1);
    vctl(CNT_CTL_ENABLE);
    test_check(POLL_UNTIL(vpending(), LEVEL_MS), "PPI 27 not pending (before the ENABLE test)");
    vctl(0);
    test_check(POLL_UNTIL(!vpending(), LEVEL_MS), "PPI 27 still pending after ENABLE cleared");
    printf("timer: ENABLE/IMASK/ISTATUS and the PPI 27 level checked\n");
}

/* TVAL is CVAL - CNTVCT as a signed 32-bit value; writing it sets CVAL = CNTVCT + TVAL */
static void tval(void)
{
    vctl(CNT_CTL_ENABLE | CNT_CTL_IMASK);
    uint64_t before = timer_now();
    write_sysreg(cntv_tval_el0, freq);
    uint64_t after = timer_now();
    uint64_t cval = read_sysreg(cntv_cval_el0);
    test_check(cval >= before + freq && cval <= after + freq, "TVAL write: CVAL 0x%lx not in [0x%lx, 0x%lx]", cval,
               before + freq, after + freq);

    int32_t t1 = (int32_t)read_sysreg(cntv_tval_el0);
    uint64_t t = timer_now();
    POLL_UNTIL(timer_now() > t, 100);
    int32_t t2 = (int32_t)read_sysreg(cntv_tval_el0);
    test_check(t1 > 0 && (uint64_t)t1 <= freq && t2 < t1, "TVAL does not count down from 1 s: %d then %d", t1, t2);

    write_sysreg(cntv_cval_el0, timer_now() - freq / 100);
    isb();
    int32_t t3 = (int32_t)read_sysreg(cntv_tval_el0);
    test_check(t3 < 0 && t3 <= -(int32_t)(freq / 100), "TVAL 10 ms after the deadline is %d, want <= -%lu", t3,
               freq / 100);
    vctl(0);
    printf("timer: TVAL %d then %d (1 s ahead), %d (10 ms behind)\n", t1, t2, t3);
}

static void ticking(void)
{
    uint64_t start, elapsed, want = TICKS * period;

    ticks = early = 0;
    tick_stop = TICKS;
    gic_set_handler(INTID_VTIMER, vtimer_tick, 0);
    gic_enable(INTID_VTIMER);
    start = timer_now();
    write_sysreg(cntv_cval_el0, start + period);
    vctl(CNT_CTL_ENABLE);
    if (!test_check(WFI_UNTIL(ticks >= TICKS, 3 * TICKS * 1000 / HZ + 1000), "only %u of %u ticks", ticks, TICKS))
        return;
    elapsed = last_tick_at - start;
    printf("timer: %u ticks at %u Hz in %lu us (%lu us expected), %u early\n", ticks, HZ, timer_ticks_to_us(elapsed),
           timer_ticks_to_us(want), early);
    test_check(early == 0, "%u ticks were taken before their deadline", early);
    test_check(elapsed >= want, "%u ticks took %lu counts, less than %lu", TICKS, elapsed, want);
    test_check(elapsed <= 3 * want + freq, "%u ticks took %lu counts, far more than %lu", TICKS, elapsed, want);

    /* IMASK stopped it: nothing more in 5 periods */
    idle_ms(5 * 1000 / HZ);
    test_check(ticks == TICKS, "%u interrupts after IMASK was set", ticks - TICKS);

    /* one-shot through TVAL */
    tick_stop = ticks + 1;
    vctl(CNT_CTL_ENABLE | CNT_CTL_IMASK);
    start = timer_now();
    write_sysreg(cntv_tval_el0, period);
    vctl(CNT_CTL_ENABLE);
    if (test_check(WFI_UNTIL(ticks == TICKS + 1, 1000), "TVAL one-shot did not fire in 1 s")) {
        test_check(last_tick_at - start >= period, "TVAL one-shot fired after %lu counts, before %lu",
                   last_tick_at - start, period);
        test_check(early == 0, "TVAL one-shot was taken before its deadline");
        printf("timer: TVAL one-shot after %lu us\n", timer_ticks_to_us(last_tick_at - start));
    }
    vctl(0);
}

/* the physical timer once, with the virtual timer as a 1 s watchdog */
static void physical(void)
{
    uint64_t pct = read_sysreg(cntpct_el0), vct = timer_now();

    printf("timer: CNTPCT - CNTVCT = %ld\n", (int64_t)(pct - vct));
    gic_set_handler(INTID_PTIMER, ptimer_handler, 0);
    gic_set_handler(INTID_VTIMER, vtimer_watchdog, 0);
    gic_enable(INTID_PTIMER);
    write_sysreg(cntv_cval_el0, vct + freq);
    vctl(CNT_CTL_ENABLE);

    isb();
    uint64_t start = read_sysreg(cntpct_el0);
    write_sysreg(cntp_cval_el0, start + period);
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE);
    isb();

    struct deadline d;
    deadline_set(&d, 2000);
    irq_disable();
    while (!ptimer_irqs && !watchdog && !deadline_passed(&d)) {
        wfi();
        irq_enable();
        isb();
        irq_disable();
    }
    uint64_t end = read_sysreg(cntpct_el0);
    vctl(0);
    if (test_check(ptimer_irqs == 1, "physical timer: %u interrupts (watchdog %s)", ptimer_irqs,
                   watchdog ? "fired" : "did not fire")) {
        test_check(!ptimer_early, "physical timer taken before its deadline");
        printf("timer: physical timer (PPI 30) fired after %lu us\n", timer_ticks_to_us(end - start));
    }
    idle_ms(3 * 1000 / HZ);
    test_check(ptimer_irqs <= 1, "physical timer: %u more interrupts after IMASK", ptimer_irqs - 1);
    write_sysreg(cntp_ctl_el0, 0);
    isb();
}

int main(uint64_t dtb)
{
    (void)dtb;
    if (test_begin_gic("timer"))
        return test_end();
    freq = read_sysreg(cntfrq_el0) & 0xffffffff;
    printf("timer: CNTFRQ %lu Hz, ID_AA64PFR0_EL1.GIC %lu\n", freq, (read_sysreg(id_aa64pfr0_el1) >> 24) & 0xf);
    if (!test_check(freq != 0, "CNTFRQ_EL0 is 0"))
        return test_end();
    period = freq / HZ;
    uint64_t t0 = timer_now();
    if (!test_check(POLL_UNTIL(timer_now() != t0, 100), "CNTVCT_EL0 does not move"))
        return test_end();

    control_bits();
    tval();
    ticking();
    physical();
    return test_end();
}
