/* bench_irq.c - interrupt benchmark, timed in the guest with CNTVCT_EL0: virtual timer interrupt latency
   (waiting in WFI, and spinning with IRQs unmasked), SGI round trips between CPU 0 and CPU 1 (both
   waiting in WFI, and both spinning), round trips through memory alone (both polling, no WFE, no
   interrupt), and the CPU interface's SGI/acknowledge/EOI cost. */
#include "rt.h"

#ifndef N
#define N 2000 /* timer interrupts and SGI round trips per measurement */
#endif
#ifndef N_ACK
#define N_ACK (10 * N) /* SGI + IAR + EOI cycles per measurement */
#endif
#define REPEATS 3         /* the host keeps the minimum */
#define DELTA_US 20       /* timer deadline: this far after "now" */
#define WATCHDOG_MS 10000 /* per measurement: a lost interrupt ends it instead of hanging */

#define SGI_PING 1 /* CPU 0 -> CPU 1 */
#define SGI_PONG 2 /* CPU 1 -> CPU 0, sent from the PING handler */
#define SGI_WAKE 3 /* CPU 0 -> CPU 1: look at `mode` */
#define SGI_SELF 4 /* CPU 0 -> CPU 0 with IRQs masked: acknowledged and EOId by hand */

static uint64_t freq, delta;
static uint64_t mpidrs[RT_MAX_CPUS];

static uint64_t counter(void)
{
    uint64_t t;
    __asm__ volatile("isb\n mrs %0, cntvct_el0\n isb" : "=r"(t)::"memory");
    return t;
}

static void bench_line(const char *name, unsigned iters, uint64_t ticks)
{
    printf("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", name, iters, ticks, freq);
}

static uint64_t ticks_to_ns(uint64_t ticks)
{
    return ticks * 1000000000UL / freq;
}

/* ---- watchdog: the physical timer (PPI 30) ends a wait for an interrupt that never comes ---- */
static volatile uint32_t watchdog;

static void on_watchdog(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    write_sysreg(cntp_ctl_el0, 0);
    isb();
    watchdog = 1;
}

static void watchdog_arm(void)
{
    watchdog = 0;
    isb();
    write_sysreg(cntp_cval_el0, read_sysreg(cntpct_el0) + WATCHDOG_MS * (freq / 1000));
    write_sysreg(cntp_ctl_el0, CNT_CTL_ENABLE);
    isb();
}

/* 1 if it fired (and says so) */
static int watchdog_disarm(const char *name)
{
    write_sysreg(cntp_ctl_el0, 0);
    isb();
    if (watchdog)
        printf("BENCH skip name=%s reason=\"an interrupt did not come within %u ms\"\n", name, WATCHDOG_MS);
    return watchdog;
}

/* With IRQs masked: sleep until an interrupt is pending, then take it (and anything else pending). */
static inline void wfi_then_take(void)
{
    wfi();
    irq_enable();
    isb();
    irq_disable();
}

/* ---- virtual timer latency: from CNTV_CVAL to the CNTVCT read first thing in the handler ---- */
static volatile uint64_t irq_at;
static volatile uint32_t timer_irqs;

static void on_vtimer(unsigned intid, void *arg)
{
    uint64_t now = counter();

    (void)intid;
    (void)arg;
    irq_at = now;
    write_sysreg(cntv_ctl_el0, 0); /* the output drops: no second interrupt */
    isb();
    timer_irqs++;
}

enum timer_mode {
    T_WFI,      /* IRQs masked, WFI until the interrupt is pending, then unmask: the handler's read */
    T_WFI_WAKE, /* IRQs masked, WFI: the read right after the WFI returns (no exception taken) */
    T_SPIN,     /* IRQs unmasked, spinning on a flag: the handler's read */
};

static void timer_latency(const char *name, enum timer_mode mode)
{
    uint64_t sum = 0, lo = UINT64_MAX, hi = 0;
    unsigned early = 0, i;

    watchdog_arm();
    for (i = 0; i < N && !watchdog; i++) {
        uint32_t before = timer_irqs;
        uint64_t cval = counter() + delta, at = 0;

        write_sysreg(cntv_cval_el0, cval);
        write_sysreg(cntv_ctl_el0, CNT_CTL_ENABLE);
        isb();
        if (mode == T_WFI) {
            while (timer_irqs == before && !watchdog)
                wfi_then_take();
            at = irq_at;
        } else if (mode == T_WFI_WAKE) {
            for (;;) {
                wfi();
                at = counter();
                if ((read_sysreg(cntv_ctl_el0) & CNT_CTL_ISTATUS) || watchdog)
                    break;
                if (at - cval > WATCHDOG_MS * (freq / 1000) && at > cval) { /* the physical timer is masked */
                    watchdog = 1;
                    break;
                }
            }
            write_sysreg(cntv_ctl_el0, 0);
            isb();
        } else {
            irq_enable();
            while (timer_irqs == before && !watchdog)
                ;
            irq_disable();
            at = irq_at;
        }
        if (watchdog)
            break;
        if (at < cval) { /* taken before its deadline: a VMM bug, counted as 0 */
            early++;
            at = cval;
        }
        sum += at - cval;
        lo = at - cval < lo ? at - cval : lo;
        hi = at - cval > hi ? at - cval : hi;
    }
    write_sysreg(cntv_ctl_el0, 0);
    isb();
    if (watchdog_disarm(name))
        return;
    bench_line(name, N, sum);
    printf("irq: %s min %lu ns max %lu ns early %u\n", name, ticks_to_ns(lo), ticks_to_ns(hi), early);
}

