/* smp_ic.c - cross-CPU code patching: CPU 0 rewrites small functions that CPU 1 keeps calling and publishes each
   change the architectural way (DC CVAU, DSB ISH, IC IVAU or IC IALLUIS, DSB ISH, then a flag); CPU 1 (ISB after
   seeing the flag) must run the new code, never a stale translation of the old. Needs 2 CPUs. */
#include "rt.h"

#define SLOTS 8
#define SLOT_WORDS 256 /* 1 KiB apart: the slots share two pages, four to a page */
#define ROUNDS 400
#define IALLUIS_EVERY 7 /* every 7th round publishes with IC IALLUIS instead of IC IVAU */

typedef uint32_t (*slot_fn)(void);

static uint32_t code[SLOTS * SLOT_WORDS] __attribute__((aligned(4096)));
static volatile uint32_t expected[SLOTS];
static volatile uint32_t round_no, ack, stale, calls;
static volatile uint32_t first_slot, first_got, first_want, first_round;

static uint32_t call_slot(unsigned i)
{
    return ((slot_fn)(uintptr_t)&code[i * SLOT_WORDS])();
}

/* slot i returns v: MOVZ W0, #v; RET */
static void patch(unsigned i, uint32_t v, int all)
{
    uint32_t *p = &code[i * SLOT_WORDS];

    p[0] = 0x52800000u | ((v & 0xffffu) << 5);
    p[1] = 0xd65f03c0u;
    __asm__ volatile("dc cvau, %0\n\tdsb ish" ::"r"(p) : "memory");
    if (all)
        __asm__ volatile("ic ialluis" ::: "memory");
    else
        __asm__ volatile("ic ivau, %0" ::"r"(p) : "memory");
    __asm__ volatile("dsb ish\n\tisb" ::: "memory");
    expected[i] = v;
}

/* every slot, as this CPU sees it now; counts the calls that returned an old value */
static void check_all(uint32_t r)
{
    for (unsigned i = 0; i < SLOTS; i++) {
        uint32_t got = call_slot(i), want = expected[i];
        atomic_add32(&calls, 1);
        if (got != want && atomic_add32(&stale, 1) == 1) {
            first_slot = i;
            first_got = got;
            first_want = want;
            first_round = r;
        }
    }
}

static void secondary(void *arg)
{
    (void)arg;
    for (uint32_t r = 1; r <= ROUNDS; r++) {
        if (!POLL_UNTIL(round_no >= r, 5000)) {
            cpu_printf("cpu 1: round %u not published within 5 s\n", r);
            return;
        }
        __asm__ volatile("dmb ish\n\tisb" ::: "memory"); /* the new code: read after the flag, fetched afresh */
        check_all(r);
        __asm__ volatile("dmb ish" ::: "memory");
        ack = r;
    }
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb;

    test_begin("smp_ic");
    irq_disable();
    if (!test_check(mmu_enable(NULL) == 0, "mmu_enable failed"))
        return test_end();
    int n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);
    if (!test_check(n >= 2, "needs 2 CPUs, found %d", n))
        return test_end();
    for (unsigned i = 0; i < SLOTS; i++)
        patch(i, 1000 + i, 0);
    check_all(0); /* translate them here too */
    if (!test_check(smp_start_cpu(mpidrs[1], secondary, NULL) == 0, "CPU_ON of cpu 1 failed"))
        return test_end();
    for (uint32_t r = 1; r <= ROUNDS; r++) {
        if (r > 1 && !test_check(POLL_UNTIL(ack >= r - 1, 5000), "cpu 1 did not finish round %u", r - 1))
            break;
        patch(r % SLOTS, r * 16 + r % SLOTS, r % IALLUIS_EVERY == 0);
        check_all(r);
        __asm__ volatile("dmb ish" ::: "memory");
        round_no = r;
    }
    test_check(POLL_UNTIL(ack >= ROUNDS, 5000), "cpu 1 did not finish (ack %u)", ack);
    printf("smp_ic: %u rounds, %u calls, %u stale\n", ack, calls, stale);
    test_check(stale == 0, "%u calls ran stale code: first slot %u in round %u returned %u, want %u", stale, first_slot,
               first_round, first_got, first_want);
    return test_end();
}