/* ---- SGI round trips: CPU 0 sends PING to CPU 1, whose handler sends PONG back ---- */
enum { M_WFI, M_SPIN, M_POLL, M_STOP };
static volatile uint32_t mode = M_WFI, seen_mode = 0xffffffff, cpu1_ready, pongs;
static volatile uint32_t mem_ping, mem_pong; /* M_POLL: CPU 0 writes mem_ping, CPU 1 copies it to mem_pong */

static void on_ping(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    gic_send_sgi(SGI_PONG, mpidrs[0]);
}

static void on_pong(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    pongs++;
}

static void on_nothing(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
}

/* CPU 1: answers PINGs, idle in WFI (M_WFI) or spinning with IRQs unmasked (M_SPIN) in between */
static void secondary(void *arg)
{
    (void)arg;
    if (gic_cpu_init()) {
        cpu_printf("cpu %u: GIC CPU interface setup failed\n", smp_cpu_id());
        return;
    }
    gic_enable(SGI_PING);
    gic_enable(SGI_WAKE);
    cpu1_ready = 1;
    for (;;) {
        irq_disable();
        uint32_t m = mode;
        seen_mode = m;
        if (m == M_STOP)
            break;
        if (m == M_SPIN) {
            irq_enable();
            while (mode == M_SPIN)
                ;
            continue;
        }
        if (m == M_POLL) { /* IRQs masked: only memory tells it anything */
            while (mode == M_POLL) {
                uint32_t v = mem_ping;
                if (v != mem_pong)
                    mem_pong = v;
            }
            continue;
        }
        wfi_then_take();
    }
}

static void cpu1_mode(uint32_t m)
{
    mode = m;
    dsb(ish);
    gic_send_sgi(SGI_WAKE, mpidrs[1]);
    if (!POLL_UNTIL(seen_mode == m, 5000))
        printf("irq: cpu 1 did not switch to mode %u within 5 s\n", m);
}

/* Spinning, CPU 0 also counts its polls of `pongs` (one loop iteration each): on a VMM that runs the vCPUs in
   turn, many polls per round trip mean the sender kept running after its SGI instead of yielding to the target. */
static void ipi_roundtrip(const char *name, uint32_t m)
{
    uint64_t polls = 0;
    unsigned i;

    cpu1_mode(m);
    watchdog_arm();
    uint64_t t0 = counter();
    for (i = 0; i < N && !watchdog; i++) {
        uint32_t want = pongs + 1;
        gic_send_sgi(SGI_PING, mpidrs[1]);
        if (m == M_WFI) {
            while (pongs != want && !watchdog)
                wfi_then_take();
        } else {
            irq_enable();
            while (pongs != want && !watchdog)
                polls++;
            irq_disable();
        }
    }
    uint64_t t1 = counter();
    cpu1_mode(M_WFI); /* CPU 1 idle again for the other measurements */
    if (watchdog_disarm(name))
        return;
    bench_line(name, N, t1 - t0);
    if (m == M_SPIN)
        printf("irq: %s %lu polls per round trip on cpu 0\n", name, polls / N);
}

/* Round trips through memory alone: CPU 0 writes a sequence number, CPU 1 (polling, IRQs masked, no WFE)
   copies it back, CPU 0 polls for it. No interrupt and no hint tells a VMM that runs the vCPUs in turn to switch. */
static void poll_roundtrip(const char *name)
{
    unsigned i;

    mem_ping = mem_pong = 0;
    cpu1_mode(M_POLL);
    watchdog_arm();
    irq_enable(); /* only the watchdog */
    uint64_t t0 = counter();
    for (i = 1; i <= N && !watchdog; i++) {
        mem_ping = i;
        while (mem_pong != i && !watchdog)
            ;
    }
    uint64_t t1 = counter();
    irq_disable();
    cpu1_mode(M_WFI);
    if (watchdog_disarm(name))
        return;
    bench_line(name, N, t1 - t0);
}

/* ---- SGI to self, ICC_IAR1_EL1, ICC_EOIR1_EL1 with IRQs masked ---- */
static uint64_t sgi_self_value;

/* ICC_SGI1R_EL1 for one target: Aff3 [55:48], RS [47:44], Aff2 [39:32], INTID [27:24], Aff1 [23:16], TargetList */
static uint64_t sgi1r(unsigned intid, uint64_t mpidr)
{
    unsigned aff0 = mpidr & 0xff;

    return ((mpidr >> 32) & 0xff) << 48 | (uint64_t)(aff0 >> 4) << 44 | ((mpidr >> 16) & 0xff) << 32 |
           ((mpidr >> 8) & 0xff) << 16 | (uint64_t)(intid & 0xf) << 24 | (1u << (aff0 & 0xf));
}

static void loop_empty(uint64_t n)
{
    __asm__ volatile("1: subs %0, %0, #1\n b.ne 1b" : "+r"(n)::"cc");
}

/* the whole cycle, nothing else in the loop: SGI to self (ICC_SGI1R_EL1), acknowledge (ICC_IAR1_EL1), EOI
   (ICC_EOIR1_EL1); the registers by encoding, as in rt.h */
static void loop_sgi_ack_eoi(uint64_t n)
{
    uint64_t iar;
    __asm__ volatile("1: msr S3_0_C12_C11_5, %2\n"
                     "   mrs %1, S3_0_C12_C12_0\n"
                     "   msr S3_0_C12_C12_1, %1\n"
                     "   subs %0, %0, #1\n"
                     "   b.ne 1b"
                     : "+r"(n), "=&r"(iar)
                     : "r"(sgi_self_value)
                     : "cc", "memory");
}

static void sgi_ack_eoi(void)
{
    uint64_t t0 = counter();
    loop_empty(N_ACK);
    uint64_t t1 = counter();
    loop_sgi_ack_eoi(N_ACK);
    uint64_t t2 = counter();
    bench_line("ack_loop", N_ACK, t1 - t0);
    bench_line("sgi_ack_eoi", N_ACK, t2 - t1);

    /* each step on its own, between counter reads; the host subtracts one counter read (ts_counter) */
    uint64_t sum[4] = { 0, 0, 0, 0 };
    unsigned spurious = 0;
    for (unsigned i = 0; i < N_ACK; i++) {
        uint64_t a = counter();
        uint64_t b = counter();
        write_sysreg_s(ICC_SGI1R_EL1, sgi_self_value);
        uint64_t c = counter();
        uint64_t iar = read_sysreg_s(ICC_IAR1_EL1);
        uint64_t d = counter();
        write_sysreg_s(ICC_EOIR1_EL1, iar);
        uint64_t e = counter();
        sum[0] += b - a;
        sum[1] += c - b;
        sum[2] += d - c;
        sum[3] += e - d;
        spurious += (iar & 0xffffff) != SGI_SELF;
    }
    bench_line("ts_counter", N_ACK, sum[0]);
    bench_line("ts_sgi", N_ACK, sum[1]);
    bench_line("ts_iar", N_ACK, sum[2]);
    bench_line("ts_eoi", N_ACK, sum[3]);
    uint64_t left = read_sysreg_s(ICC_IAR1_EL1) & 0xffffff;
    if (spurious || left != GIC_SPURIOUS)
        printf("irq: ack: %u of %u acknowledges were not SGI %u; afterwards IAR1 reads %lu\n", spurious,
               (unsigned)N_ACK, SGI_SELF, left);
}

int main(uint64_t dtb)
{
    irq_disable();
    mmu_enable(NULL); /* the spinlock behind cpu_printf needs Normal memory */
    if (gic_init()) {
        printf("BENCH skip name=all reason=\"GIC initialisation failed\"\n");
        return 1;
    }
    freq = timer_freq();
    delta = DELTA_US * freq / 1000000;

    gic_set_handler(INTID_VTIMER, on_vtimer, 0);
    gic_set_handler(INTID_PTIMER, on_watchdog, 0);
    gic_set_handler(SGI_PING, on_ping, 0);
    gic_set_handler(SGI_PONG, on_pong, 0);
    gic_set_handler(SGI_WAKE, on_nothing, 0);
    gic_enable(INTID_VTIMER);
    gic_enable(INTID_PTIMER);
    gic_enable(SGI_PONG);
    gic_enable(SGI_SELF);

    int from_dtb, ncpus = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);
    sgi_self_value = sgi1r(SGI_SELF, mpidrs[0]);
    int ipi = ncpus >= 2;
    if (ipi) {
        int32_t r = smp_start_cpu(mpidrs[1], secondary, 0);
        if (r != 0 || !POLL_UNTIL(cpu1_ready, 5000)) {
            printf("irq: cpu 1 did not start (CPU_ON %d)\n", r);
            ipi = 0;
        }
    }
    printf("irq: %d cpus, timer deadline %u us ahead, %u timer interrupts / round trips, %u acknowledges\n", ncpus,
           DELTA_US, (unsigned)N, (unsigned)N_ACK);
    if (!ipi)
        printf("BENCH skip name=ipi reason=\"needs 2 CPUs\"\n");

    for (int rep = 0; rep < REPEATS; rep++) {
        timer_latency("timer_wfi", T_WFI);
        timer_latency("timer_wfi_wake", T_WFI_WAKE);
        timer_latency("timer_spin", T_SPIN);
        if (ipi) {
            ipi_roundtrip("ipi_wfi", M_WFI);
            ipi_roundtrip("ipi_spin", M_SPIN);
            poll_roundtrip("poll_spin");
        }
        sgi_ack_eoi();
    }
    if (ipi) {
        cpu1_mode(M_STOP);
        POLL_UNTIL(psci_affinity_info(mpidrs[1], 0) == PSCI_AFF_OFF, 2000);
    }
    printf("BENCH done\n");
    return 0;
}
